package program

import (
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// Source is where a declaration is written, so that later phases (the planner's "nothing
// fits" errors) can point at it. The zero Source means "built in Go, no file": phases then
// report without a position.
type Source struct {
	File  string
	Start ast.Pos
	End   ast.Pos
}

// Range is s as a diagnostic's range (the zero Range for the zero Source).
func (s Source) Range() diag.Range { return diag.Range{File: s.File, Start: s.Start, End: s.End} }
