package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// pattern is a Split or Replace pattern: a literal string, or a regex (regexp2, for the
// lookahead the published patterns use).
type pattern struct {
	literal string
	re      *regexp2.Regexp
}

func compileRegex(expr string) (*pattern, error) {
	re, err := regexp2.Compile(withUnicodeAdditions(expr), regexp2.Unicode)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return &pattern{re: re}, nil
}

// span is a byte range [start, end) of a string.
type span struct{ start, end int }

// matches returns the byte ranges of the non-overlapping matches of p in s, leftmost first.
func (p *pattern) matches(s string) ([]span, error) {
	if p.re == nil {
		if p.literal == "" {
			return nil, nil
		}
		var out []span
		for at := 0; ; {
			i := strings.Index(s[at:], p.literal)
			if i < 0 {
				return out, nil
			}
			out = append(out, span{at + i, at + i + len(p.literal)})
			at += i + len(p.literal)
		}
	}
	// regexp2 reports rune offsets: convert them to byte offsets through a table.
	runes := []rune(s)
	byteAt := make([]int, len(runes)+1)
	off := 0
	for i, r := range runes {
		byteAt[i] = off
		off += utf8.RuneLen(r)
		if r == utf8.RuneError {
			// An invalid byte became U+FFFD (3 bytes); count the byte it was instead.
			_, size := utf8.DecodeRuneInString(s[byteAt[i]:])
			off = byteAt[i] + size
		}
	}
	byteAt[len(runes)] = off
	var out []span
	m, err := p.re.FindRunesMatch(runes)
	for ; m != nil && err == nil; m, err = p.re.FindNextMatch(m) {
		if m.Length == 0 {
			continue
		}
		out = append(out, span{byteAt[m.Index], byteAt[m.Index+m.Length]})
	}
	if err != nil {
		return nil, fmt.Errorf("regex: %w", err)
	}
	return out, nil
}

// replaceAll replaces every match of p in s with content.
func (p *pattern) replaceAll(s, content string) (string, error) {
	if p.re == nil {
		if p.literal == "" {
			return s, nil
		}
		return strings.ReplaceAll(s, p.literal, content), nil
	}
	ms, err := p.matches(s)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m.start])
		b.WriteString(content)
		last = m.end
	}
	b.WriteString(s[last:])
	return b.String(), nil
}
