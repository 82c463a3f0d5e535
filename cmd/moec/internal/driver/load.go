package driver

import (
	"io"
	"os"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// Loaded is a checked file with its sources, kept for rendering diagnostics.
type Loaded struct {
	Path    string
	Program *program.Program
	Sources map[string][]byte
	Diags   diag.List
}

// Load parses and checks path and its imports.
func Load(path string) *Loaded {
	prog, sources, diags := check.Load(path, os.ReadFile)
	if !diags.HasErrors() {
		diags = append(diags, checkTokenizers(prog)...)
	}
	diags.Sort()
	return &Loaded{Path: path, Program: prog, Sources: sources, Diags: diags}
}

// Render writes every diagnostic with its source line and caret.
func (l *Loaded) Render(w io.Writer) {
	diag.RenderAll(w, l.Diags, l.Sources)
}

// RenderList writes further diagnostics (from later phases) against the loaded sources.
func (l *Loaded) RenderList(w io.Writer, list diag.List) {
	list.Sort()
	diag.RenderAll(w, list, l.Sources)
}
