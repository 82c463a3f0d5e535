package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// bpe is a byte-pair-encoding model: a vocabulary and ranked merges.
type bpe struct {
	vocab        map[string]int
	tokens       []string // by id; "" where the vocabulary has a gap
	merges       map[[2]int]merge
	unk          int // -1 when there is no unknown token
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteIDs      [256]int
}

type merge struct{ rank, id int }

func parseModel(raw json.RawMessage) (*bpe, error) {
	var m struct {
		Type                    string          `json:"type"`
		Vocab                   map[string]int  `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		FuseUnk                 bool            `json:"fuse_unk"`
		ByteFallback            bool            `json:"byte_fallback"`
		IgnoreMerges            bool            `json:"ignore_merges"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
		Dropout                 *float64        `json:"dropout"`
	}
	kind, err := typeOf(raw)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if kind != "BPE" && kind != "" {
		return nil, fmt.Errorf("model %q is not supported: moec reads BPE tokenizers (byte-level, and SentencePiece BPE converted by transformers)", kind)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if kind == "" && (m.Vocab == nil || m.Merges == nil) {
		return nil, fmt.Errorf("model has no type and is not a BPE (vocab and merges)")
	}
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, fmt.Errorf("BPE dropout %g: moec encodes deterministically, without dropout", *m.Dropout)
	}
	b := &bpe{vocab: m.Vocab, merges: map[[2]int]merge{}, unk: -1, fuseUnk: m.FuseUnk,
		byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges}
	if m.ContinuingSubwordPrefix != nil {
		b.prefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		b.suffix = *m.EndOfWordSuffix
	}
	for tok, id := range m.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("vocab: token %q has the negative id %d", tok, id)
		}
		for id >= len(b.tokens) {
			b.tokens = append(b.tokens, "")
		}
		b.tokens[id] = tok
	}
	if m.UnkToken != nil {
		id, ok := m.Vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		b.unk = id
	}
	for i := range b.byteIDs {
		b.byteIDs[i] = -1
		if id, ok := m.Vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.byteIDs[i] = id
		}
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	for rank, p := range pairs {
		a, okA := m.Vocab[p[0]]
		c, okC := m.Vocab[p[1]]
		id, okID := m.Vocab[p[0]+strings.TrimPrefix(p[1], b.prefix)]
		if !okA || !okC || !okID {
			return nil, fmt.Errorf("merge %d (%q %q): a token it names is not in the vocabulary", rank, p[0], p[1])
		}
		if _, dup := b.merges[[2]int{a, c}]; !dup {
			b.merges[[2]int{a, c}] = merge{rank, id}
		}
	}
	return b, nil
}

// parseMerges reads merges in either form tokenizer.json has used: "a b" strings, or
// ["a", "b"] pairs (tokenizers 0.20 on).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("merges: %w", err)
	}
	out := make([][2]string, len(items))
	for i, item := range items {
		var s string
		if err := json.Unmarshal(item, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d %q: want two tokens separated by one space", i, s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(item, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("merge %d: want \"a b\" or [\"a\", \"b\"], got %s", i, item)
		}
		out[i] = [2]string{pair[0], pair[1]}
	}
	return out, nil
}

// encode appends the ids of one word to ids.
func (b *bpe) encode(ids []int, w string) []int {
	if w == "" {
		return ids
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[w]; ok {
			return append(ids, id)
		}
	}
	// The word's symbols before merging: one per character, or its bytes (byte fallback),
	// or the unknown token (consecutive ones fused when fuse_unk).
	syms := make([]int, 0, len(w))
	pendingUnk := false
	for i, r := range w {
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, size = utf8.DecodeRuneInString(w[i:])
		}
		s := w[i : i+size]
		if i > 0 {
			s = b.prefix + s
		}
		if i+size == len(w) {
			s += b.suffix
		}
		if id, ok := b.vocab[s]; ok {
			if pendingUnk {
				syms = append(syms, b.unk)
				pendingUnk = false
			}
			syms = append(syms, id)
			continue
		}
		if b.byteFallback && b.hasBytes(s) {
			// As `tokenizers` does, the bytes go in before an unknown token still pending.
			for j := 0; j < len(s); j++ {
				syms = append(syms, b.byteIDs[s[j]])
			}
			continue
		}
		if b.unk >= 0 {
			if pendingUnk && !b.fuseUnk {
				syms = append(syms, b.unk)
			}
			pendingUnk = true
		}
	}
	if pendingUnk {
		syms = append(syms, b.unk)
	}
	return append(ids, b.mergeAll(syms)...)
}

func (b *bpe) hasBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if b.byteIDs[s[i]] < 0 {
			return false
		}
	}
	return true
}
