package parse

import (
	"fmt"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// Error recovery. participle stops at the first error, and users want every error of a
// file at once, so after a failed one-pass parse the tokens are cut into pieces that
// can fail independently: top-level declarations, then each block's header and entries.
// Each piece goes back to participle through a smaller grammar (gBlock, gHeader, gAssign,
// gImport). Structural problems that participle would describe poorly (brackets, a
// missing `=` or value) are found on the tokens directly, with better messages.

// resyncAt reports whether toks[i] starts a new top-level declaration even though
// brackets are still open: the same rule the lexer applies (see declKinds).
func resyncAt(toks []lexer.Token, i int) bool {
	t := toks[i]
	return t.Type == tokIdent && t.Pos.Column == 1 && declKinds[t.Value] &&
		(i+1 >= len(toks) || !isPunct(toks[i+1], "="))
}

// splitTop cuts the file's tokens into top-level chunks: each runs to the `}` that closes
// its first block, or to a newline or `;` outside brackets, or to the next declaration
// keyword at column 1.
func (p *parser) splitTop(toks []lexer.Token) []chunk {
	var out []chunk
	i := 0
	for i < len(toks) {
		t := toks[i]
		if isSep(t) {
			i++
			continue
		}
		if isCloser(t) {
			p.diags.Errorf(diag.CodeUnmatchedClose, p.tokRange(t), "`%s` does not close anything", t.Value)
			i++
			continue
		}
		start := i
		var stack []byte
		for i < len(toks) {
			t := toks[i]
			if i > start && len(stack) > 0 && resyncAt(toks, i) {
				break
			}
			if len(stack) == 0 && isSep(t) {
				break
			}
			if len(stack) == 0 && isCloser(t) {
				break // stray closer: reported by the outer loop
			}
			i++
			if isOpener(t) {
				stack = append(stack, t.Value[0])
			} else if isCloser(t) {
				stack = popTo(stack, openerOf(t.Value[0]))
				if len(stack) == 0 && t.Value == "}" {
					break
				}
			}
		}
		out = append(out, chunk{toks: toks[start:i], end: p.tokenAt(toks, i)})
	}
	return out
}

func (p *parser) tokenAt(toks []lexer.Token, i int) lexer.Token {
	if i < len(toks) {
		return toks[i]
	}
	return lexer.EOFToken(p.lx.eof)
}

// popTo pops stack down to and including the innermost open; a closer with no matching
// opener leaves the stack as it is.
func popTo(stack []byte, open byte) []byte {
	for j := len(stack) - 1; j >= 0; j-- {
		if stack[j] == open {
			return stack[:j]
		}
	}
	return stack
}

// splitEntries cuts a block body into entries at newlines and `;` outside nested braces,
// and after the `}` that closes a nested block. Only braces count: the lexer already
// dropped the newlines inside `( )` and `[ ]`, except where it found one left open
// before the next entry, and there the newline must end the entry. A `key =` right after
// a complete value, outside any bracket, also starts an entry: the separator is reported
// and both entries are kept, as the one-pass parse does.
func (p *parser) splitEntries(toks []lexer.Token, after lexer.Token) []chunk {
	var out []chunk
	braces, brackets := 0, 0
	start := 0
	for i, t := range toks {
		switch {
		case isPunct(t, "{"):
			braces++
		case isPunct(t, "}") && braces > 0:
			braces--
			if braces == 0 && brackets == 0 && i > start && !(i > start+1 && isPunct(toks[start+1], "=")) {
				out = append(out, chunk{toks: toks[start : i+1], end: t})
				start = i + 1
			}
		case isPunct(t, "(") || isPunct(t, "["):
			brackets++
		case (isPunct(t, ")") || isPunct(t, "]")) && brackets > 0:
			brackets--
		case isSep(t) && braces == 0:
			if i > start {
				out = append(out, chunk{toks: toks[start:i], end: t})
			}
			start = i + 1
		case braces == 0 && brackets == 0 && i > start+2 && t.Type == tokIdent &&
			i+1 < len(toks) && isPunct(toks[i+1], "=") && endsValue(toks[i-1]):
			d := p.diags.Errorf(diag.CodeMissingSeparator, p.tokRange(t), "unexpected %s after the value of `%s`",
				describe(t), toks[start].Value)
			d.Suggestion = "separate entries with a newline or `;`"
			out = append(out, chunk{toks: toks[start:i], end: t})
			start = i
		}
	}
	if start < len(toks) {
		out = append(out, chunk{toks: toks[start:], end: after})
	}
	return out
}

// endsValue says whether t can be the last token of a value.
func endsValue(t lexer.Token) bool {
	return t.Type == tokIdent || t.Type == tokNumber || t.Type == tokString ||
		isPunct(t, ")") || isPunct(t, "]") || isPunct(t, "}")
}

func (p *parser) recoverFile(f *ast.File) {
	for _, c := range p.splitTop(p.lx.toks) {
		if maxDepth(c.toks) > MaxDepth {
			p.tooDeep(c.toks)
			continue
		}
		first := c.toks[0]
		switch {
		case first.Type == tokIdent && first.Value == "import":
			if imp := p.recoverImport(c); imp != nil {
				f.Imports = append(f.Imports, imp)
			}
		case first.Type == tokIdent && len(c.toks) > 1 && isPunct(c.toks[1], "="):
			d := p.diags.Errorf(diag.CodeAssignOutsideBlock, p.rng(astPos(first.Pos), tokenEnd(c.toks[len(c.toks)-1])),
				"`%s = ...` must be inside a block", first.Value)
			d.Suggestion = "move it into the `model`, `cluster` or `train` block it belongs to"
		case first.Type != tokIdent:
			p.diags.Errorf(diag.CodeUnexpectedToken, p.tokRange(first),
				"unexpected %s at top level: expected a declaration such as `model NAME { ... }`", describe(first))
		default:
			if b := p.recoverBlock(c); b != nil {
				f.Decls = append(f.Decls, b)
			}
		}
	}
}

func (p *parser) recoverImport(c chunk) *ast.Import {
	if len(c.toks) < 2 || c.toks[1].Type != tokString {
		at := c.end
		if len(c.toks) > 1 {
			at = c.toks[1]
		}
		d := p.diags.Errorf(diag.CodeImportNotString, p.tokRange(at), "import path must be a string, found %s", describe(at))
		d.Suggestion = "write `import \"other.moe\"`"
		return nil
	}
	g, err := run(grammar().imp, c.toks, c.eofPos())
	if err != nil {
		p.syntaxError(err, c, "after import")
		return nil
	}
	return p.conv.imp(g)
}

// recoverBlock parses one block. When the block as a whole does not parse, it parses
// the header and every entry separately, so each broken entry is reported and the good
// ones are kept.
func (p *parser) recoverBlock(c chunk) *ast.Block {
	if tooManyOperators(c.toks) {
		// Too long for participle: the entry holding it is refused (recoverAssign).
		return p.blockPieces(c)
	}
	g, err := run(grammar().block, c.toks, c.eofPos())
	if err == nil {
		return p.conv.block(g)
	}
	b := p.blockPieces(c)
	if !p.reportedWithin(c) {
		// The pieces parsed although the whole did not: report participle's own view.
		p.syntaxError(err, c, "")
	}
	return b
}

// reportedWithin says whether some diagnostic already points into chunk c.
func (p *parser) reportedWithin(c chunk) bool {
	if len(c.toks) == 0 {
		return false
	}
	from, to := c.toks[0].Pos.Offset, c.end.Pos.Offset
	if c.end.Type == tokEOF {
		to = p.lx.eof.Offset
	}
	for _, d := range p.diags {
		if d.Subject.Start.Offset >= from && d.Subject.Start.Offset <= to {
			return true
		}
	}
	return false
}

// lexicalErrorIn says whether the scanner rejected a character inside c: the tokens
// around a dropped character rarely make sense, and one error says it all.
func (p *parser) lexicalErrorIn(c chunk) bool {
	if len(c.toks) == 0 {
		return false
	}
	from, to := c.toks[0].Pos.Offset, c.end.Pos.Offset
	for _, d := range p.lx.diags {
		if d.Code == diag.CodeIllegalCharacter && d.Subject.Start.Offset >= from && d.Subject.Start.Offset <= to {
			return true
		}
	}
	return false
}

func (p *parser) blockPieces(c chunk) *ast.Block {
	toks := c.toks
	open := -1
	for i, t := range toks {
		if isOpener(t) {
			if t.Value == "{" {
				open = i
			}
			break
		}
		if isCloser(t) {
			break
		}
	}
	if open < 0 {
		// No body: parse the header alone to say what went wrong in it.
		_, err := run(grammar().block, toks, c.eofPos())
		if err != nil {
			p.syntaxError(err, c, "in block header")
		}
		return nil
	}
	// Only a block that did not parse whole comes here.
	b := &ast.Block{Broken: true}
	hdr := chunk{toks: toks[:open], end: toks[open]}
	if open == 0 {
		p.diags.Errorf(diag.CodeUnexpectedToken, p.tokRange(toks[0]), "`{` must follow a block kind such as `model` or `attention`")
		return nil
	}
	if g, err := run(grammar().header, hdr.toks, hdr.eofPos()); err != nil {
		p.syntaxError(err, hdr, "in block header")
		b.Kind = &ast.Ident{Span: p.conv.spanTok(toks[0]), Name: toks[0].Value}
	} else {
		p.conv.header(g, b)
	}
	// Find the matching `}` the way the lexer does: a `}` also closes any `(` or `[`
	// left open inside the block.
	closeAt := -1
	var stack []byte
	for i := open; i < len(toks) && closeAt < 0; i++ {
		switch t := toks[i]; {
		case isOpener(t):
			stack = append(stack, t.Value[0])
		case isCloser(t):
			stack = popTo(stack, openerOf(t.Value[0]))
			if len(stack) == 0 {
				closeAt = i
			}
		}
	}
	body := toks[open+1:]
	after := c.end
	if closeAt >= 0 {
		body = toks[open+1 : closeAt]
		after = toks[closeAt]
		b.RBrace = astPos(toks[closeAt].Pos)
		b.Span = ast.Span{Start: astPos(toks[0].Pos), End: tokenEnd(toks[closeAt])}
		if closeAt+1 < len(toks) {
			extra := toks[closeAt+1]
			d := p.diags.Errorf(diag.CodeMissingSeparator, p.tokRange(extra), "unexpected %s after the block's closing `}`", describe(extra))
			d.Suggestion = "put it on its own line"
		}
	} else {
		end := c.toks[len(c.toks)-1]
		b.Span = ast.Span{Start: astPos(toks[0].Pos), End: tokenEnd(end)}
		if inner, closer, ok := p.misindentedBrace(toks[open:]); ok {
			// Braces pair up, but one `}` lines up with an outer block: the inner
			// brace is the one the user forgot to close.
			d := p.diags.Errorf(diag.CodeMissingRBrace, p.tokRange(inner), "%s is never closed", braceTitle(toks[open:], inner))
			d.Notes = append(d.Notes, fmt.Sprintf("the `}` at %d:%d lines up with %s, so it closes that instead",
				closer.Pos.Line, closer.Pos.Column, blockTitle(b)))
			d.Suggestion = "add `}` where it ends"
		} else {
			d := p.diags.Errorf(diag.CodeMissingRBrace, p.tokRange(toks[open]), "%s is never closed", blockTitle(b))
			d.Notes = append(d.Notes, fmt.Sprintf("expected `}` before %s at %d:%d", describe(c.end), c.end.Pos.Line, c.end.Pos.Column))
			d.Suggestion = "add `}` at the end of the block"
		}
	}
	for _, e := range p.splitEntries(body, after) {
		if ent := p.recoverEntry(e); ent != nil {
			b.Body = append(b.Body, ent)
		}
	}
	return b
}

func blockTitle(b *ast.Block) string {
	if b.Kind == nil {
		return "the block"
	}
	if b.Name != nil {
		return fmt.Sprintf("block `%s %s`", b.Kind.Name, b.Name.Name)
	}
	return fmt.Sprintf("block `%s`", b.Kind.Name)
}

func (c *converter) spanTok(t lexer.Token) ast.Span {
	return ast.Span{Start: astPos(t.Pos), End: tokenEnd(t)}
}

func (p *parser) recoverEntry(c chunk) ast.Entry {
	toks := c.toks
	first := toks[0]
	if first.Type != tokIdent {
		p.diags.Errorf(diag.CodeUnexpectedToken, p.tokRange(first), "unexpected %s: expected a key or a nested block", describe(first))
		return nil
	}
	if len(toks) > 1 && !isPunct(toks[1], "=") && hasTopLevelBrace(toks) {
		if b := p.recoverBlock(c); b != nil {
			return b
		}
		return nil
	}
	if a := p.recoverAssign(c); a != nil {
		return a
	}
	return nil // not a typed nil inside the interface
}

func hasTopLevelBrace(toks []lexer.Token) bool {
	for _, t := range toks {
		if isPunct(t, "{") {
			return true
		}
		if isOpener(t) || isPunct(t, "=") {
			return false
		}
	}
	return false
}

func (p *parser) recoverAssign(c chunk) *ast.Assign {
	toks := c.toks
	key := toks[0]
	if p.lexicalErrorIn(c) {
		return nil
	}
	if len(toks) == 1 || !isPunct(toks[1], "=") {
		at := c.end
		if len(toks) > 1 {
			at = toks[1]
		}
		r := p.rng(tokenEnd(key), tokenEnd(key))
		if len(toks) > 1 {
			r = p.tokRange(at)
		}
		d := p.diags.Errorf(diag.CodeMissingEquals, r, "expected `=` after key `%s`, found %s", key.Value, describe(at))
		if len(toks) > 1 {
			d.Suggestion = fmt.Sprintf("write `%s = ...`", key.Value)
		} else {
			d.Suggestion = fmt.Sprintf("give `%s` a value: `%s = ...`", key.Value, key.Value)
		}
		return nil
	}
	if len(toks) == 2 {
		d := p.diags.Errorf(diag.CodeMissingValue, p.rng(tokenEnd(toks[1]), tokenEnd(toks[1])),
			"missing value after `%s =`", key.Value)
		d.Notes = append(d.Notes, fmt.Sprintf("found %s instead", describe(c.end)))
		return nil
	}
	if p.brackets(toks) {
		return nil
	}
	for i := 2; i < len(toks); i++ {
		if isPunct(toks[i-1], "=") && (isCloser(toks[i]) || isPunct(toks[i], ",")) {
			d := p.diags.Errorf(diag.CodeMissingValue, p.rng(tokenEnd(toks[i-1]), tokenEnd(toks[i-1])),
				"missing value after `%s =`", toks[i-2].Value)
			d.Notes = append(d.Notes, fmt.Sprintf("found %s instead", describe(toks[i])))
			return nil
		}
	}
	if p.reportLongExpr(toks) {
		return nil
	}
	if isPunct(toks[len(toks)-1], "=") && len(toks) > 2 {
		d := p.diags.Errorf(diag.CodeMissingValue, p.rng(tokenEnd(toks[len(toks)-1]), tokenEnd(toks[len(toks)-1])),
			"missing value after `%s =`", toks[len(toks)-2].Value)
		d.Notes = append(d.Notes, fmt.Sprintf("found %s instead", describe(c.end)))
		return nil
	}
	g, err := run(grammar().assign, toks, c.eofPos())
	if err != nil {
		p.syntaxError(err, c, "in the value of `"+key.Value+"`")
		return nil
	}
	return p.conv.assign(g)
}

// brackets reports unbalanced brackets in toks (one entry) and says whether it found any.
func (p *parser) brackets(toks []lexer.Token) bool {
	var stack []lexer.Token
	bad := false
	for _, t := range toks {
		switch {
		case isOpener(t):
			stack = append(stack, t)
		case isCloser(t):
			want := openerOf(t.Value[0])
			if len(stack) > 0 && stack[len(stack)-1].Value[0] == want {
				stack = stack[:len(stack)-1]
				continue
			}
			found := -1
			for j := len(stack) - 1; j >= 0; j-- {
				if stack[j].Value[0] == want {
					found = j
					break
				}
			}
			if found < 0 {
				p.diags.Errorf(diag.CodeUnmatchedClose, p.tokRange(t), "`%s` does not close anything", t.Value)
				bad = true
				continue
			}
			for _, o := range stack[found+1:] {
				p.missingClose(o, t)
			}
			stack = stack[:found]
			bad = true
		}
	}
	for _, o := range stack {
		p.missingClose(o, lexer.Token{})
		bad = true
	}
	return bad
}

func (p *parser) missingClose(open, at lexer.Token) {
	want := string(closerOf(open.Value[0]))
	d := p.diags.Errorf(diag.CodeMissingClose, p.tokRange(open), "`%s` is never closed", open.Value)
	if at.Value != "" {
		d.Notes = append(d.Notes, fmt.Sprintf("`%s` at %d:%d closes an outer bracket first", at.Value, at.Pos.Line, at.Pos.Column))
	}
	d.Suggestion = fmt.Sprintf("add `%s`", want)
}

// misindentedBrace looks, inside an unclosed block starting at toks[0] (its `{`), for the
// first `{` paired with a `}` that starts its line to the left of the line that opened
// it: formatted code closes a brace at the indentation of its opening line, so that `}`
// was meant for an outer block, and the inner `{` is the unclosed one.
func (p *parser) misindentedBrace(toks []lexer.Token) (open, closer lexer.Token, ok bool) {
	var stack []lexer.Token
	for i, t := range toks {
		switch {
		case isPunct(t, "{"):
			stack = append(stack, t)
		case isPunct(t, "}") && len(stack) > 0:
			o := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			startsLine := i > 0 && toks[i-1].Type == tokNL
			if len(stack) > 0 && startsLine && t.Pos.Column-1 < p.lx.indent(o.Pos) {
				return o, t, true
			}
		}
	}
	return lexer.Token{}, lexer.Token{}, false
}

// braceTitle names the block or brace call opened by the `{` token open.
func braceTitle(toks []lexer.Token, open lexer.Token) string {
	var words []string
	for i, t := range toks {
		if t.Pos.Offset != open.Pos.Offset {
			continue
		}
		for j := i - 1; j >= 0 && toks[j].Type == tokIdent && toks[j].Pos.Line == open.Pos.Line; j-- {
			words = append([]string{toks[j].Value}, words...)
		}
		if j := i - len(words) - 1; j >= 0 && isPunct(toks[j], "=") {
			return fmt.Sprintf("`%s { ... }`", strings.Join(words, " "))
		}
	}
	if len(words) == 0 {
		return "this `{`"
	}
	return fmt.Sprintf("block `%s`", strings.Join(words, " "))
}
