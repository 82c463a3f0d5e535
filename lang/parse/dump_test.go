package parse

import (
	"fmt"
	"strings"

	"github.com/moec-dev/moec/lang/ast"
)

// dump prints a tree one node a line with its span, for golden files.
func dump(f *ast.File) string {
	var b strings.Builder
	d := &dumper{b: &b}
	for _, im := range f.Imports {
		d.line(0, im, "Import %q", im.Path.Value)
	}
	for _, c := range f.Comments {
		d.line(0, c, "Comment %q", c.Text)
	}
	for _, blk := range f.Decls {
		d.block(0, blk)
	}
	return b.String()
}

type dumper struct{ b *strings.Builder }

func (d *dumper) line(depth int, n ast.Node, format string, args ...any) {
	fmt.Fprintf(d.b, "%s%s-%s %s\n", strings.Repeat("  ", depth), n.Pos(), n.EndPos(), fmt.Sprintf(format, args...))
}

func name(id *ast.Ident) string {
	if id == nil {
		return "-"
	}
	return id.Name + "@" + id.Pos().String()
}

func (d *dumper) block(depth int, b *ast.Block) {
	broken := ""
	if b.Broken {
		broken = " broken"
	}
	d.line(depth, b, "Block %s name=%s extends=%s on=%s from=%s rbrace=%s%s",
		name(b.Kind), name(b.Name), name(b.Extends), name(b.On), name(b.From), b.RBrace, broken)
	for _, e := range b.Body {
		switch e := e.(type) {
		case *ast.Block:
			d.block(depth+1, e)
		case *ast.Assign:
			d.assign(depth+1, e)
		}
	}
}

func (d *dumper) assign(depth int, a *ast.Assign) {
	d.line(depth, a, "Assign %s", name(a.Key))
	d.expr(depth+1, a.Value)
}

func (d *dumper) expr(depth int, x ast.Expr) {
	switch x := x.(type) {
	case *ast.Number:
		d.line(depth, x, "Number %s value=%g suffix=%q", x.Text, x.Value, x.Suffix)
	case *ast.String:
		d.line(depth, x, "String %q", x.Value)
	case *ast.Ident:
		d.line(depth, x, "Ident %s", x.Name)
	case *ast.List:
		d.line(depth, x, "List")
		for _, e := range x.Elems {
			d.expr(depth+1, e)
		}
	case *ast.Unary:
		d.line(depth, x, "Unary %s", x.Op)
		d.expr(depth+1, x.X)
	case *ast.Binary:
		d.line(depth, x, "Binary %s", x.Op)
		d.expr(depth+1, x.X)
		d.expr(depth+1, x.Y)
	case *ast.Paren:
		d.line(depth, x, "Paren")
		d.expr(depth+1, x.X)
	case *ast.Call:
		d.line(depth, x, "Call %s braces=%v", name(x.Fn), x.Braces)
		for _, e := range x.Args {
			d.expr(depth+1, e)
		}
		for _, a := range x.Named {
			d.assign(depth+1, a)
		}
	default:
		d.line(depth, x, "?%T", x)
	}
}
