package parse

import (
	"sort"

	"github.com/alecthomas/participle/v2/lexer"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// converter turns participle's grammar values into lang/ast nodes. Spans come from the
// tokens each grammar node matched: from the first token to just past the last.
type converter struct {
	name    string
	strings map[int]string // decoded string values, by token offset
	lx      *lexed
	diags   *diag.List
}

func newConverter(name string, lx *lexed, diags *diag.List) *converter {
	return &converter{name: name, strings: lx.strings, lx: lx, diags: diags}
}

// next returns the token after the one at offset, found by binary search (tokens are in
// offset order); a map of every token would cost more than the tokens themselves.
func (c *converter) next(offset int) (lexer.Token, bool) {
	toks := c.lx.toks
	i := sort.Search(len(toks), func(i int) bool { return toks[i].Pos.Offset >= offset })
	switch {
	case i >= len(toks) || toks[i].Pos.Offset != offset:
		return lexer.Token{}, false
	case i+1 < len(toks):
		return toks[i+1], true
	default:
		return lexer.EOFToken(c.lx.eof), true
	}
}

// needSep reports an assignment that another entry follows on the same line without `;`.
func (c *converter) needSep(g *gAssign) {
	last := g.Tokens[len(g.Tokens)-1]
	t, ok := c.next(last.Pos.Offset)
	if !ok || t.Type == tokEOF || isSep(t) || isPunct(t, "}") {
		return
	}
	d := c.diags.Errorf(diag.CodeMissingSeparator, diag.Range{File: c.name, Start: astPos(t.Pos), End: tokenEnd(t)},
		"unexpected %s after the value of `%s`", describe(t), g.Key.Name)
	d.Suggestion = "separate entries with a newline or `;`"
}

func spanOf(toks []lexer.Token) ast.Span {
	if len(toks) == 0 {
		return ast.Span{}
	}
	return ast.Span{Start: astPos(toks[0].Pos), End: tokenEnd(toks[len(toks)-1])}
}

func (c *converter) ident(g *gIdent) *ast.Ident {
	if g == nil {
		return nil
	}
	return &ast.Ident{Span: spanOf(g.Tokens), Name: g.Name}
}

func (c *converter) str(g *gString) *ast.String {
	return &ast.String{Span: spanOf(g.Tokens), Value: c.strings[g.Tokens[0].Pos.Offset]}
}

func (c *converter) file(g *gFile, f *ast.File) {
	for _, it := range g.Items {
		switch {
		case it.Import != nil:
			f.Imports = append(f.Imports, c.imp(it.Import))
		case it.Block != nil:
			f.Decls = append(f.Decls, c.block(it.Block))
		}
	}
}

func (c *converter) imp(g *gImport) *ast.Import {
	return &ast.Import{Span: spanOf(g.Tokens), Path: c.str(g.Path)}
}

func (c *converter) header(g *gHeader, b *ast.Block) {
	b.Kind = c.ident(g.Kind)
	b.Name = c.ident(g.Name)
	b.Extends = c.ident(g.Extends)
	b.On = c.ident(g.On)
	if g.Distill != nil {
		b.Distill = &ast.Ident{Span: spanOf(g.Distill.Tokens), Name: g.Distill.Name}
	}
	b.From = c.ident(g.From)
}

func (c *converter) block(g *gBlock) *ast.Block {
	b := &ast.Block{Span: spanOf(g.Tokens), RBrace: astPos(g.Tokens[len(g.Tokens)-1].Pos)}
	c.header(g.Header, b)
	for _, e := range g.Body {
		if e.Assign != nil {
			c.needSep(e.Assign)
		}
		b.Body = append(b.Body, c.entry(e))
	}
	return b
}

func (c *converter) entry(g *gEntry) ast.Entry {
	if g.Assign != nil {
		return c.assign(g.Assign)
	}
	return c.block(g.Block)
}

func (c *converter) assign(g *gAssign) *ast.Assign {
	return &ast.Assign{Span: spanOf(g.Tokens), Key: c.ident(g.Key), Value: c.expr(g.Value)}
}

// expr folds `a + b - c` to the left, as arithmetic reads.
func (c *converter) expr(g *gExpr) ast.Expr {
	x := c.term(g.Left)
	for _, r := range g.Rest {
		y := c.term(r.X)
		x = &ast.Binary{Span: ast.Span{Start: x.Pos(), End: y.EndPos()}, Op: r.Op, X: x, Y: y}
	}
	return x
}

func (c *converter) term(g *gTerm) ast.Expr {
	x := c.unary(g.Left)
	for _, r := range g.Rest {
		y := c.unary(r.X)
		x = &ast.Binary{Span: ast.Span{Start: x.Pos(), End: y.EndPos()}, Op: r.Op, X: x, Y: y}
	}
	return x
}

func (c *converter) unary(g *gUnary) ast.Expr {
	x := c.primary(g.X)
	if g.Sign == "" {
		return x
	}
	return &ast.Unary{Span: spanOf(g.Tokens), Op: g.Sign, X: x}
}

func (c *converter) primary(g *gPrimary) ast.Expr {
	sp := spanOf(g.Tokens)
	switch {
	case g.Number != nil:
		v, suffix := splitNumber(*g.Number)
		return &ast.Number{Span: sp, Text: *g.Number, Value: v, Suffix: suffix}
	case g.String != nil:
		return c.str(g.String)
	case g.Call != nil:
		call := &ast.Call{Span: sp, Fn: c.ident(g.Call.Fn)}
		for _, a := range g.Call.Args {
			if a.Named != nil {
				call.Named = append(call.Named, c.assign(a.Named))
			} else {
				call.Args = append(call.Args, c.expr(a.Value))
			}
		}
		return call
	case g.BraceCall != nil:
		call := &ast.Call{Span: sp, Fn: c.ident(g.BraceCall.Fn), Braces: true}
		for _, a := range g.BraceCall.Named {
			c.needSep(a.Assign)
			call.Named = append(call.Named, c.assign(a.Assign))
		}
		return call
	case g.Ident != nil:
		return c.ident(g.Ident)
	case g.List != nil:
		l := &ast.List{Span: sp}
		for _, e := range g.List.Elems {
			l.Elems = append(l.Elems, c.expr(e))
		}
		return l
	default:
		return &ast.Paren{Span: sp, X: c.expr(g.Paren)}
	}
}
