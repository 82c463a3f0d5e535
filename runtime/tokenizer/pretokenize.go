package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
)

// word is a piece of text on its way to the model. atStart says that it begins the text
// (its original offset is 0), which Metaspace's prepend_scheme "first" asks.
type word struct {
	text    string
	atStart bool
}

// preTokenizer splits pieces of text into words (and may rewrite them: ByteLevel maps
// bytes to characters, Metaspace spaces to ▁).
type preTokenizer interface {
	split(words []word) ([]word, error)
}

// gpt2Pattern is ByteLevel's own split when use_regex is true.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// delimiter is a Split behaviour: what becomes of a match.
type delimiter int

const (
	removed delimiter = iota
	isolated
	mergedWithPrevious
	mergedWithNext
	contiguous
)

// delimiterNamed reads a Split behavior as tokenizer.json names it.
func delimiterNamed(name string) (delimiter, bool) {
	switch name {
	case "Removed":
		return removed, true
	case "Isolated":
		return isolated, true
	case "MergedWithPrevious":
		return mergedWithPrevious, true
	case "MergedWithNext":
		return mergedWithNext, true
	case "Contiguous":
		return contiguous, true
	}
	return 0, false
}

type splitPre struct {
	pat      *pattern
	behavior delimiter
	invert   bool
}

type byteLevelPre struct {
	addPrefixSpace bool
	re             *pattern // nil when use_regex is false
}

type metaspacePre struct {
	replacement string
	prepend     string // "always", "first" or "never"
	splitWords  bool
}

type preSequence []preTokenizer

func (p splitPre) split(words []word) ([]word, error) {
	var out []word
	for _, w := range words {
		ms, err := p.pat.matches(w.text)
		if err != nil {
			return nil, err
		}
		for i, s := range splitBy(w.text, ms, p.behavior, p.invert) {
			out = append(out, word{w.text[s.start:s.end], w.atStart && i == 0 && s.start == 0})
		}
	}
	return out, nil
}

// splitBy cuts s at the matches ms as a Split pre-tokenizer with behavior does; the
// pieces it returns are never empty.
func splitBy(s string, ms []span, behavior delimiter, invert bool) []span {
	type part struct {
		span
		match bool
	}
	var parts []part
	last := 0
	for _, m := range ms {
		if m.start > last {
			parts = append(parts, part{span{last, m.start}, invert})
		}
		parts = append(parts, part{m, !invert})
		last = m.end
	}
	if last < len(s) {
		parts = append(parts, part{span{last, len(s)}, invert})
	}
	var out []span
	switch behavior {
	case removed:
		for _, p := range parts {
			if !p.match {
				out = append(out, p.span)
			}
		}
	case isolated:
		for _, p := range parts {
			out = append(out, p.span)
		}
	case mergedWithPrevious:
		prev := false
		for _, p := range parts {
			if p.match && !prev && len(out) > 0 {
				out[len(out)-1].end = p.end
			} else {
				out = append(out, p.span)
			}
			prev = p.match
		}
	case mergedWithNext:
		prev := false
		for i := len(parts) - 1; i >= 0; i-- {
			p := parts[i]
			if p.match && !prev && len(out) > 0 {
				out[len(out)-1].start = p.start
			} else {
				out = append(out, p.span)
			}
			prev = p.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case contiguous:
		for i, p := range parts {
			if i > 0 && p.match == parts[i-1].match {
				out[len(out)-1].end = p.end
			} else {
				out = append(out, p.span)
			}
		}
	}
	return out
}

func (p byteLevelPre) split(words []word) ([]word, error) {
	var out []word
	for _, w := range words {
		text := w.text
		if p.addPrefixSpace && !strings.HasPrefix(text, " ") {
			text = " " + text
		}
		pieces := []word{{text, w.atStart}}
		if p.re != nil {
			var err error
			if pieces, err = (splitPre{p.re, isolated, false}).split(pieces); err != nil {
				return nil, err
			}
		}
		for _, piece := range pieces {
			out = append(out, word{bytesToChars(piece.text), piece.atStart})
		}
	}
	return out, nil
}

func (p metaspacePre) split(words []word) ([]word, error) {
	var out []word
	for _, w := range words {
		text := strings.ReplaceAll(w.text, " ", p.replacement)
		if !strings.HasPrefix(text, p.replacement) && (p.prepend == "always" || p.prepend == "first" && w.atStart) {
			text = p.replacement + text
		}
		if !p.splitWords {
			if text != "" {
				out = append(out, word{text, w.atStart})
			}
			continue
		}
		ms, _ := (&pattern{literal: p.replacement}).matches(text)
		for i, s := range splitBy(text, ms, mergedWithNext, false) {
			out = append(out, word{text[s.start:s.end], w.atStart && i == 0})
		}
	}
	return out, nil
}

func (seq preSequence) split(words []word) ([]word, error) {
	var err error
	for _, p := range seq {
		if words, err = p.split(words); err != nil {
			return nil, err
		}
	}
	return words, nil
}

func parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	kind, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "Split":
		var p struct {
			Pattern  patternJSON `json:"pattern"`
			Behavior string      `json:"behavior"`
			Invert   bool        `json:"invert"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		pat, err := p.Pattern.compile()
		if err != nil {
			return nil, err
		}
		b, ok := delimiterNamed(p.Behavior)
		if !ok {
			return nil, fmt.Errorf("the Split behavior %q is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous", p.Behavior)
		}
		return splitPre{pat, b, p.Invert}, nil
	case "ByteLevel":
		var p struct {
			AddPrefixSpace bool  `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		out := byteLevelPre{addPrefixSpace: p.AddPrefixSpace}
		if p.UseRegex == nil || *p.UseRegex {
			if out.re, err = compileRegex(gpt2Pattern); err != nil {
				return nil, err
			}
		}
		return out, nil
	case "Metaspace":
		var p struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
			Split          *bool  `json:"split"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		out := metaspacePre{replacement: p.Replacement, prepend: p.PrependScheme, splitWords: p.Split == nil || *p.Split}
		if out.prepend == "" {
			// Files older than prepend_scheme say add_prefix_space (default true).
			out.prepend = "always"
			if p.AddPrefixSpace != nil && !*p.AddPrefixSpace {
				out.prepend = "never"
			}
		}
		switch out.prepend {
		case "always", "first", "never":
		default:
			return nil, fmt.Errorf("the Metaspace prepend_scheme %q is not one of always, first, never", out.prepend)
		}
		if out.replacement == "" {
			out.replacement = "▁"
		}
		return out, nil
	case "WhitespaceSplit":
		pat, err := compileRegex(`\s+`)
		return splitPre{pat, removed, false}, err
	case "Whitespace":
		pat, err := compileRegex(`\w+|[^\w\s]+`)
		return splitPre{pat, removed, true}, err
	case "Digits":
		var p struct {
			Individual bool `json:"individual_digits"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		expr, behavior := `\p{N}+`, contiguous
		if p.Individual {
			expr, behavior = `\p{N}`, isolated
		}
		pat, err := compileRegex(expr)
		return splitPre{pat, behavior, false}, err
	case "Sequence":
		seq, err := parseSequence(raw, "pretokenizers", parsePreTokenizer)
		return preSequence(seq), err
	}
	return nil, unsupported("pre-tokenizer", kind, "Split", "ByteLevel", "Metaspace", "Whitespace", "WhitespaceSplit", "Digits", "Sequence")
}

// isWhitespace is Rust's char::is_whitespace (Unicode White_Space), which `tokenizers`
// uses for lstrip, rstrip and Strip.
func isWhitespace(r rune) bool { return unicode.Is(unicode.White_Space, r) }
