package diag

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

// TestDiagnosticIsAnError: a *Diagnostic is an error whose text is its first line, its
// cause and its suggestion, and errors.As finds it through wrapping and inside a list.
func TestDiagnosticIsAnError(t *testing.T) {
	d := RuntimeWrap(CodeBadDataFile, fs.ErrPermission, "data file %s", "a.txt")
	d.Suggestion = "check its mode"
	if got, want := d.Error(), "error[E0605]: data file a.txt: permission denied (check its mode)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(d, fs.ErrPermission) {
		t.Error("the cause is not reachable with errors.Is")
	}
	at := &Diagnostic{Code: CodeUnknownKey, Summary: "s", Subject: Range{File: "m.moe", Start: pos(0, 2, 3)}}
	if got, want := at.Error(), "m.moe:2:3: error[E0201]: s"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	for _, err := range []error{
		fmt.Errorf("run: %w", d),
		List{{Severity: Warning, Code: CodeLastStageSize}, {Severity: Error, Code: CodeBadDataFile}}.Err(),
	} {
		var got *Diagnostic
		if !errors.As(err, &got) {
			t.Errorf("errors.As(%v) found no *Diagnostic", err)
		}
	}
	if c := CodeOf(List{{Severity: Error, Code: CodeDuplicateKey}}.Err()); c != CodeDuplicateKey {
		t.Errorf("CodeOf(list) = %q", c)
	}
	if CodeOf(errors.New("plain")) != "" {
		t.Error("CodeOf found a code in a plain error")
	}
}
