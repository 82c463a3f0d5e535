package step

import (
	"errors"

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
