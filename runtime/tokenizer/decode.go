package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns tokens back into text, a chain of steps over the list of token strings.
type decoder interface {
	decode(tokens []string) []string
}

type (
	byteLevelDec struct{ table *byteTable }
	replaceDec   struct {
		pat     *pattern
		content string
	}
	byteFallbackDec struct{}
	fuseDec         struct{}
	stripDec        struct {
		content     rune
		start, stop int
	}
	metaspaceDec struct {
		replacement string
		prepend     bool
	}
	decSequence []decoder
)

// decode maps each token's characters back to bytes; a token with a character outside
// the map (an added token with a space, say) stands for its own UTF-8.
func (d byteLevelDec) decode(tokens []string) []string {
	var b []byte
	for _, t := range tokens {
		start := len(b)
		for _, r := range t {
			c, ok := d.table.toByte[r]
			if !ok {
				b = append(b[:start], t...)
				break
			}
			b = append(b, c)
		}
	}
	return []string{string(b)}
}

func (d replaceDec) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i], _ = d.pat.replaceAll(t, d.content)
	}
	return out
}

// decode joins runs of <0xXX> tokens into their UTF-8 text, or one U+FFFD per byte when
// the run is not valid UTF-8.
func (byteFallbackDec) decode(tokens []string) []string {
	var out []string
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, t := range tokens {
		if len(t) == 6 && strings.HasPrefix(t, "<0x") && t[5] == '>' {
			if v, err := strconv.ParseUint(t[3:5], 16, 8); err == nil {
				run = append(run, byte(v))
				continue
			}
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

func (fuseDec) decode(tokens []string) []string { return []string{strings.Join(tokens, "")} }

func (d stripDec) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rs := []rune(t)
		lo, hi := 0, len(rs)
		for n := 0; n < d.start && lo < hi && rs[lo] == d.content; n++ {
			lo++
		}
		for n := 0; n < d.stop && hi > lo && rs[hi-1] == d.content; n++ {
			hi--
		}
		out[i] = string(rs[lo:hi])
	}
	return out
}

func (d metaspaceDec) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		s := strings.ReplaceAll(t, d.replacement, " ")
		if i == 0 && d.prepend {
			s = strings.TrimPrefix(s, " ")
		}
		out[i] = s
	}
	return out
}

func (seq decSequence) decode(tokens []string) []string {
	for _, d := range seq {
		tokens = d.decode(tokens)
	}
	return tokens
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	kind, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "ByteLevel":
		return byteLevelDec{newByteTable()}, nil
	case "Replace":
		pat, content, err := parseReplace(raw)
		if err != nil {
			return nil, err
		}
		return replaceDec{pat, content}, nil
	case "ByteFallback":
		return byteFallbackDec{}, nil
	case "Fuse":
		return fuseDec{}, nil
	case "Strip":
		var p struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(p.Content) != 1 {
			return nil, fmt.Errorf("the Strip decoder's content %q: want one character", p.Content)
		}
		r, _ := utf8.DecodeRuneInString(p.Content)
		return stripDec{r, p.Start, p.Stop}, nil
	case "Metaspace":
		var p struct {
			Replacement    string `json:"replacement"`
			PrependScheme  string `json:"prepend_scheme"`
			AddPrefixSpace *bool  `json:"add_prefix_space"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		d := metaspaceDec{replacement: p.Replacement, prepend: p.PrependScheme != "never"}
		if p.PrependScheme == "" && p.AddPrefixSpace != nil {
			d.prepend = *p.AddPrefixSpace
		}
		if d.replacement == "" {
			d.replacement = "▁"
		}
		return d, nil
	case "Sequence":
		seq, err := parseSequence(raw, "decoders", parseDecoder)
		return decSequence(seq), err
	}
	return nil, unsupported("decoder", kind, "ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace", "Sequence")
}
