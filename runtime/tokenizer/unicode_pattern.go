package tokenizer

import "strings"

// withUnicodeAdditions rewrites the category classes of a split pattern so that they also
// hold the code points Unicode 16.0 assigned after Go's tables (unicodeAdditions), the
// tables of the Oniguruma that the `tokenizers` package matches with: outside a character
// class `\p{L}` becomes `[\p{L}…]` and `\P{L}` becomes `[^\p{L}…]`; inside one, `\p{L}`
// gains the code points as further members (in a negated class, as the published patterns'
// `[^\r\n\p{L}\p{N}]`, that excludes them, as it should). A `\P{…}` inside a class stays
// as Go's tables have it: no published pattern writes one.
func withUnicodeAdditions(expr string) string {
	var b strings.Builder
	classDepth := 0
	afterDash := false // the byte before is an unescaped '-'
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		dash := afterDash
		afterDash = false
		switch {
		case c == '\\' && i+1 < len(expr):
			next := expr[i+1]
			if next == 'p' || next == 'P' {
				if cat, end, ok := categoryName(expr, i+2); ok {
					extra := unicodeAdditions(cat)
					switch {
					case extra == "" || (next == 'P' && classDepth > 0):
						b.WriteString(expr[i:end])
					case classDepth > 0:
						b.WriteString(`\p{` + cat + `}` + extra)
					case next == 'p':
						b.WriteString(`[\p{` + cat + `}` + extra + `]`)
					default:
						b.WriteString(`[^\p{` + cat + `}` + extra + `]`)
					}
					i = end - 1
					continue
				}
			}
			b.WriteString(expr[i : i+2])
			i++
		case c == '[' && (classDepth == 0 || dash):
			// A class opens (or, after '-', a .NET subtraction inside one). A ']' right after
			// the '[' or '[^' is a member, not the end.
			classDepth++
			b.WriteByte(c)
			if i+1 < len(expr) && expr[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(expr) && expr[i+1] == ']' {
				b.WriteByte(']')
				i++
			}
		case c == ']' && classDepth > 0:
			classDepth--
			b.WriteByte(c)
		default:
			afterDash = c == '-'
			b.WriteByte(c)
		}
	}
	return b.String()
}

// categoryName reads the "{Name}" of a \p{Name} starting at expr[at]: the name and the
// index just past the '}'.
func categoryName(expr string, at int) (name string, end int, ok bool) {
	if at >= len(expr) || expr[at] != '{' {
		return "", 0, false
	}
	close := strings.IndexByte(expr[at:], '}')
	if close < 0 {
		return "", 0, false
	}
	return expr[at+1 : at+close], at + close + 1, true
}
