package step

import (
	"errors"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// TestLayoutErrorDiagnostic: a refused layout becomes one *diag.Diagnostic under the code
// of its first problem, with the suggestion that fixes it, and the LayoutError stays
// reachable as its cause.
func TestLayoutErrorDiagnostic(t *testing.T) {
	at := diag.Range{File: "m.moe"}
	for _, tc := range []struct {
		le   *LayoutError
		code diag.Code
		sugg string
	}{
		{&LayoutError{Problems: []Problem{{Axis: "tp", Size: 3, What: "heads", Value: 4}}}, diag.CodeLayoutDivides, "choose a tp size that divides heads (4)"},
		{&LayoutError{Unsupported: []Unsupported{{Feature: "mla", Why: "not yet"}}}, diag.CodeNotLowered, ""},
	} {
		var err error = tc.le.Diagnostic(at, "stage s cannot train")
		var d *diag.Diagnostic
		var le *LayoutError
		if !errors.As(err, &d) || d.Code != tc.code || d.Suggestion != tc.sugg || d.Subject != at {
			t.Errorf("%v: diagnostic %+v, want code %s, suggestion %q", tc.le, d, tc.code, tc.sugg)
		}
		if !errors.As(err, &le) || le != tc.le {
			t.Errorf("%v: the LayoutError is not the cause", tc.le)
		}
	}
	// Diagnose gives each problem a diagnostic of its own.
	le := &LayoutError{Problems: []Problem{{Axis: "tp", Size: 3, What: "heads", Value: 4}, {Axis: "pp", Size: 3, What: "layers", Value: 4}}}
	if ds := Diagnose(le, &program.Stage{}, "tp=3"); len(ds) != 2 || ds[0].Code != diag.CodeLayoutDivides {
		t.Errorf("Diagnose = %v", ds)
	}
}
