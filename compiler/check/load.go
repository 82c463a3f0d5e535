package check

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
)

// Load parses the file at path and every file it imports (transitively; import paths
// are relative to the importing file), then checks them together. read supplies file
// contents (os.ReadFile, an fs.FS, an in-memory map in tests). It returns the program,
// the source of every file read (keyed by the name diagnostics use, for rendering) and
// every diagnostic: unreadable files and import cycles point at the import that names
// them.
func Load(path string, read func(string) ([]byte, error)) (*program.Program, map[string][]byte, diag.List) {
	prog, sources, _, diags := LoadFiles(path, read)
	return prog, sources, diags
}

// LoadFiles is Load that also returns the parsed files, the root first, for tools that
// walk the syntax as well as the program (the language server).
func LoadFiles(path string, read func(string) ([]byte, error)) (*program.Program, map[string][]byte, []*ast.File, diag.List) {
	l := &loader{read: read, sources: map[string][]byte{}, state: map[string]int{}}
	l.load(path, nil, "")
	prog, diags := Check(l.files...)
	all := append(l.diags, diags...)
	all.Sort()
	return prog, l.sources, l.files, all
}

type loader struct {
	read    func(string) ([]byte, error)
	sources map[string][]byte
	files   []*ast.File
	diags   diag.List
	state   map[string]int // 1: loading (on the import stack), 2: loaded
	stack   []string
}

// load reads and parses one file and, depth first, its imports. imp is the import that
// named it (nil for the root) in file from.
func (l *loader) load(path string, imp *ast.Import, from string) {
	path = filepath.Clean(path)
	switch l.state[path] {
	case 1:
		i := 0
		for j, p := range l.stack {
			if p == path {
				i = j
			}
		}
		cycle := append(append([]string{}, l.stack[i:]...), path)
		d := l.diags.Errorf(diag.CodeImportCycle, diag.RangeOf(from, imp), "files import each other in a cycle: %s", strings.Join(cycle, " imports "))
		d.Suggestion = "move the shared declarations into a file both import"
		return
	case 2:
		return // already loaded through another import
	}
	src, err := l.read(path)
	if err != nil {
		// os.ReadFile's error repeats the path ("open x.moe: ..."), which the message
		// already names: keep the cause alone.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if imp == nil {
			l.diags.Errorf(diag.CodeImportUnreadable, diag.Range{File: path}, "cannot read %s: %v", path, err)
		} else {
			d := l.diags.Errorf(diag.CodeImportUnreadable, diag.RangeOf(from, imp.Path), "cannot import %q: %v", imp.Path.Value, err)
			d.Notes = append(d.Notes, "imports are relative to the importing file: "+path)
		}
		l.state[path] = 2
		return
	}
	l.state[path] = 1
	l.stack = append(l.stack, path)
	l.sources[path] = src
	f, diags := parse.File(path, src)
	l.diags = append(l.diags, diags...)
	if f != nil && !diags.HasErrors() && len(f.Decls) == 0 && len(f.Imports) == 0 {
		// Likely the wrong file, or one saved empty: checking it says "ok" and building it
		// writes an empty report, so say why.
		d := l.diags.Warnf(diag.CodeEmptyFile, diag.Range{File: path}, "%s declares nothing", path)
		d.Suggestion = "add a declaration (`model NAME { ... }`, `cluster`, `train`, ...) or an import"
	}
	if f != nil {
		l.files = append(l.files, f)
		for _, im := range f.Imports {
			if im == nil || im.Path == nil {
				continue
			}
			if filepath.IsAbs(im.Path.Value) || strings.HasPrefix(im.Path.Value, "/") {
				l.absoluteImport(im, path)
				continue
			}
			l.load(filepath.Join(filepath.Dir(path), im.Path.Value), im, path)
		}
	}
	l.stack = l.stack[:len(l.stack)-1]
	l.state[path] = 2
}

// absoluteImport refuses an import written as an absolute path, quoted as written (joining
// it to the importing file's folder would name a file that is not the one written). Imports
// are relative so that a file and the files it imports move, and are shared, together; the
// suggestion is the same file spelled relative to the importing one.
func (l *loader) absoluteImport(im *ast.Import, from string) {
	d := l.diags.Errorf(diag.CodeAbsoluteImport, diag.RangeOf(from, im.Path), "import %q is an absolute path; imports are relative to the importing file", im.Path.Value)
	d.Suggestion = fmt.Sprintf("write the path from %s's folder", filepath.Base(from))
	if filepath.IsAbs(from) { // else the relative spelling would depend on the working directory
		if rel, err := filepath.Rel(filepath.Dir(from), im.Path.Value); err == nil {
			d.Suggestion += fmt.Sprintf(": import %q", filepath.ToSlash(rel))
		}
	}
}
