package chattemplate

import (
	"fmt"
	"strings"
	"unicode"
)

// segment is a piece of a template: text, an expression tag or a statement tag.
type segment struct {
	kind    segKind
	text    string // the text, or the tag's inside
	line    int
	trimL   bool // "-" at the tag's start: strip the whitespace before it
	trimR   bool // "-" at the tag's end: strip the whitespace after it
	noLStrp bool // "+" at the tag's start: no lstrip_blocks
}

type segKind int

const (
	segText segKind = iota
	segExpr
	segStmt
	segComment
)

// split cuts src into segments and applies the whitespace rules: "-" control, and, as
// transformers sets them, trim_blocks (the newline after a block or comment tag goes) and
// lstrip_blocks (spaces and tabs before a block or comment tag on its line go).
func split(src string) ([]segment, error) {
	var segs []segment
	line := 1
	for len(src) > 0 {
		i := nextTag(src)
		if i < 0 {
			segs = append(segs, segment{kind: segText, text: src, line: line})
			break
		}
		if i > 0 {
			segs = append(segs, segment{kind: segText, text: src[:i], line: line})
			line += strings.Count(src[:i], "\n")
			src = src[i:]
		}
		open := src[:2]
		closeTag := map[string]string{"{{": "}}", "{%": "%}", "{#": "#}"}[open]
		kind := map[string]segKind{"{{": segExpr, "{%": segStmt, "{#": segComment}[open]
		body := src[2:]
		s := segment{kind: kind, line: line}
		if strings.HasPrefix(body, "-") {
			s.trimL, body = true, body[1:]
		} else if strings.HasPrefix(body, "+") {
			s.noLStrp, body = true, body[1:]
		}
		end := findClose(body, closeTag, kind != segComment)
		if end < 0 {
			return nil, fmt.Errorf("line %d: %s without %s", line, open, closeTag)
		}
		inner := body[:end]
		if strings.HasSuffix(inner, "-") {
			s.trimR, inner = true, inner[:len(inner)-1]
		} else if strings.HasSuffix(inner, "+") {
			inner = inner[:len(inner)-1]
		}
		s.text = inner
		segs = append(segs, s)
		consumed := 2 + len(body[:end]) + len(closeTag)
		if s.trimL || s.noLStrp {
			consumed++
		}
		line += strings.Count(src[:consumed], "\n")
		src = src[consumed:]
	}
	// Whitespace control.
	for i := range segs {
		s := &segs[i]
		if s.kind == segText {
			continue
		}
		block := s.kind == segStmt || s.kind == segComment
		if i > 0 && segs[i-1].kind == segText {
			prev := &segs[i-1]
			switch {
			case s.trimL:
				prev.text = strings.TrimRightFunc(prev.text, unicode.IsSpace)
			case block && !s.noLStrp:
				// lstrip_blocks: spaces and tabs between the start of the line and the tag.
				t := strings.TrimRight(prev.text, " \t")
				if strings.HasSuffix(t, "\n") || (t == "" && i == 1) {
					prev.text = t
				}
			}
		}
		if i+1 < len(segs) && segs[i+1].kind == segText {
			next := &segs[i+1]
			switch {
			case s.trimR:
				next.text = strings.TrimLeftFunc(next.text, unicode.IsSpace)
			case block:
				// trim_blocks: the first newline after the tag.
				if strings.HasPrefix(next.text, "\r\n") {
					next.text = next.text[2:]
				} else if strings.HasPrefix(next.text, "\n") {
					next.text = next.text[1:]
				}
			}
		}
	}
	return segs, nil
}

func nextTag(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

// findClose finds the closing delimiter, skipping quoted strings inside expressions.
func findClose(s, closeTag string, quotes bool) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if quote != 0 {
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		if quotes && (c == '\'' || c == '"') {
			quote = c
			continue
		}
		if strings.HasPrefix(s[i:], closeTag) {
			return i
		}
	}
	return -1
}

// token is a lexeme of an expression.
type token struct {
	kind byte // 'n' name, 's' string, 'i' int, 'f' float, 'o' operator, 0 end
	text string
}

// lexExpr splits the inside of a tag into tokens.
func lexExpr(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(s) && (s[j] == '_' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			out = append(out, token{'n', s[i:j]})
			i = j
		case c >= '0' && c <= '9':
			j, kind := i, byte('i')
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '_') {
				j++
			}
			if j+1 < len(s) && s[j] == '.' && s[j+1] >= '0' && s[j+1] <= '9' {
				kind = 'f'
				j++
				for j < len(s) && s[j] >= '0' && s[j] <= '9' {
					j++
				}
			}
			out = append(out, token{kind, strings.ReplaceAll(s[i:j], "_", "")})
			i = j
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
					switch s[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					case 'r':
						b.WriteByte('\r')
					case '\\', '\'', '"':
						b.WriteByte(s[j])
					default:
						b.WriteByte('\\')
						b.WriteByte(s[j])
					}
					continue
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string")
			}
			out = append(out, token{'s', b.String()})
			i = j + 1
		default:
			op := ""
			for _, o := range []string{"==", "!=", "<=", ">=", "//", "**", "<", ">", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":", "(", ")", "[", "]", "{", "}", "="} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected character %q", c)
			}
			out = append(out, token{'o', op})
			i += len(op)
		}
	}
	return out, nil
}
