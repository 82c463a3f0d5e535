package diag

import (
	"errors"
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

// Diagnostic is one message about a user's input or run, in the shape of HCL's
// hcl.Diagnostic: what is wrong (Summary) under a stable Code, where (Subject, and the
// construct around it in Context), and the other places that explain it (Labels, each a
// range with its own message). Phases return diagnostics as values and keep going, so one
// run reports every problem.
//
// *Diagnostic is also an error, the one every user-facing refusal of moec is or wraps:
// errors.As(err, &d) with d a *Diagnostic finds its code and ranges, and CodeOf its code.
type Diagnostic struct {
	Severity Severity
	Code     Code
	Summary  string
	// Subject is where the problem is: the range the rendering marks with `^~~`. It is the
	// zero Range for a refusal about no place in a source (a corrupt checkpoint), and has a
	// File but no position for one about a whole file.
	Subject Range
	// Context, when set, is the construct around Subject (the block or call it sits in),
	// for tools that show more than the subject; the zero Range when there is none.
	Context Range
	// Labels are the other places that explain the problem ("first written here"), each
	// marked in the rendering beside the subject and written as fields by `moec check
	// --json`, never flattened into a note.
	Labels     []Label
	Notes      []string
	Suggestion string // e.g. "did you mean `heads`?"; empty when none
	// Err, when set, is the underlying cause (an *os.PathError, say): written after the
	// summary and reachable with errors.Is/As.
	Err error
}

// Label is a secondary place of a diagnostic with what it says about the problem.
type Label struct {
	Range   Range
	Message string // "first written here"
}

// Label appends a label at r to d and returns d, for chaining.
func (d *Diagnostic) Label(r Range, message string) *Diagnostic {
	d.Labels = append(d.Labels, Label{Range: r, Message: message})
	return d
}

// String is d's first line: `file:line:col: error[CODE]: summary`, and the cause after a
// colon when d has one.
func (d Diagnostic) String() string {
	var b strings.Builder
	if where := d.Subject.String(); where != "" {
		b.WriteString(where)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s[%s]: %s", d.Severity, d.Code, d.Summary)
	if d.Err != nil {
		b.WriteString(": ")
		b.WriteString(d.Err.Error())
	}
	return b.String()
}

// Error is d's first line with its suggestion in parentheses: the one-line form a
// command prints for a refusal it does not render with its source.
func (d *Diagnostic) Error() string {
	if d.Suggestion == "" {
		return d.String()
	}
	return d.String() + " (" + d.Suggestion + ")"
}

// Unwrap returns d's cause.
func (d *Diagnostic) Unwrap() error { return d.Err }

// String is r as a place an editor can jump to: `file:line:col`, just `file` for a whole
// file (0:0 would send an editor to a place that is not), or "" for no place.
func (r Range) String() string {
	switch {
	case r.Start.IsValid():
		return fmt.Sprintf("%s:%d:%d", r.File, r.Start.Line, r.Start.Col)
	case r.File != "":
		return r.File
	}
	return ""
}

// Runtimef returns an error diagnostic with a formatted summary and no position: a
// refusal of a run. A trailing error argument is not special: wrap a cause by setting Err
// on the result or with RuntimeWrap.
func Runtimef(code Code, format string, args ...any) *Diagnostic {
	return &Diagnostic{Severity: Error, Code: code, Summary: fmt.Sprintf(format, args...)}
}

// RuntimeWrap returns an error diagnostic like Runtimef's whose cause is err.
func RuntimeWrap(code Code, err error, format string, args ...any) *Diagnostic {
	return &Diagnostic{Severity: Error, Code: code, Summary: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of the first *Diagnostic in err's chain, or "".
func CodeOf(err error) Code {
	var d *Diagnostic
	if errors.As(err, &d) {
		return d.Code
	}
	return ""
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
	*l = append(*l, Diagnostic{Severity: Error, Code: code, Subject: r, Summary: fmt.Sprintf(format, args...)})
	return &(*l)[len(*l)-1]
}

// Warnf appends a warning at r.
func (l *List) Warnf(code Code, r Range, format string, args ...any) *Diagnostic {
	*l = append(*l, Diagnostic{Severity: Warning, Code: code, Subject: r, Summary: fmt.Sprintf(format, args...)})
	return &(*l)[len(*l)-1]
}

// Sort orders diagnostics by file, line, column, then code, keeping equal ones stable.
func (l List) Sort() {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Subject, l[j].Subject
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

// ListError is a diagnostic list as an error: one line per diagnostic. It unwraps to
// each diagnostic, so errors.As finds the first as a *Diagnostic.
type ListError List

func (e ListError) Error() string {
	var parts []string
	for _, d := range e {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, "\n")
}

// Unwrap returns each diagnostic of the list as an error.
func (e ListError) Unwrap() []error {
	out := make([]error, len(e))
	for i := range e {
		out[i] = &e[i]
	}
	return out
}
