package parse

import (
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// MaxDepth is how deeply brackets may nest. Real files nest a handful of levels; the cap
// keeps hostile input from exhausting the stack of the parser or of later phases.
const MaxDepth = 64

// MaxOperators is how many arithmetic operators (`+ - * /`, signs included) one
// expression may hold between its separators. Real values hold a handful; the cap keeps a
// generated or hostile chain (`1+1+…` a million times) from costing the parser gigabytes
// (it spends a few kilobytes on every operand). It is checked on the tokens, before the
// grammar runs, so a refused chain costs no more than scanning it. A chain under the cap
// is a left-leaning tree as deep as it is long; the checker walks such chains with a loop.
const MaxOperators = 10000

// File parses one .moe file. It always returns a File holding every declaration it could
// read, and diagnostics for every syntax error in the file: after an error the parser
// resynchronises at the next entry, block or declaration and goes on.
func File(name string, src []byte) (f *ast.File, diags diag.List) {
	f = &ast.File{Name: name}
	p := &parser{name: name}
	defer func() {
		if r := recover(); r != nil {
			// A bug in moec, not in the user's file: say so rather than crash the tool,
			// keeping what was found before it.
			diags = append(p.diags, diag.Diagnostic{
				Severity: diag.Error, Code: diag.CodeInternalParserError,
				Subject: diag.Range{File: name, Start: ast.Pos{Offset: 0, Line: 1, Col: 1}},
				Summary: fmt.Sprintf("internal parser error: %v", r),
				Notes:   []string{"please report this with the input file", firstLines(string(debug.Stack()), 12)},
			})
		}
	}()
	lx := scan(name, src)
	f.Comments = lx.comments
	f.Span = ast.Span{Start: ast.Pos{Offset: 0, Line: 1, Col: 1}, End: astPos(lx.eof)}
	p.lx = lx
	p.conv = newConverter(name, lx, &p.diags)
	p.diags = append(p.diags, lx.diags...)
	// Lexical errors leave usable tokens (a number with a bad suffix is still a number), so
	// the one-pass parse is tried whatever the scanner said.
	if maxDepth(lx.toks) <= MaxDepth && !tooManyOperators(lx.toks) {
		if g, err := run(grammar().file, lx.toks, lx.eof); err == nil {
			p.conv.file(g, f)
			p.diags.Sort()
			return f, p.diags
		}
	}
	p.recoverFile(f)
	p.diags.Sort()
	return f, p.diags
}

// Expr parses a single expression, such as `4 * d_model` or `zero(3, offload = cpu)`.
func Expr(src string) (x ast.Expr, diags diag.List) {
	defer func() {
		if r := recover(); r != nil {
			x = nil
			diags = append(diags, diag.Diagnostic{Severity: diag.Error, Code: diag.CodeInternalParserError,
				Summary: fmt.Sprintf("internal parser error: %v", r)})
		}
	}()
	lx := scan("", []byte(src))
	p := &parser{lx: lx}
	p.conv = newConverter("", lx, &p.diags)
	p.diags = append(p.diags, lx.diags...)
	toks := lx.toks
	for len(toks) > 0 && toks[len(toks)-1].Type == tokNL {
		toks = toks[:len(toks)-1]
	}
	for len(toks) > 0 && toks[0].Type == tokNL {
		toks = toks[1:]
	}
	if len(toks) == 0 {
		p.diags.Errorf(diag.CodeMissingValue, diag.Range{Start: astPos(lx.eof), End: astPos(lx.eof)}, "expected an expression")
		return nil, p.diags
	}
	if d := maxDepth(toks); d > MaxDepth {
		p.tooDeep(toks)
		return nil, p.diags
	}
	if p.brackets(toks) {
		return nil, p.diags
	}
	if p.reportLongExpr(toks) {
		return nil, p.diags
	}
	g, err := run(grammar().expr, toks, lx.eof)
	if err != nil {
		p.syntaxError(err, chunk{toks: toks, end: lexer.EOFToken(lx.eof)}, "in expression")
		return nil, p.diags
	}
	return p.conv.expr(g), p.diags
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

type parser struct {
	name  string
	lx    *lexed
	conv  *converter
	diags diag.List
}

// chunk is a run of tokens parsed on its own during recovery; end is the token that
// stopped it (a newline, `;`, `}` or EOF), which is where "missing ..." errors point.
type chunk struct {
	toks []lexer.Token
	end  lexer.Token
}

func (c chunk) eofPos() lexer.Position { return c.end.Pos }

func (p *parser) rng(start, end ast.Pos) diag.Range {
	return diag.Range{File: p.name, Start: start, End: end}
}

func (p *parser) tokRange(t lexer.Token) diag.Range {
	if t.Type == tokEOF {
		return p.rng(astPos(t.Pos), astPos(t.Pos))
	}
	return p.rng(astPos(t.Pos), tokenEnd(t))
}

func isPunct(t lexer.Token, s string) bool { return t.Type == tokPunct && t.Value == s }
func isSep(t lexer.Token) bool             { return t.Type == tokNL || isPunct(t, ";") }

func isOpener(t lexer.Token) bool {
	return t.Type == tokPunct && (t.Value == "{" || t.Value == "(" || t.Value == "[")
}

func isCloser(t lexer.Token) bool {
	return t.Type == tokPunct && (t.Value == "}" || t.Value == ")" || t.Value == "]")
}

func maxDepth(toks []lexer.Token) int {
	d, m := 0, 0
	for _, t := range toks {
		switch {
		case isOpener(t):
			d++
			m = max(m, d)
		case isCloser(t) && d > 0:
			d--
		}
	}
	return m
}

func (p *parser) tooDeep(toks []lexer.Token) {
	d := 0
	for _, t := range toks {
		switch {
		case isOpener(t):
			d++
			if d > MaxDepth {
				dg := p.diags.Errorf(diag.CodeNestingTooDeep, p.tokRange(t), "brackets nest more than %d levels deep", MaxDepth)
				dg.Notes = append(dg.Notes, "this declaration is skipped")
				return
			}
		case isCloser(t) && d > 0:
			d--
		}
	}
}

// operatorRuns calls visit with the index of every arithmetic operator token in toks and
// how many operators its run holds so far. A run ends at whatever can end or separate a
// value (a newline, `;`, `,`, `=`, `{`, `}`), so one run never spans two values, while a
// chain inside brackets counts with the chain around it. visit returns false to stop.
func operatorRuns(toks []lexer.Token, visit func(i, n int) bool) {
	n := 0
	for i, t := range toks {
		if t.Type == tokNL {
			n = 0
			continue
		}
		if t.Type != tokPunct {
			continue
		}
		switch t.Value {
		case "+", "-", "*", "/":
			n++
			if !visit(i, n) {
				return
			}
		case ";", ",", "=", "{", "}":
			n = 0
		}
	}
}

// tooManyOperators says whether some expression in toks holds more than MaxOperators
// operators.
func tooManyOperators(toks []lexer.Token) bool {
	found := false
	operatorRuns(toks, func(_, n int) bool {
		found = n > MaxOperators
		return !found
	})
	return found
}

// reportLongExpr reports the first operator past MaxOperators in toks (one entry or one
// expression) and says whether there was one.
func (p *parser) reportLongExpr(toks []lexer.Token) bool {
	at := -1
	operatorRuns(toks, func(i, n int) bool {
		if n > MaxOperators {
			at = i
			return false
		}
		return true
	})
	if at < 0 {
		return false
	}
	d := p.diags.Errorf(diag.CodeExprTooLong, p.tokRange(toks[at]), "expression has more than %d operators", MaxOperators)
	d.Notes = append(d.Notes, "this value is skipped")
	d.Suggestion = "write the value as one number, or split it into keys that refer to each other"
	return true
}

// syntaxError turns a participle error into a moec diagnostic.
func (p *parser) syntaxError(err error, c chunk, where string) {
	var ute *participle.UnexpectedTokenError
	if errors.As(err, &ute) {
		t := ute.Unexpected
		if t.Type == tokEOF {
			t = c.end
		}
		msg := "unexpected " + describe(t)
		if where != "" {
			msg += " " + where
		}
		exp := expected(ute)
		if exp != "" {
			msg += ": expected " + exp
		}
		d := p.diags.Errorf(diag.CodeUnexpectedToken, p.tokRange(t), "%s", msg)
		switch {
		case !isValueStart(t):
		case exp == "`)`" || exp == "`]`":
			d.Suggestion = "a `,` is missing before it"
		case strings.HasPrefix(where, "in the value"):
			d.Suggestion = "an operator or a separator (newline or `;`) is missing before it"
		}
		if where == "in block header" {
			d.Notes = append(d.Notes, "a block starts `KIND [NAME] [extends BASE] [on CLUSTER] [distill] [from STAGE] {`, on one line")
		}
		return
	}
	var pe participle.Error
	if errors.As(err, &pe) {
		pos := astPos(pe.Position())
		if !pos.IsValid() {
			pos = astPos(c.end.Pos)
		}
		msg := pe.Message()
		if m := tooManyIterations.FindStringSubmatch(msg); m != nil {
			// participle caps every repetition; its message names the grammar rule.
			d := p.diags.Errorf(diag.CodeTooManyRepeats, p.rng(pos, pos), "more than %s entries, separators or list elements in a row", m[1])
			d.Suggestion = "split the file or the block"
			return
		}
		p.diags.Errorf(diag.CodeUnexpectedToken, p.rng(pos, pos), "%s", grammarWords(msg))
		return
	}
	p.diags.Errorf(diag.CodeInternalParserError, p.tokRange(c.end), "internal parser error: %v", err)
}

func isValueStart(t lexer.Token) bool {
	return t.Type == tokIdent || t.Type == tokNumber || t.Type == tokString
}

// expected renders participle's expectation, when it gave one, in moec's words.
func expected(ute *participle.UnexpectedTokenError) string {
	msg := ute.Message()
	i := strings.Index(msg, "(expected ")
	if i < 0 || !strings.HasSuffix(msg, ")") {
		return ""
	}
	e := msg[i+len("(expected ") : len(msg)-1]
	// Participle writes the rest of the rule it was in; the first element is what was
	// expected next, the rest would only confuse.
	if j := strings.IndexAny(e, " (*?"); j > 0 && !strings.HasPrefix(e, "(") {
		e = e[:j]
	}
	return grammarWords(e)
}

// tooManyIterations matches participle's message when a repetition passes its cap.
var tooManyIterations = regexp.MustCompile(`^too many iterations of .* \(> (\d+)\)$`)

// grammarRuleName matches a name of this package's grammar types as participle writes
// them (GOpTerm, GItem*).
var grammarRuleName = regexp.MustCompile(`\bG[A-Z][A-Za-z]*\b[*+?]?`)

// grammarWords rewrites participle's names for grammar rules and token types in moec's
// words; a rule without a word of its own becomes "an element", so no name of the
// grammar's Go types reaches a user.
func grammarWords(s string) string {
	r := strings.NewReplacer("GIdent", "a name", "GPrimary", "a value", "GExpr", "a value", "GUnary", "a value",
		"GTerm", "a value", "GEntry", "an entry", "GAssign", "`key = value`", "GString", "a string",
		"GHeader", "a block kind", "GBlock", "a block", "<ident>", "a name", "<number>", "a number",
		"<string>", "a string", "<nl>", "a newline", `"`, "`")
	return grammarRuleName.ReplaceAllString(r.Replace(s), "an element")
}

// describe names a token for a message.
func describe(t lexer.Token) string {
	switch t.Type {
	case tokEOF:
		return "end of file"
	case tokNL:
		return "end of line"
	case tokNumber:
		return "number `" + t.Value + "`"
	case tokString:
		return "string " + t.Value
	case tokIdent:
		return "name `" + t.Value + "`"
	default:
		return "`" + t.Value + "`"
	}
}
