package golden

import (
	"fmt"
	"os"
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

// upper generates `out` (input.moe and b.moe upper-cased) and, when the archive asks for
// it with a section of that name, `extra`.
func upper(t *testing.T, in map[string][]byte) []Section {
	gen := []Section{{Name: "out", Data: []byte(strings.ToUpper(string(in["input.moe"]) + string(in["b.moe"])))}}
	if _, ok := in["extra"]; ok {
		gen = append(gen, Section{Name: "extra", Data: []byte("x\n")})
	}
	return gen
}

func TestFilesUpdateThenCompare(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Inputs in their order and the comment are kept; a stale output (`gone`, after the
	// first generated section) is dropped; `out` is regenerated and `extra` kept in place.
	write("one.txtar", "keep me\n-- input.moe --\na\n-- b.moe --\nb\n-- out --\nstale\n-- gone --\nold\n")
	write("two.txtar", "-- input.moe --\nc\n-- out --\nC\n-- extra --\nold\n")
	write("new.txtar", "-- input.moe --\nd\n")
	Files(t, filepath.Join(dir, "*.txtar"), true, upper)
	for name, want := range map[string]string{
		"one.txtar": "keep me\n-- input.moe --\na\n-- b.moe --\nb\n-- out --\nA\nB\n",
		"two.txtar": "-- input.moe --\nc\n-- out --\nC\n-- extra --\nx\n",
		"new.txtar": "-- input.moe --\nd\n-- out --\nD\n",
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Errorf("%s after update:\n%s\nwant\n%s", name, b, want)
		}
	}
	Files(t, filepath.Join(dir, "*.txtar"), false, upper) // what was written matches
}

func TestFilesReports(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.txtar")
	if err := os.WriteFile(path, []byte("-- input.moe --\na\n-- out --\nA\n-- extra --\nx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		gen  []Section
		want string
	}{
		{"differs", []Section{{"out", []byte("B\n")}, {"extra", []byte("x\n")}}, "section out differs"},
		{"missing", []Section{{"out", []byte("A\n")}, {"extra", []byte("x\n")}, {"more", []byte("m\n")}}, "sections differ"},
		{"stale", []Section{{"out", []byte("A\n")}}, "sections differ"},
		{"order", []Section{{"extra", []byte("x\n")}, {"out", []byte("A\n")}}, "sections differ"},
	} {
		r := &recorder{TB: t}
		Archive(r, path, withOutputs(old, c.gen), false)
		if len(r.errs) != 1 || !strings.Contains(r.errs[0], c.want) {
			t.Errorf("%s: reported %q, want one error containing %q", c.name, r.errs, c.want)
		}
	}
	r := &recorder{TB: t}
	Archive(r, path, withOutputs(old, []Section{{"out", []byte("A\n")}, {"extra", []byte("x\n")}}), false)
	if len(r.errs) != 0 {
		t.Errorf("unchanged outputs: reported %q", r.errs)
	}
}
