package diag

import (
	"fmt"
	"sort"
	"strings"

	"github.com/moec-dev/moec/lang/ast"
)

// Severity of a diagnostic.
type Severity int

const (
	Error Severity = iota
	Warning
	Note
)

func (s Severity) String() string {
	switch s {
	case Error:
		return "error"
	case Warning:
		return "warning"
	default:
		return "note"
	}
}

// Range is a source range in a named file.
type Range struct {
	File  string
	Start ast.Pos
	End   ast.Pos
}

// RangeOf returns the range covered by n in file.
func RangeOf(file string, n ast.Node) Range {
	return Range{File: file, Start: n.Pos(), End: n.EndPos()}
}

// Diagnostic is one message about a user's input. Diagnostics are values: phases return
// them and keep going, so one run reports every problem.
type Diagnostic struct {
	Severity   Severity
	Code       Code
	Message    string
	Range      Range
	Notes      []string
	Suggestion string // e.g. "did you mean `heads`?"; empty when none
}

func (d Diagnostic) String() string {
	var b strings.Builder
	switch {
	case d.Range.Start.IsValid():
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Range.File, d.Range.Start.Line, d.Range.Start.Col)
	case d.Range.File != "":
		// About a whole file (one that cannot be read, one that declares nothing): no
		// line or column to point at, and 0:0 would send an editor to a place that is not.
		fmt.Fprintf(&b, "%s: ", d.Range.File)
	}
	fmt.Fprintf(&b, "%s[%s]: %s", d.Severity, d.Code, d.Message)
	return b.String()
}

// List is an ordered collection of diagnostics.
type List []Diagnostic

// HasErrors reports whether any diagnostic is an error.
func (l List) HasErrors() bool {
	for _, d := range l {
		if d.Severity == Error {
			return true
		}
	}
	return false
}

// Errorf appends an error at r.
func (l *List) Errorf(code Code, r Range, format string, args ...any) *Diagnostic {
	*l = append(*l, Diagnostic{Severity: Error, Code: code, Range: r, Message: fmt.Sprintf(format, args...)})
	return &(*l)[len(*l)-1]
}

// Warnf appends a warning at r.
func (l *List) Warnf(code Code, r Range, format string, args ...any) *Diagnostic {
	*l = append(*l, Diagnostic{Severity: Warning, Code: code, Range: r, Message: fmt.Sprintf(format, args...)})
	return &(*l)[len(*l)-1]
}

// Sort orders diagnostics by file, line, column, then code, keeping equal ones stable.
func (l List) Sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Range, l[j].Range
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Start.Line != b.Start.Line {
			return a.Start.Line < b.Start.Line
		}
		if a.Start.Col != b.Start.Col {
			return a.Start.Col < b.Start.Col
		}
		return l[i].Code < l[j].Code
	})
}

// Err returns the list as an error when it holds errors, else nil.
func (l List) Err() error {
	if !l.HasErrors() {
		return nil
	}
	return ListError(l)
}

// ListError wraps a diagnostic list as an error.
type ListError List

func (e ListError) Error() string {
	var parts []string
	for _, d := range e {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, "\n")
}
