package check

import (
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// attachContext gives each diagnostic about a place inside a declaration the innermost
// block around that place as its Context (`moec check --json` writes it; an editor can
// show it), unless the diagnostic set one itself or its subject is the block itself.
func (c *checker) attachContext() {
	for i := range c.r.diags {
		d := &c.r.diags[i]
		if d.Context != (diag.Range{}) || d.Subject.File == "" || !d.Subject.Start.IsValid() {
			continue
		}
		for _, dc := range c.decls {
			if dc.block == nil || dc.file != d.Subject.File {
				continue
			}
			if b := innermost(dc.block, d.Subject); b != nil {
				d.Context = diag.RangeOf(dc.file, b)
				break
			}
		}
	}
}

// innermost is the deepest block of b (b included) that contains r and is not r itself,
// or nil.
func innermost(b *ast.Block, r diag.Range) *ast.Block {
	if !spanCovers(b.Span, r) || (b.Start == r.Start && b.End == r.End) {
		return nil
	}
	for _, e := range b.Body {
		if nb, ok := e.(*ast.Block); ok && nb != nil {
			if in := innermost(nb, r); in != nil {
				return in
			}
		}
	}
	return b
}

// spanCovers reports whether span s covers range r.
func spanCovers(s ast.Span, r diag.Range) bool {
	return s.Start.Offset <= r.Start.Offset && r.End.Offset <= s.End.Offset && s.Start.IsValid()
}
