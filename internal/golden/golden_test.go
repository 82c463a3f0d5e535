package golden

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
)

// recorder is a testing.TB that keeps what the helper reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

func TestArchive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.txtar")
	got := &txtar.Archive{Comment: []byte("regenerate with -update\n"),
		Files: []txtar.File{{Name: "a", Data: []byte("one\n")}, {Name: "b", Data: []byte("two\n")}}}
	Archive(t, path, got, true)
	Archive(t, path, got, false) // what was written matches

	for _, c := range []struct {
		name  string
		files []txtar.File
		want  string
	}{
		{"content", []txtar.File{{Name: "a", Data: []byte("one\n")}, {Name: "b", Data: []byte("three\n")}}, "section b differs"},
		{"missing", []txtar.File{{Name: "a", Data: []byte("one\n")}}, "sections differ"},
		{"order", []txtar.File{{Name: "b", Data: []byte("two\n")}, {Name: "a", Data: []byte("one\n")}}, "sections differ"},
	} {
		r := &recorder{TB: t}
		Archive(r, path, &txtar.Archive{Files: c.files}, false)
		if len(r.errs) != 1 || !strings.Contains(r.errs[0], c.want) {
			t.Errorf("%s: reported %q, want one error containing %q", c.name, r.errs, c.want)
		}
	}
	r := &recorder{TB: t}
	Archive(r, filepath.Join(t.TempDir(), "none.txtar"), got, false)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "-update") {
		t.Errorf("missing golden file: reported %q", r.errs)
	}
}
