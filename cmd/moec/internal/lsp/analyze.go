package lsp

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/plan"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// snapshot is one analysis of an open document and the files it imports.
type snapshot struct {
	path    string
	prog    *program.Program
	sources map[string][]byte    // every file read, by the name diagnostics use
	files   map[string]*ast.File // every file parsed, by the same name
	root    *ast.File            // nil when the root could not be parsed at all
	diags   diag.List
	plans   map[string]*stagePlan // by "train/stage", computed on first hover
}

// stagePlan is a stage's plan or why there is none.
type stagePlan struct {
	plan  *plan.Plan
	diags diag.List
}

// analyze checks doc exactly as `moec check` checks a file (check.LoadFiles), reading open
// documents from the editor's buffers and every other import from disk.
func analyze(doc *document, open func(path string) ([]byte, bool)) (s *snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("internal error checking %s: %v\n%s", doc.path, r, debug.Stack())
		}
	}()
	read := func(path string) ([]byte, error) {
		if filepath.Clean(path) == filepath.Clean(doc.path) {
			return doc.text, nil
		}
		if text, ok := open(path); ok {
			return text, nil
		}
		return os.ReadFile(path)
	}
	prog, sources, files, diags := check.LoadFiles(doc.path, read)
	s = &snapshot{path: filepath.Clean(doc.path), prog: prog, sources: sources, files: map[string]*ast.File{}, diags: diags, plans: map[string]*stagePlan{}}
	for _, f := range files {
		s.files[f.Name] = f
		if filepath.Clean(f.Name) == s.path {
			s.root = f
		}
	}
	return s, nil
}

// planStage plans a stage once per snapshot, as `moec plan` does.
func (s *snapshot) planStage(t *program.Train, st *program.Stage) (sp *stagePlan) {
	key := t.Name + "/" + st.Name
	if sp, ok := s.plans[key]; ok {
		return sp
	}
	defer func() {
		if r := recover(); r != nil {
			sp = &stagePlan{}
		}
		s.plans[key] = sp
	}()
	p, ds := plan.ForStage(s.prog, t, st, plan.Options{})
	return &stagePlan{plan: p, diags: ds}
}

// diagnosticsByFile converts the snapshot's diagnostics, grouped by file path. Diagnostics
// with no file (none come from check today) go to the root.
func (s *snapshot) diagnosticsByFile(utf8 bool) map[string][]lspDiagnostic {
	out := map[string][]lspDiagnostic{}
	pos := map[string]positions{}
	posOf := func(file string) positions {
		ps, ok := pos[file]
		if !ok {
			src := s.sources[file]
			ps = positions{text: src, lines: lineStarts(src), utf8: utf8}
			pos[file] = ps
		}
		return ps
	}
	for _, d := range s.diags {
		file := d.Subject.File
		if file == "" {
			file = s.path
		}
		file = filepath.Clean(file)
		out[file] = append(out[file], toLSPDiagnostic(d, file, posOf))
	}
	return out
}

// toLSPDiagnostic converts d: the range as the diagnostic's (a whole-file diagnostic sits
// at the file's start), the code and severity as `moec check --json` writes them, each
// label as related information at its own place, each note as related information at the
// diagnostic's own place and the suggestion in the message's last line (as the terminal
// rendering's "help:") and in data for quick fixes. posOf gives a file's positions.
func toLSPDiagnostic(d diag.Diagnostic, file string, posOf func(file string) positions) lspDiagnostic {
	r := lspRangeOf(d.Subject, posOf(file))
	var related []relatedInformation
	for _, l := range d.Labels {
		if !l.Range.Start.IsValid() {
			continue
		}
		lfile := filepath.Clean(l.Range.File)
		related = append(related, relatedInformation{
			Location: location{URI: pathToURI(lfile), Range: lspRangeOf(l.Range, posOf(lfile))}, Message: l.Message,
		})
	}
	sev := 1
	switch d.Severity {
	case diag.Warning:
		sev = 2
	case diag.Note:
		sev = 3
	}
	out := lspDiagnostic{Range: r, Severity: sev, Code: string(d.Code), Source: "moec", Message: d.Summary, RelatedInformation: related}
	for _, n := range d.Notes {
		out.RelatedInformation = append(out.RelatedInformation, relatedInformation{
			Location: location{URI: pathToURI(file), Range: r}, Message: n,
		})
	}
	if d.Suggestion != "" {
		out.Message += "\nhelp: " + d.Suggestion
		out.Data = &diagnosticData{Suggestion: d.Suggestion}
	}
	return out
}

// lspRangeOf is r in ps, the zero range (the file's start) when r has no position.
func lspRangeOf(r diag.Range, ps positions) lspRange {
	if !r.Start.IsValid() {
		return lspRange{}
	}
	start := offsetOf(r.Start, ps)
	end := start
	if r.End.IsValid() {
		end = offsetOf(r.End, ps)
	}
	return ps.rangeOf(start, end)
}

// offsetOf is p's byte offset, recomputed from its line and column (an ast.Pos keeps both;
// the line and column are what every phase sets).
func offsetOf(p ast.Pos, ps positions) int {
	if p.Line-1 >= len(ps.lines) {
		return len(ps.text)
	}
	return min(ps.lines[max(p.Line-1, 0)]+max(p.Col-1, 0), len(ps.text))
}

// sortedFiles lists m's keys in order.
func sortedFiles[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
