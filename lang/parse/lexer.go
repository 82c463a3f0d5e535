package parse

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/alecthomas/participle/v2/lexer"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// Token types of the moec lexer. participle only sees these through the symbol table of
// tokenDefinition; literal strings in the grammar ("=", "extends") match on token text.
const (
	tokEOF    = lexer.EOF
	tokIdent  = lexer.TokenType(iota + 1) // also keywords: the grammar matches them by text
	tokNumber                             // value and suffix exactly as written: 1.6Tbps
	tokString                             // raw text including quotes; decoded value in strings
	tokNL                                 // a newline where newlines separate entries
	tokPunct                              // = { } ( ) [ ] , ; + - * /
)

// declKinds are the top-level declaration keywords. Seeing one at column 1 while brackets
// are still open means the previous declaration was left unclosed: both the lexer and the
// recovering parser resynchronise there so one missing `}` does not swallow the file.
// Read-only, like suffixes below.
var declKinds = map[string]bool{
	"import": true, "model": true, "cluster": true, "train": true,
	"serve": true, "compress": true, "experiment": true,
}

// suffixes lists every number suffix the language accepts (docs/language.md).
var suffixes = []string{
	"k", "M", "B", "T",
	"KB", "MB", "GB", "TB", "PB",
	"KiB", "MiB", "GiB", "TiB", "PiB",
	"Kbps", "Mbps", "Gbps", "Tbps",
	"KB/s", "MB/s", "GB/s", "TB/s", "PB/s",
	"KiB/s", "MiB/s", "GiB/s", "TiB/s", "PiB/s",
	"GFLOPS", "TFLOPS", "PFLOPS",
}

// Suffixes returns every number suffix the language accepts, in documentation order.
func Suffixes() []string { return append([]string(nil), suffixes...) }

func knownSuffix(s string) bool {
	for _, k := range suffixes {
		if k == s {
			return true
		}
	}
	return false
}

// lexed is the result of scanning one source file.
type lexed struct {
	src      []byte
	toks     []lexer.Token // no EOF token: callers add one where a parse should stop
	eof      lexer.Position
	comments []*ast.Comment
	strings  map[int]string // decoded string values by token offset
	diags    diag.List
}

// indent is the width of the leading blanks of the line holding pos.
func (lx *lexed) indent(pos lexer.Position) int {
	start := pos.Offset - (pos.Column - 1)
	n := 0
	for i := start; i < len(lx.src) && (lx.src[i] == ' ' || lx.src[i] == '\t'); i++ {
		n++
	}
	return n
}

type scanner struct {
	name  string
	src   []byte
	off   int
	line  int
	col   int
	stack []byte // open brackets: newlines separate entries only when the top is '{' or empty
	out   *lexed
}

// scan tokenises src. It never fails: problems become diagnostics and scanning goes on.
func scan(name string, src []byte) *lexed {
	// Every token takes at least one byte of src, and only a newline the scanner adds
	// before a key has none, so len(src) tokens rarely overflow. Sizing the slice once
	// matters for big files: grown by appends, a slice of n tokens allocates five times
	// their size on the way (large slices grow by a quarter).
	toks := make([]lexer.Token, 0, len(src)+16)
	s := &scanner{name: name, src: src, line: 1, col: 1, out: &lexed{src: src, toks: toks, strings: map[int]string{}}}
	s.run()
	s.out.eof = s.pos()
	return s.out
}

func (s *scanner) pos() lexer.Position {
	return lexer.Position{Filename: s.name, Offset: s.off, Line: s.line, Column: s.col}
}

// advance moves over n bytes that contain no newline.
func (s *scanner) advance(n int) {
	s.off += n
	s.col += n
}

func (s *scanner) errorf(code diag.Code, start lexer.Position, end lexer.Position, format string, args ...any) *diag.Diagnostic {
	return s.out.diags.Errorf(code, diag.Range{File: s.name, Start: astPos(start), End: astPos(end)}, format, args...)
}

func (s *scanner) emit(typ lexer.TokenType, start lexer.Position, text string) {
	s.out.toks = append(s.out.toks, lexer.Token{Type: typ, Value: text, Pos: start})
}

func (s *scanner) newlineSignificant() bool {
	return len(s.stack) == 0 || s.stack[len(s.stack)-1] == '{'
}

func (s *scanner) run() {
	for s.off < len(s.src) {
		c := s.src[s.off]
		switch {
		case c == '\n':
			if !s.newlineSignificant() && s.entryFollows() {
				// A `(` or `[` was left open and the next line starts a new entry:
				// end the entry here so that one missing bracket costs one error.
				s.popToBrace()
			}
			if s.newlineSignificant() {
				n := len(s.out.toks)
				if n > 0 && s.out.toks[n-1].Type != tokNL {
					s.emit(tokNL, s.pos(), "\n")
				}
			}
			s.off++
			s.line++
			s.col = 1
		case c == ' ' || c == '\t' || c == '\r':
			s.advance(1)
		case c == '/' && s.off+1 < len(s.src) && s.src[s.off+1] == '/':
			s.comment()
		case isLetter(c) || s.letterAt(s.off):
			s.ident()
		case isDigit(c):
			s.number()
		case c == '"':
			s.str()
		case strings.IndexByte("={}()[],;+-*/", c) >= 0:
			s.punct(c)
		default:
			start := s.pos()
			r, size := utf8.DecodeRune(s.src[s.off:])
			s.advance(size)
			var d *diag.Diagnostic
			if r == utf8.RuneError && size == 1 {
				d = s.errorf(diag.CodeIllegalCharacter, start, s.pos(), "invalid byte 0x%02x in source (not UTF-8)", c)
			} else {
				d = s.errorf(diag.CodeIllegalCharacter, start, s.pos(), "character %q is not allowed here", r)
			}
			switch r {
			case '.':
				d.Suggestion = "write a digit before the point, as in `0.5`"
			case '#':
				d.Suggestion = "comments start with `//`"
			case '\'':
				d.Suggestion = "strings use double quotes"
			case ':':
				d.Suggestion = "assign with `=`"
			}
		}
	}
}

func (s *scanner) comment() {
	start := s.pos()
	end := s.off
	for end < len(s.src) && s.src[end] != '\n' {
		end++
	}
	text := strings.TrimRight(string(s.src[s.off:end]), " \t\r")
	s.advance(end - s.off)
	endPos := astPos(start)
	endPos.Offset += len(text)
	endPos.Col += len(text)
	s.out.comments = append(s.out.comments, &ast.Comment{Span: ast.Span{Start: astPos(start), End: endPos}, Text: text})
}

func (s *scanner) ident() {
	start := s.pos()
	end := s.off
	foreign := -1 // offset of the first non-ASCII letter, if any
	for end < len(s.src) {
		if c := s.src[end]; isLetter(c) || isDigit(c) {
			end++
			continue
		}
		if !s.letterAt(end) {
			break
		}
		if foreign < 0 {
			foreign = end
		}
		_, size := utf8.DecodeRune(s.src[end:])
		end += size
	}
	text := string(s.src[s.off:end])
	if foreign >= 0 {
		// One error for the whole word, at the first foreign letter. The word stays one
		// identifier token, so the parser does not also report a missing name and a stray
		// rest of the word.
		r, size := utf8.DecodeRune(s.src[foreign:])
		at := start
		at.Offset, at.Column = foreign, start.Column+foreign-s.off
		to := at
		to.Offset, to.Column = at.Offset+size, at.Column+size
		d := s.errorf(diag.CodeIllegalCharacter, at, to, "character %q is not allowed in the name `%s`: names are ASCII letters, digits and _", r, text)
		if alt := asciiName(text); strings.Trim(alt, "_") != "" {
			d.Suggestion = fmt.Sprintf("write `%s`", alt)
		} else {
			d.Suggestion = "name it with ASCII letters, digits and _"
		}
	}
	if start.Column == 1 && len(s.stack) > 0 && declKinds[text] && !s.followedByEquals(end) {
		// Resynchronise: a declaration keyword at the start of a line ends whatever was
		// left open before it. The parser reports the unclosed bracket.
		s.stack = s.stack[:0]
		if n := len(s.out.toks); n > 0 && s.out.toks[n-1].Type != tokNL {
			s.emit(tokNL, start, "\n")
		}
	}
	s.advance(end - s.off)
	s.emit(tokIdent, start, text)
}

// entryFollows reports, at a newline inside `( )` or `[ ]`, whether the line so far ends
// a value and the next line starts `key =` or `}`. Valid input never does that (a value
// inside brackets is followed by `,`, an operator or a closing bracket).
func (s *scanner) entryFollows() bool {
	n := len(s.out.toks)
	if n == 0 {
		return false
	}
	switch last := s.out.toks[n-1]; {
	case last.Type == tokIdent, last.Type == tokNumber, last.Type == tokString,
		last.Value == ")", last.Value == "]":
	default:
		return false
	}
	i := s.off + 1
	for i < len(s.src) && (s.src[i] == ' ' || s.src[i] == '\t' || s.src[i] == '\r') {
		i++
	}
	if i < len(s.src) && s.src[i] == '}' {
		return true
	}
	if i >= len(s.src) || !isLetter(s.src[i]) {
		return false
	}
	for i < len(s.src) && (isLetter(s.src[i]) || isDigit(s.src[i])) {
		i++
	}
	return s.followedByEquals(i)
}

func (s *scanner) popToBrace() {
	for len(s.stack) > 0 && s.stack[len(s.stack)-1] != '{' {
		s.stack = s.stack[:len(s.stack)-1]
	}
}

func (s *scanner) followedByEquals(i int) bool {
	for i < len(s.src) && (s.src[i] == ' ' || s.src[i] == '\t') {
		i++
	}
	return i < len(s.src) && s.src[i] == '='
}

func (s *scanner) punct(c byte) {
	start := s.pos()
	switch c {
	case '{', '(', '[':
		s.stack = append(s.stack, c)
	case '}', ')', ']':
		open := openerOf(c)
		// Pop to the matching opener if there is one; brackets left open inside are
		// reported by the parser, which sees the same tokens.
		for i := len(s.stack) - 1; i >= 0; i-- {
			if s.stack[i] == open {
				s.stack = s.stack[:i]
				break
			}
		}
	}
	s.advance(1)
	s.emit(tokPunct, start, string(c))
}

func openerOf(c byte) byte {
	switch c {
	case '}':
		return '{'
	case ')':
		return '('
	default:
		return '['
	}
}

func closerOf(c byte) byte {
	switch c {
	case '{':
		return '}'
	case '(':
		return ')'
	default:
		return ']'
	}
}

func (s *scanner) number() {
	start := s.pos()
	src := s.src
	i := s.off
	for i < len(src) && isDigit(src[i]) {
		i++
	}
	bad := ""
	if i < len(src) && src[i] == '.' {
		i++
		if i >= len(src) || !isDigit(src[i]) {
			bad = "a digit must follow the decimal point"
		}
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		j := i + 1
		if j < len(src) && (src[j] == '+' || src[j] == '-') {
			j++
		}
		if j < len(src) && isDigit(src[j]) {
			for j < len(src) && isDigit(src[j]) {
				j++
			}
			i = j
		} else if j > i+1 || j >= len(src) || !isLetter(src[j]) {
			// `1e`, `1e+`: an exponent without digits (but `1EB` would be a suffix).
			bad = "the exponent has no digits"
			i = j
		}
	}
	numEnd := i
	for i < len(src) && (isLetter(src[i]) || isDigit(src[i])) {
		i++
	}
	suffix := string(src[numEnd:i])
	if suffix != "" && i+1 < len(src) && src[i] == '/' && src[i+1] == 's' && knownSuffix(suffix+"/s") &&
		(i+2 >= len(src) || !(isLetter(src[i+2]) || isDigit(src[i+2]))) {
		i += 2
		suffix += "/s"
	}
	// Anything that keeps looking like part of the number (`1.2.3`) makes it malformed.
	if i < len(src) && src[i] == '.' {
		for i < len(src) && (src[i] == '.' || isLetter(src[i]) || isDigit(src[i])) {
			i++
		}
		bad = "a number has at most one decimal point"
	}
	text := string(src[s.off:i])
	s.advance(i - s.off)
	end := s.pos()
	switch {
	case bad != "":
		s.errorf(diag.CodeBadNumber, start, end, "malformed number `%s`: %s", text, bad)
	case suffix != "" && !knownSuffix(suffix):
		d := s.errorf(diag.CodeUnknownSuffix, start, end, "unknown suffix `%s` on number `%s`", suffix, text)
		if best, ok := diag.Closest(suffix, suffixes); ok {
			d.Suggestion = fmt.Sprintf("did you mean `%s%s`?", src[start.Offset:start.Offset+numEnd-start.Offset], best)
		} else {
			d.Notes = append(d.Notes, "suffixes are "+strings.Join(suffixes, " "))
		}
	default:
		if _, err := strconv.ParseFloat(string(src[start.Offset:numEnd]), 64); err != nil {
			s.errorf(diag.CodeBadNumber, start, end, "number `%s` is out of range", text)
		}
	}
	s.emit(tokNumber, start, text)
}

// splitNumber splits a number literal as the lexer accepted it into value and suffix.
// Malformed literals (already diagnosed) give a zero value.
func splitNumber(text string) (float64, string) {
	i := 0
	for i < len(text) && (isDigit(text[i]) || text[i] == '.') {
		i++
	}
	if i < len(text) && (text[i] == 'e' || text[i] == 'E') {
		j := i + 1
		if j < len(text) && (text[j] == '+' || text[j] == '-') {
			j++
		}
		if j < len(text) && isDigit(text[j]) {
			for j < len(text) && isDigit(text[j]) {
				j++
			}
			i = j
		}
	}
	v, err := strconv.ParseFloat(text[:i], 64)
	if err != nil {
		v = 0
	}
	return v, text[i:]
}

func (s *scanner) str() {
	start := s.pos()
	i := s.off + 1
	var val []byte
	closed := false
	for i < len(s.src) {
		c := s.src[i]
		if c == '"' {
			i++
			closed = true
			break
		}
		if c == '\n' {
			break
		}
		if c == '\\' {
			if i+1 >= len(s.src) || s.src[i+1] == '\n' {
				i++
				break
			}
			r, multibyte, tail, err := strconv.UnquoteChar(string(s.src[i:min(i+10, len(s.src))]), '"')
			if err != nil {
				_, size := utf8.DecodeRune(s.src[i+1:])
				escStart := lexer.Position{Filename: s.name, Offset: i, Line: s.line, Column: s.col + i - s.off}
				escEnd := escStart
				escEnd.Offset += 1 + size
				escEnd.Column += 1 + size
				d := s.errorf(diag.CodeBadEscape, escStart, escEnd, "invalid escape `%s` in string", s.src[i:i+1+size])
				d.Notes = append(d.Notes, "escapes are \\n \\t \\r \\\\ \\\" \\xHH \\uHHHH")
				i += 1 + size
				continue
			}
			used := min(i+10, len(s.src)) - i - len(tail)
			val = appendRune(val, r, multibyte)
			i += used
			continue
		}
		r, size := utf8.DecodeRune(s.src[i:])
		if r == utf8.RuneError && size == 1 {
			// Keep the file's bytes: the formatter re-quotes them as \x escapes.
			val = append(val, c)
		} else {
			val = append(val, s.src[i:i+size]...)
		}
		i += size
	}
	text := string(s.src[s.off:i])
	s.advance(i - s.off)
	if !closed {
		d := s.errorf(diag.CodeUnterminatedString, start, s.pos(), "string is not terminated before the end of the line")
		d.Suggestion = "add a closing `\"`"
	}
	s.out.strings[start.Offset] = string(val)
	s.emit(tokString, start, text)
}

// appendRune follows strconv.Unquote: multibyte values are UTF-8 encoded, the others
// (\xHH and octal escapes) name single bytes.
func appendRune(b []byte, r rune, multibyte bool) []byte {
	if multibyte {
		return utf8.AppendRune(b, r)
	}
	return append(b, byte(r))
}

func isLetter(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// letterAt reports whether a non-ASCII letter, digit or combining mark starts at off: not
// allowed in a name, but part of the word a person meant as one (mödel, naïve, 模型).
func (s *scanner) letterAt(off int) bool {
	if off >= len(s.src) || s.src[off] < utf8.RuneSelf {
		return false
	}
	r, _ := utf8.DecodeRune(s.src[off:])
	return r != utf8.RuneError && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r))
}

// asciiName suggests an ASCII spelling of name: accented Latin letters lose the accent
// (mödel: model, straße: strasse), combining marks are dropped and anything else becomes _.
func asciiName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case unicode.Is(unicode.Mn, r):
		default:
			b.WriteString(foldLatin(r))
		}
	}
	return b.String()
}

// foldLatin is the ASCII letter(s) an accented Latin letter is written with, or "_".
func foldLatin(r rune) string {
	for _, g := range [...]struct{ from, to string }{
		{"àáâãäåāă", "a"}, {"ÀÁÂÃÄÅĀĂ", "A"}, {"çćč", "c"}, {"ÇĆČ", "C"}, {"ď", "d"}, {"Ď", "D"},
		{"èéêëēěę", "e"}, {"ÈÉÊËĒĚĘ", "E"}, {"ìíîïī", "i"}, {"ÌÍÎÏĪ", "I"}, {"ł", "l"}, {"Ł", "L"},
		{"ñńň", "n"}, {"ÑŃŇ", "N"}, {"òóôõöøō", "o"}, {"ÒÓÔÕÖØŌ", "O"}, {"ř", "r"}, {"Ř", "R"},
		{"śšş", "s"}, {"ŚŠŞ", "S"}, {"ťţ", "t"}, {"ŤŢ", "T"}, {"ùúûüūů", "u"}, {"ÙÚÛÜŪŮ", "U"},
		{"ýÿ", "y"}, {"Ý", "Y"}, {"źżž", "z"}, {"ŹŻŽ", "Z"}, {"ß", "ss"}, {"æ", "ae"}, {"Æ", "AE"},
	} {
		if strings.ContainsRune(g.from, r) {
			return g.to
		}
	}
	return "_"
}
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func astPos(p lexer.Position) ast.Pos {
	return ast.Pos{Offset: p.Offset, Line: p.Line, Col: p.Column}
}

// tokenEnd is the position just past t. Token text is exactly the source bytes and
// never contains a newline (tokNL stands for one).
func tokenEnd(t lexer.Token) ast.Pos {
	p := astPos(t.Pos)
	n := len(t.Value)
	if t.Type == tokNL {
		n = 1
	}
	p.Offset += n
	p.Col += n
	return p
}
