package step

import (
	"errors"
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// Diagnose turns a Lower error into diagnostics positioned at the stage's declaration
// (where the layout applies), each naming what does not divide or which feature is not
// lowered, with the model's value where the error names one. Other errors pass through
// as one diagnostic.
func Diagnose(err error, st *program.Stage, layoutFrom string) diag.List {
	var ds diag.List
	r := diag.Range{}
	if st != nil {
		r = diag.Range{File: st.Decl.File, Start: st.Decl.Start, End: st.Decl.End}
	}
	var le *LayoutError
	if !errors.As(err, &le) {
		ds.Errorf(diag.CodeNotLowered, r, "%v", err)
		return ds
	}
	for _, p := range le.Problems {
		d := ds.Errorf(diag.CodeLayoutDivides, r, "the layout %s: %s", layoutFrom, p)
		if p.Key != "" {
			d.Notes = append(d.Notes, "the model's "+p.Key+" is what the "+p.Axis+" axis splits")
		}
		d.Suggestion = "choose a " + p.Axis + " size that divides " + p.What
		if p.Axis == "sp" {
			d.Suggestion = "choose a tp size that divides " + p.What + ", or turn sequence parallelism off"
		}
	}
	for _, u := range le.Unsupported {
		ds.Errorf(diag.CodeNotLowered, r, "the step program does not lower %s under %s: %s", u.Feature, layoutFrom, u.Why)
	}
	if b := le.Budget; b != nil {
		d := ds.Errorf(diag.CodeCacheBudget, r, "the layout %s: %s", layoutFrom, b)
		d.Suggestion = b.Suggestion()
	}
	return ds
}

// Code is the code a refusal of the whole layout is reported under: E0509 when the layout
// does not divide the model, E0511 when the unified cache's budget is too small, E0510
// for a feature the step program does not lower.
func (e *LayoutError) Code() diag.Code {
	switch {
	case len(e.Problems) > 0:
		return diag.CodeLayoutDivides
	case e.Budget != nil:
		return diag.CodeCacheBudget
	}
	return diag.CodeNotLowered
}

// Suggestion is the change that fixes e's first problem, or "" when there is none to
// suggest.
func (e *LayoutError) Suggestion() string {
	switch {
	case len(e.Problems) > 0:
		p := e.Problems[0]
		return fmt.Sprintf("choose a %s size that divides %s (%d)", p.Axis, p.What, p.Value)
	case e.Budget != nil:
		return e.Budget.Suggestion()
	}
	return ""
}

// Diagnostic is e as one error diagnostic at the stage's declaration at: summary, then e's
// text as its cause, under Code and with Suggestion.
func (e *LayoutError) Diagnostic(at diag.Range, summary string) *diag.Diagnostic {
	d := diag.RuntimeWrap(e.Code(), e, "%s", summary)
	d.Subject, d.Suggestion = at, e.Suggestion()
	return d
}
