package lsp

import (
	"strings"

	"github.com/moec-dev/moec/lang/ast"
)

// role says what an identifier is where it stands.
type role int

const (
	roleKind     role = iota + 1 // a block's leading keyword (model, stage, attention)
	roleDeclName                 // the NAME of a block header
	roleExtends                  // model NAME extends BASE
	roleOn                       // train NAME on CLUSTER
	roleFrom                     // stage NAME from OTHER
	roleKey                      // the key of `key = value` (or of a constructor's named argument)
	roleValue                    // a bare word or string in a value
	roleImport                   // an import's path
)

// site is one identifier with its context: the blocks around it (outermost first), the
// assignment and constructor call it sits in, if any.
type site struct {
	file   string
	blocks []*ast.Block
	assign *ast.Assign // the top-level `key = value` of the innermost block
	call   *ast.Call   // the constructor whose argument it is
	id     *ast.Ident
	role   role
	imp    *ast.Import
}

// block is the innermost block around the site.
func (s *site) block() *ast.Block {
	if len(s.blocks) == 0 {
		return nil
	}
	return s.blocks[len(s.blocks)-1]
}

// explainPath is the site's block path as program.Provenance writes it: "model m.attention",
// "train m.stage dense".
func explainPath(blocks []*ast.Block) string {
	var parts []string
	for _, b := range blocks {
		switch {
		case b.Kind == nil:
			return ""
		case b.Name != nil:
			parts = append(parts, b.Kind.Name+" "+b.Name.Name)
		default:
			parts = append(parts, b.Kind.Name)
		}
	}
	return strings.Join(parts, ".")
}

// walkSites calls f for every identifier (and import path and string value) of f, in
// source order.
func walkSites(file *ast.File, f func(*site)) {
	if file == nil {
		return
	}
	for _, im := range file.Imports {
		if im != nil && im.Path != nil {
			f(&site{file: file.Name, id: &ast.Ident{Span: im.Path.Span, Name: im.Path.Value}, role: roleImport, imp: im})
		}
	}
	for _, d := range file.Decls {
		walkBlock(file.Name, nil, d, f)
	}
}

func walkBlock(file string, outer []*ast.Block, b *ast.Block, f func(*site)) {
	if b == nil || b.Kind == nil {
		return
	}
	blocks := append(append([]*ast.Block(nil), outer...), b)
	emit := func(id *ast.Ident, r role) {
		if id != nil {
			f(&site{file: file, blocks: blocks, id: id, role: r})
		}
	}
	emit(b.Kind, roleKind)
	emit(b.Name, roleDeclName)
	emit(b.Extends, roleExtends)
	emit(b.On, roleOn)
	emit(b.From, roleFrom)
	for _, e := range b.Body {
		switch e := e.(type) {
		case *ast.Assign:
			if e.Key != nil {
				f(&site{file: file, blocks: blocks, assign: e, id: e.Key, role: roleKey})
			}
			walkExpr(file, blocks, e, nil, e.Value, f)
		case *ast.Block:
			walkBlock(file, blocks, e, f)
		}
	}
}

func walkExpr(file string, blocks []*ast.Block, a *ast.Assign, call *ast.Call, x ast.Expr, f func(*site)) {
	switch x := x.(type) {
	case *ast.Ident:
		f(&site{file: file, blocks: blocks, assign: a, call: call, id: x, role: roleValue})
	case *ast.String:
		f(&site{file: file, blocks: blocks, assign: a, call: call, id: &ast.Ident{Span: x.Span, Name: x.Value}, role: roleValue})
	case *ast.List:
		for _, e := range x.Elems {
			walkExpr(file, blocks, a, call, e, f)
		}
	case *ast.Unary:
		walkExpr(file, blocks, a, call, x.X, f)
	case *ast.Binary:
		walkExpr(file, blocks, a, call, x.X, f)
		walkExpr(file, blocks, a, call, x.Y, f)
	case *ast.Paren:
		walkExpr(file, blocks, a, call, x.X, f)
	case *ast.Call:
		if x.Fn != nil {
			f(&site{file: file, blocks: blocks, assign: a, call: call, id: x.Fn, role: roleValue})
		}
		for _, e := range x.Args {
			walkExpr(file, blocks, a, x, e, f)
		}
		for _, n := range x.Named {
			if n == nil {
				continue
			}
			if n.Key != nil {
				f(&site{file: file, blocks: blocks, assign: a, call: x, id: n.Key, role: roleKey})
			}
			walkExpr(file, blocks, a, x, n.Value, f)
		}
	}
}

// siteAt returns the identifier at byte offset off of file (a cursor just after a word is
// on it), or nil.
func siteAt(file *ast.File, off int) *site {
	var found *site
	walkSites(file, func(s *site) {
		if found == nil && s.id.Pos().IsValid() && s.id.Pos().Offset <= off && off <= s.id.EndPos().Offset {
			found = s
		}
	})
	return found
}

// symbol identifies what a name refers to: a declaration (kind and name) or a stage of a
// train block (train set). A zero symbol refers to nothing.
type symbol struct {
	kind, name, train string
}

// symbolOf says what s's identifier names, or the zero symbol.
func symbolOf(s *site) symbol {
	b := s.block()
	switch s.role {
	case roleDeclName:
		if len(s.blocks) == 1 {
			switch b.Kind.Name {
			case "train", "serve":
				// train and serve blocks are named by the model they train or serve.
				return symbol{kind: "model", name: s.id.Name}
			}
			return symbol{kind: b.Kind.Name, name: s.id.Name}
		}
		if b.Kind.Name == "stage" && s.blocks[0].Name != nil {
			return symbol{kind: "stage", name: s.id.Name, train: s.blocks[0].Name.Name}
		}
	case roleExtends:
		return symbol{kind: "model", name: s.id.Name}
	case roleOn:
		return symbol{kind: "cluster", name: s.id.Name}
	case roleFrom:
		if s.blocks[0].Name != nil {
			return symbol{kind: "stage", name: s.id.Name, train: s.blocks[0].Name.Name}
		}
	case roleValue:
		if s.assign == nil || s.call != nil || s.assign.Key == nil || len(s.blocks) != 1 || s.blocks[0].Name == nil {
			return symbol{}
		}
		top := s.blocks[0]
		switch top.Kind.Name + "." + s.assign.Key.Name {
		case "experiment.train":
			return symbol{kind: "model", name: s.id.Name}
		case "compress.distill_into":
			return symbol{kind: "model", name: s.id.Name}
		case "serve.stage":
			return symbol{kind: "stage", name: s.id.Name, train: top.Name.Name}
		}
	}
	return symbol{}
}
