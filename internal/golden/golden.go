// Package golden holds test output against txtar golden files: the comparison and the
// -update rewrite that every package with a generated golden archive needs, in one place.
package golden

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
)

// Archive holds got, every section of a golden file in order, against the file at path.
// With update it writes got there (the caller's comment says how to regenerate it);
// otherwise the file must have the same sections, by name and order, with the same
// contents, and each difference is reported as a diff.
func Archive(t testing.TB, path string, got *txtar.Archive, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(path, txtar.Format(got), 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		return
	}
	want, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
		return
	}
	names := func(a *txtar.Archive) []string {
		var out []string
		for _, f := range a.Files {
			out = append(out, f.Name)
		}
		return out
	}
	if d := cmp.Diff(names(want), names(got)); d != "" {
		t.Errorf("%s: sections differ (-golden +got; run go test -update and review the diff):\n%s", path, d)
		return
	}
	for i, f := range got.Files {
		if d := cmp.Diff(string(want.Files[i].Data), string(f.Data)); d != "" {
			t.Errorf("%s: section %s differs (-golden +got; run go test -update and review the diff):\n%s", path, f.Name, d)
		}
	}
}
