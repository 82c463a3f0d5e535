package format

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"github.com/moec-dev/moec/lang/ast"
)

// maxWidth is the column past which a list or call is broken one element a line.
const maxWidth = 100

// Source returns f in canonical layout. src is the text f was parsed from; it is read only
// to find blank lines, and may be nil (then any gap between lines counts as blank).
func Source(f *ast.File, src []byte) []byte {
	p := &printer{src: src, comments: f.Comments, noBlank: true}
	p.file(f)
	out := p.buf.Bytes()
	out = bytes.TrimRight(out, "\n")
	if len(out) == 0 {
		return []byte{}
	}
	return append(out, '\n')
}

type printer struct {
	src      []byte
	buf      bytes.Buffer
	indent   int
	col      int    // bytes written on the current output line
	space    bool   // a space is due before the next text on this line
	noBlank  bool   // no blank line may come next (start of file, just after `{`)
	lastLine int    // source line of the last token or comment printed
	blank    []bool // blank[n]: source line n is whitespace only; built on first use
	comments []*ast.Comment
	next     int // index of the first comment not yet printed
}

// --- low level output ---

func (p *printer) write(s string) {
	if p.col == 0 && s != "" {
		p.buf.WriteString(strings.Repeat("  ", p.indent))
		p.col = 2 * p.indent
	} else if p.space && s != "" {
		p.buf.WriteByte(' ')
		p.col++
	}
	p.space = false
	p.buf.WriteString(s)
	p.col += len(s)
}

// sp asks for one space before the next text, unless a line break comes first.
func (p *printer) sp() { p.space = true }

// newline ends the current line unless it is empty already.
func (p *printer) newline() {
	p.space = false
	if p.col > 0 {
		p.buf.WriteByte('\n')
		p.col = 0
	}
}

func (p *printer) blankLine() {
	p.newline()
	if b := p.buf.Bytes(); len(b) > 0 && !bytes.HasSuffix(b, []byte("\n\n")) {
		p.buf.WriteByte('\n')
	}
}

// lineStart prepares for an item (entry or comment) that starts a line and begins at
// source line `line`, keeping one blank line if the source had at least one.
func (p *printer) lineStart(line int, allowBlank bool) {
	p.newline()
	if allowBlank && !p.noBlank && p.blankBetween(p.lastLine, line) {
		p.blankLine()
	}
	p.noBlank = false
}

// blankBetween reports whether a whitespace-only line lies strictly between source lines
// a and b.
func (p *printer) blankBetween(a, b int) bool {
	if a <= 0 || b-a < 2 {
		return false
	}
	if p.src == nil {
		return true
	}
	if p.blank == nil {
		p.blank = []bool{false} // lines count from 1
		for _, line := range bytes.Split(p.src, []byte("\n")) {
			p.blank = append(p.blank, len(bytes.TrimSpace(line)) == 0)
		}
	}
	for l := a + 1; l < b && l < len(p.blank); l++ {
		if p.blank[l] {
			return true
		}
	}
	return false
}

// token writes text, which stands at source position pos, after the comments before it.
func (p *printer) token(text string, pos ast.Pos) {
	p.comment(pos.Offset, true)
	p.write(text)
	if pos.Line > 0 {
		p.lastLine = pos.Line
	}
}

// comment prints every pending comment that starts before offset. A comment on the
// source line of the last token printed ends the current output line; any other gets a
// line of its own.
func (p *printer) comment(offset int, allowBlank bool) {
	for p.next < len(p.comments) && p.comments[p.next].Start.Offset < offset {
		c := p.comments[p.next]
		p.next++
		if p.col > 0 && c.Start.Line == p.lastLine {
			p.space = false
			p.write(" " + c.Text)
		} else {
			p.lineStart(c.Start.Line, allowBlank)
			p.write(c.Text)
		}
		p.lastLine = c.Start.Line
		p.newline()
	}
}

// trailing prints the comments that follow the last token on its source line, before
// offset (where the next item begins).
func (p *printer) trailing(offset int) {
	for p.next < len(p.comments) {
		c := p.comments[p.next]
		if c.Start.Offset >= offset || c.Start.Line != p.lastLine {
			return
		}
		p.next++
		p.space = false
		p.write(" " + c.Text)
		p.newline()
	}
}

// hasComment reports whether a comment starts inside [from, to).
func (p *printer) hasComment(from, to int) bool {
	i := sort.Search(len(p.comments), func(i int) bool { return p.comments[i].Start.Offset >= from })
	return i < len(p.comments) && p.comments[i].Start.Offset < to
}

// --- declarations and entries ---

func (p *printer) file(f *ast.File) {
	type item struct {
		imp *ast.Import
		blk *ast.Block
	}
	var items []item
	for _, im := range f.Imports {
		items = append(items, item{imp: im})
	}
	for _, b := range f.Decls {
		items = append(items, item{blk: b})
	}
	sort.SliceStable(items, func(i, j int) bool {
		return startOf(items[i].imp, items[i].blk) < startOf(items[j].imp, items[j].blk)
	})
	for i, it := range items {
		var start ast.Pos
		if it.imp != nil {
			start = it.imp.Pos()
		} else {
			start = it.blk.Pos()
		}
		if i > 0 {
			p.trailing(start.Offset)
			if it.imp == nil || items[i-1].imp == nil {
				p.blankLine() // one blank line between declarations, always
				p.noBlank = true
			}
		}
		p.comment(start.Offset, true)
		p.lineStart(start.Line, true)
		if it.imp != nil {
			p.token("import", it.imp.Pos())
			p.write(" ")
			p.expr(it.imp.Path)
		} else {
			p.block(it.blk)
		}
	}
	p.trailing(int(^uint(0) >> 1))
	p.comment(int(^uint(0)>>1), true)
	p.newline()
}

func startOf(im *ast.Import, b *ast.Block) int {
	if im != nil {
		return im.Pos().Offset
	}
	return b.Pos().Offset
}

func (p *printer) block(b *ast.Block) {
	p.token(b.Kind.Name, b.Kind.Pos())
	last := b.Kind
	for _, part := range []struct {
		kw string
		id *ast.Ident
	}{{"", b.Name}, {"extends", b.Extends}, {"on", b.On}, {"", b.Distill}, {"from", b.From}} {
		if part.id == nil {
			continue
		}
		if part.kw != "" {
			p.write(" " + part.kw)
		}
		p.write(" ")
		p.token(part.id.Name, part.id.Pos())
		last = part.id
	}
	p.lastLine = last.Pos().Line
	if len(b.Body) == 0 && !p.hasComment(last.EndPos().Offset, b.EndPos().Offset) {
		p.write(" {}")
		p.lastLine = b.EndPos().Line
		return
	}
	if p.inline(b) {
		p.write(" { ")
		for i, e := range b.Body {
			if i > 0 {
				p.write("; ")
			}
			p.assign(e.(*ast.Assign), 0)
		}
		p.write(" ")
		p.token("}", before(b.EndPos()))
		return
	}
	p.write(" {")
	p.body(b.Body, b.RBrace, b.EndPos())
}

// inline reports whether block b stays on one line, `stage dense { experts = 1; tokens =
// 300B }`: it is nested (declarations always open their own lines), was written on one
// line, holds only assignments and no comment, and fits.
// Both ways of writing it are canonical; the source chooses, and the choice survives
// formatting.
func (p *printer) inline(b *ast.Block) bool {
	if p.indent == 0 || !b.RBrace.IsValid() || b.Pos().Line != b.RBrace.Line || p.hasComment(b.Pos().Offset, b.EndPos().Offset) {
		return false
	}
	width := p.col + len(" {  }")
	for i, e := range b.Body {
		a, ok := e.(*ast.Assign)
		if !ok {
			return false
		}
		if i > 0 {
			width += len("; ")
		}
		width += len(a.Key.Name) + len(" = ") + len(flat(a.Value))
	}
	return width <= maxWidth
}

// body prints entries one a line between `{` (already written) and `}`.
func (p *printer) body(entries []ast.Entry, rbrace, end ast.Pos) {
	closeAt := rbrace
	if !closeAt.IsValid() {
		closeAt = end
	}
	p.indent++
	p.noBlank = true
	pad := p.alignment(entries)
	for i, e := range entries {
		p.trailing(e.Pos().Offset)
		p.comment(e.Pos().Offset, true)
		p.lineStart(e.Pos().Line, true)
		switch e := e.(type) {
		case *ast.Assign:
			p.assign(e, pad[i])
		case *ast.Block:
			p.block(e)
		}
	}
	p.trailing(closeAt.Offset)
	p.comment(closeAt.Offset, true)
	p.indent--
	p.newline()
	p.noBlank = false
	p.token("}", closeAt)
}

// alignment returns, for each entry, the width its key is padded to so that the `=` of
// a run of one-line assignments line up, as in terraform fmt: a run is broken by a
// block, a blank line, a comment on a line of its own, or an assignment that does not fit
// on one line. Every input to the decision (key lengths, flat widths, comments, blank
// lines) survives formatting, so formatting stays idempotent.
func (p *printer) alignment(entries []ast.Entry) []int {
	pad := make([]int, len(entries))
	indent := 2 * p.indent
	oneLine := func(e ast.Entry, width int) bool {
		a, ok := e.(*ast.Assign)
		return ok && !p.hasComment(a.Pos().Offset, a.EndPos().Offset) &&
			indent+max(width, len(a.Key.Name))+3+len(flat(a.Value)) <= maxWidth
	}
	// joined reports whether nothing but a trailing comment separates entries i-1 and i.
	joined := func(i int) bool {
		prevEnd, next := entries[i-1].EndPos(), entries[i].Pos()
		if p.blankBetween(prevEnd.Line, next.Line) {
			return false
		}
		k := sort.Search(len(p.comments), func(k int) bool { return p.comments[k].Start.Offset >= prevEnd.Offset })
		for ; k < len(p.comments) && p.comments[k].Start.Offset < next.Offset; k++ {
			if p.comments[k].Start.Line != prevEnd.Line {
				return false
			}
		}
		return true
	}
	for start := 0; start < len(entries); {
		end := start + 1
		if oneLine(entries[start], 0) {
			for end < len(entries) && joined(end) && oneLine(entries[end], 0) {
				end++
			}
		}
		// Padding can push a member past the width; such a member ends the run.
		for end-start > 1 {
			width := 0
			for _, e := range entries[start:end] {
				width = max(width, len(e.(*ast.Assign).Key.Name))
			}
			cut := end
			for i := start; i < end; i++ {
				if !oneLine(entries[i], width) {
					cut = max(i, start+1)
					break
				}
			}
			if cut == end {
				for i := start; i < end; i++ {
					pad[i] = width
				}
				break
			}
			end = cut
		}
		start = end
	}
	return pad
}

// assign prints key = value, the key padded to width.
func (p *printer) assign(a *ast.Assign, width int) {
	p.token(a.Key.Name, a.Key.Pos())
	if n := width - len(a.Key.Name); n > 0 {
		p.write(strings.Repeat(" ", n))
	}
	p.sp()
	p.token("=", a.Key.EndPos())
	p.sp()
	p.expr(a.Value)
}

// --- expressions ---

func (p *printer) expr(x ast.Expr) {
	switch x := x.(type) {
	case *ast.Number:
		p.token(x.Text, x.Pos())
	case *ast.String:
		p.token(strconv.Quote(x.Value), x.Pos())
	case *ast.Ident:
		p.token(x.Name, x.Pos())
	case *ast.Unary:
		p.token(x.Op, x.Pos())
		p.expr(x.X)
	case *ast.Binary:
		// The tree does not keep the operator's position; just past the left operand
		// is where comments around it stay in order.
		p.expr(x.X)
		p.sp()
		p.token(x.Op, x.X.EndPos())
		p.sp()
		p.expr(x.Y)
	case *ast.Paren:
		p.token("(", x.Pos())
		p.indent++ // lines broken by a comment inside continue one level deeper
		p.expr(x.X)
		p.indent--
		p.token(")", before(x.EndPos()))
	case *ast.List:
		p.list(x)
	case *ast.Call:
		if x.Braces {
			p.braceCall(x)
		} else {
			p.parenCall(x)
		}
	}
}

// before is the position of the last byte of a node ending at end (its closing bracket).
func before(end ast.Pos) ast.Pos {
	if !end.IsValid() {
		return end
	}
	return ast.Pos{Offset: end.Offset - 1, Line: end.Line, Col: end.Col - 1}
}

// multiLine decides whether x is broken over lines: when a comment sits inside it, or
// when it would run past maxWidth on the current line.
func (p *printer) multiLine(x ast.Expr) bool {
	if p.hasComment(x.Pos().Offset, x.EndPos().Offset) {
		return true
	}
	return p.col+len(flat(x)) > maxWidth
}

func (p *printer) list(l *ast.List) {
	if !p.multiLine(l) {
		p.token("[", l.Pos())
		for i, e := range l.Elems {
			if i > 0 {
				p.write(", ")
			}
			p.expr(e)
		}
		p.token("]", before(l.EndPos()))
		return
	}
	p.token("[", l.Pos())
	elems := make([]ast.Node, len(l.Elems))
	for i, e := range l.Elems {
		elems[i] = e
	}
	p.elements(elems, before(l.EndPos()))
	p.token("]", before(l.EndPos()))
}

func (p *printer) parenCall(c *ast.Call) {
	p.token(c.Fn.Name, c.Fn.Pos())
	if !p.multiLine(c) {
		p.write("(")
		for i, a := range args(c) {
			if i > 0 {
				p.write(", ")
			}
			p.node(a)
		}
		p.token(")", before(c.EndPos()))
		return
	}
	p.write("(")
	p.elements(args(c), before(c.EndPos()))
	p.token(")", before(c.EndPos()))
}

// args returns a call's arguments, positional and named, in source order: printing them
// as written keeps comments between them where they were.
func args(c *ast.Call) []ast.Node {
	out := make([]ast.Node, 0, len(c.Args)+len(c.Named))
	for _, a := range c.Args {
		out = append(out, a)
	}
	for _, a := range c.Named {
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pos().Offset < out[j].Pos().Offset })
	return out
}

func (p *printer) node(n ast.Node) {
	switch n := n.(type) {
	case *ast.Assign:
		p.assign(n, 0)
	case ast.Expr:
		p.expr(n)
	}
}

// elements prints list elements or call arguments one a line, comma-separated, with
// the closing bracket at close; the caller writes the brackets.
func (p *printer) elements(nodes []ast.Node, close ast.Pos) {
	p.indent++
	p.noBlank = true
	for i, n := range nodes {
		if i > 0 {
			p.write(",")
		}
		p.trailing(n.Pos().Offset)
		p.comment(n.Pos().Offset, false)
		p.lineStart(n.Pos().Line, false)
		p.node(n)
	}
	p.trailing(close.Offset)
	p.comment(close.Offset, false)
	p.indent--
	p.newline()
	p.noBlank = false
}

func (p *printer) braceCall(c *ast.Call) {
	p.token(c.Fn.Name, c.Fn.Pos())
	if len(c.Named) == 0 && !p.hasComment(c.Pos().Offset, c.EndPos().Offset) {
		p.write(" {}")
		p.lastLine = c.EndPos().Line
		return
	}
	if !p.multiLine(c) {
		p.write(" { ")
		for i, a := range c.Named {
			if i > 0 {
				p.write("; ")
			}
			p.assign(a, 0)
		}
		p.write(" ")
		p.token("}", before(c.EndPos()))
		return
	}
	p.write(" {")
	entries := make([]ast.Entry, len(c.Named))
	for i, a := range c.Named {
		entries[i] = a
	}
	p.body(entries, before(c.EndPos()), c.EndPos())
}

// flat renders x on one line, the width test for multiLine.
func flat(x ast.Expr) string {
	var b strings.Builder
	var walk func(x ast.Expr)
	assign := func(a *ast.Assign) {
		b.WriteString(a.Key.Name + " = ")
		walk(a.Value)
	}
	walk = func(x ast.Expr) {
		switch x := x.(type) {
		case *ast.Number:
			b.WriteString(x.Text)
		case *ast.String:
			b.WriteString(strconv.Quote(x.Value))
		case *ast.Ident:
			b.WriteString(x.Name)
		case *ast.Unary:
			b.WriteString(x.Op)
			walk(x.X)
		case *ast.Binary:
			walk(x.X)
			b.WriteString(" " + x.Op + " ")
			walk(x.Y)
		case *ast.Paren:
			b.WriteString("(")
			walk(x.X)
			b.WriteString(")")
		case *ast.List:
			b.WriteString("[")
			for i, e := range x.Elems {
				if i > 0 {
					b.WriteString(", ")
				}
				walk(e)
			}
			b.WriteString("]")
		case *ast.Call:
			b.WriteString(x.Fn.Name)
			if x.Braces {
				b.WriteString(" { ")
				for i, a := range x.Named {
					if i > 0 {
						b.WriteString("; ")
					}
					assign(a)
				}
				b.WriteString(" }")
				return
			}
			b.WriteString("(")
			for i, a := range args(x) {
				if i > 0 {
					b.WriteString(", ")
				}
				switch a := a.(type) {
				case *ast.Assign:
					assign(a)
				case ast.Expr:
					walk(a)
				}
			}
			b.WriteString(")")
		}
	}
	walk(x)
	return b.String()
}
