package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Tokenizer encodes text to ids and decodes ids to text as the tokenizer.json it was read
// from specifies. It is safe for concurrent use: nothing in it changes after Parse.
type Tokenizer struct {
	normalizer   normalizer
	preTokenizer preTokenizer
	model        *bpe
	decoder      decoder
	added        addedVocab
	post         *template
}

// template is a TemplateProcessing post-processor's single-sequence form: the ids it puts
// before and after the sequence.
type template struct{ before, after []int }

// Encode returns the ids of text. With addSpecial, the post-processor's special tokens
// (a BOS, say) are added as `tokenizers`' encode(text, add_special_tokens=True) does.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int, error) {
	var ids []int
	if addSpecial && t.post != nil {
		ids = append(ids, t.post.before...)
	}
	for _, p := range t.added.split(text, t.added.raw) {
		if p.id >= 0 {
			ids = append(ids, p.id)
			continue
		}
		piece := text[p.start:p.end]
		if t.normalizer != nil {
			var err error
			if piece, err = t.normalizer.normalize(piece); err != nil {
				return nil, fmt.Errorf("normalizing: %w", err)
			}
		}
		for i, q := range t.added.split(piece, t.added.normd) {
			if q.id >= 0 {
				ids = append(ids, q.id)
				continue
			}
			var err error
			if ids, err = t.encodePiece(ids, word{piece[q.start:q.end], p.start == 0 && i == 0 && q.start == 0}); err != nil {
				return nil, err
			}
		}
	}
	if addSpecial && t.post != nil {
		ids = append(ids, t.post.after...)
	}
	return ids, nil
}

func (t *Tokenizer) encodePiece(ids []int, w word) ([]int, error) {
	words := []word{w}
	if t.preTokenizer != nil {
		var err error
		if words, err = t.preTokenizer.split(words); err != nil {
			return nil, fmt.Errorf("pre-tokenizing: %w", err)
		}
	}
	for _, w := range words {
		ids = t.model.encode(ids, w.text)
	}
	return ids, nil
}

// Decode returns the text of ids, as `tokenizers`' decode does: bytes that are not valid
// UTF-8 become U+FFFD. With skipSpecial, the special added tokens are left out. An id
// outside the vocabulary is refused.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) (string, error) {
	b, err := t.DecodeBytes(ids, skipSpecial)
	if err != nil {
		return "", err
	}
	return lossyUTF8(b), nil
}

// DecodeBytes is Decode without the repair of invalid UTF-8: the bytes the tokens stand for,
// which a stream of text may need to join with the bytes of the next tokens.
func (t *Tokenizer) DecodeBytes(ids []int, skipSpecial bool) ([]byte, error) {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if a, ok := t.added.byID[id]; ok {
			if skipSpecial && a.special {
				continue
			}
			tokens = append(tokens, a.content)
			continue
		}
		if id < 0 || id >= len(t.model.tokens) || t.model.tokens[id] == "" {
			return nil, fmt.Errorf("token id %d is not in the vocabulary (size %d)", id, t.VocabSize())
		}
		tokens = append(tokens, t.model.tokens[id])
	}
	if t.decoder == nil {
		return []byte(strings.Join(tokens, " ")), nil
	}
	return []byte(strings.Join(t.decoder.decode(tokens), "")), nil
}

// VocabSize is one more than the largest id, added tokens included.
func (t *Tokenizer) VocabSize() int {
	n := len(t.model.tokens)
	for id := range t.added.byID {
		n = max(n, id+1)
	}
	return n
}

// TokenID returns the id of a token (an added token's content, or a vocabulary entry).
func (t *Tokenizer) TokenID(token string) (int, bool) {
	if id, ok := t.added.byContent[token]; ok {
		return id, true
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// Token returns the text of a token: an added token's content or a vocabulary entry (as
// the vocabulary writes it: byte-level characters, ▁ for a space).
func (t *Tokenizer) Token(id int) (string, bool) {
	if a, ok := t.added.byID[id]; ok {
		return a.content, true
	}
	if id >= 0 && id < len(t.model.tokens) && t.model.tokens[id] != "" {
		return t.model.tokens[id], true
	}
	return "", false
}

// IsSpecial says whether id is a special added token (one decoding may skip).
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.added.byID[id]
	return ok && a.special
}

// BOS is the id the post-processor puts before a sequence, if it puts exactly one.
func (t *Tokenizer) BOS() (int, bool) {
	if t.post == nil || len(t.post.before) != 1 {
		return 0, false
	}
	return t.post.before[0], true
}

func parsePostProcessor(raw json.RawMessage, t *Tokenizer) (*template, error) {
	if isNull(raw) {
		return nil, nil
	}
	kind, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "ByteLevel":
		return nil, nil // it only trims offsets, which moec does not report
	case "TemplateProcessing":
		var p struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		out := &template{}
		seen := false
		for _, item := range p.Single {
			switch {
			case item.Sequence != nil:
				seen = true
			case item.SpecialToken != nil:
				st, ok := p.SpecialTokens[item.SpecialToken.ID]
				if !ok {
					return nil, fmt.Errorf("TemplateProcessing names the special token %q but does not define it", item.SpecialToken.ID)
				}
				if seen {
					out.after = append(out.after, st.IDs...)
				} else {
					out.before = append(out.before, st.IDs...)
				}
			}
		}
		return out, nil
	case "Sequence":
		var p struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		var out *template
		for i, r := range p.Processors {
			tp, err := parsePostProcessor(r, t)
			if err != nil {
				return nil, fmt.Errorf("sequence item %d: %w", i, err)
			}
			if tp != nil {
				if out != nil {
					return nil, fmt.Errorf("two TemplateProcessing steps in one sequence")
				}
				out = tp
			}
		}
		return out, nil
	}
	return nil, unsupported("post-processor", kind, "TemplateProcessing", "ByteLevel", "Sequence")
}

// lossyUTF8 is Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one
// U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[i : i+size])
			i += size
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += invalidPrefix(b[i:])
	}
	return sb.String()
}

// invalidPrefix is the length of the maximal subpart of an ill-formed sequence at the start
// of b: a lead byte and the continuation bytes that could still have completed it.
func invalidPrefix(b []byte) int {
	lo, hi, need := byte(0x80), byte(0xBF), 0
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		lo, need = 0xA0, 2
	case c == 0xED:
		hi, need = 0x9F, 2
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		lo, need = 0x90, 3
	case c == 0xF4:
		hi, need = 0x8F, 3
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}
