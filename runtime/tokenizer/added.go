package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of added_tokens: text split out before the model sees it.
type addedToken struct {
	id                         int
	content                    string
	singleWord, lstrip, rstrip bool
	normalized, special        bool
}

// addedVocab finds added tokens in text, leftmost-longest, as `tokenizers` does: the
// tokens with normalized=false in the raw text, the others in the normalized pieces.
type addedVocab struct {
	tokens     []addedToken
	byID       map[int]*addedToken
	byContent  map[string]int
	raw, normd matcher
}

// matcher holds the tokens of one pass, indexed by their first byte.
type matcher struct {
	byFirst map[byte][]int // indices into addedVocab.tokens, longest first
}

func newAddedVocab(list []addedJSON) addedVocab {
	v := addedVocab{byID: map[int]*addedToken{}, byContent: map[string]int{},
		raw: matcher{map[byte][]int{}}, normd: matcher{map[byte][]int{}}}
	for _, a := range list {
		v.tokens = append(v.tokens, addedToken{a.ID, a.Content, a.SingleWord, a.LStrip, a.RStrip, a.Normalized, a.Special})
	}
	for i := range v.tokens {
		t := &v.tokens[i]
		v.byID[t.id] = t
		v.byContent[t.content] = t.id
		if t.content == "" {
			continue
		}
		m := v.raw
		if t.normalized {
			m = v.normd
		}
		m.byFirst[t.content[0]] = append(m.byFirst[t.content[0]], i)
	}
	for _, m := range []matcher{v.raw, v.normd} {
		for k, idx := range m.byFirst {
			// Longest first, so that the first that matches at a position is the longest.
			for i := 1; i < len(idx); i++ {
				for j := i; j > 0 && len(v.tokens[idx[j]].content) > len(v.tokens[idx[j-1]].content); j-- {
					idx[j], idx[j-1] = idx[j-1], idx[j]
				}
			}
			m.byFirst[k] = idx
		}
	}
	return v
}

// piece is a span of text that is either an added token (id >= 0) or text for the model.
type piece struct {
	span
	id int
}

// split cuts s at the added tokens of m, as AddedVocabulary::find_matches does.
func (v *addedVocab) split(s string, m matcher) []piece {
	if len(m.byFirst) == 0 {
		return []piece{{span{0, len(s)}, -1}}
	}
	var out []piece
	last := 0
	for i := 0; i < len(s); {
		tok := v.matchAt(s, i, m)
		if tok == nil {
			i++
			continue
		}
		start, stop := i, i+len(tok.content)
		if tok.singleWord {
			before := start == 0 || !endsWithWordChar(s[:start])
			after := stop == len(s) || !startsWithWordChar(s[stop:])
			if !before || !after {
				i = stop // the search goes on after the match it passed over
				continue
			}
		}
		if tok.lstrip {
			start = max(len(strings.TrimRightFunc(s[:start], isWhitespace)), last)
		}
		if tok.rstrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], isWhitespace))
		}
		if last < start {
			out = append(out, piece{span{last, start}, -1})
		}
		out = append(out, piece{span{start, stop}, tok.id})
		last = stop
		i = stop
	}
	if last < len(s) {
		out = append(out, piece{span{last, len(s)}, -1})
	}
	return out
}

func (v *addedVocab) matchAt(s string, i int, m matcher) *addedToken {
	for _, k := range m.byFirst[s[i]] {
		if strings.HasPrefix(s[i:], v.tokens[k].content) {
			return &v.tokens[k]
		}
	}
	return nil
}

func isWordChar(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func endsWithWordChar(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordChar(r)
}
