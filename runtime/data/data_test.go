package data

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestGlob(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"a.go": "a", "x/b.go": "b", "x/y/c.go": "c", "x/y/c.txt": "t", "z/d.go": "d",
	})
	rel := func(files []string) []string {
		var out []string
		for _, f := range files {
			r, _ := filepath.Rel(dir, f)
			out = append(out, filepath.ToSlash(r))
		}
		return out
	}
	cases := map[string][]string{
		"**/*.go":      {"a.go", "x/b.go", "x/y/c.go", "z/d.go"},
		"x/**/*.go":    {"x/b.go", "x/y/c.go"},
		"x/**":         {"x/b.go", "x/y/c.go", "x/y/c.txt"},
		"*.go":         {"a.go"},
		"x/*/c.*":      {"x/y/c.go", "x/y/c.txt"},
		"**/y/*.txt":   {"x/y/c.txt"},
		"nope/**/*.go": nil,
	}
	for pat, want := range cases {
		got, err := Glob(pat, dir)
		if err != nil {
			t.Fatalf("Glob(%q): %v", pat, err)
		}
		if !slices.Equal(rel(got), want) {
			t.Errorf("Glob(%q) = %v, want %v", pat, rel(got), want)
		}
	}
	t.Setenv("MOEC_TEST_DATA", dir)
	got, err := Glob("${MOEC_TEST_DATA}/z/*.go", "")
	if err != nil || len(got) != 1 {
		t.Errorf("Glob with $VAR = %v, %v", got, err)
	}
	if _, err := Glob("$MOEC_SURELY_UNSET_VAR/x", ""); err == nil || !strings.Contains(err.Error(), "MOEC_SURELY_UNSET_VAR") {
		t.Errorf("unset var: %v", err)
	}
}

func TestGOROOTGlob(t *testing.T) {
	files, err := Glob("$GOROOT/src/**/*.go", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 1000 {
		t.Fatalf("$GOROOT/src/**/*.go matched %d files", len(files))
	}
}

func TestOpen(t *testing.T) {
	files := map[string]string{"bin/blob.go": "ab\x00cd"}
	for i := 0; i < 40; i++ {
		files[fmt.Sprintf("f%02d.go", i)] = strings.Repeat(fmt.Sprintf("package p%d\n", i), 20)
	}
	dir := writeTree(t, files)
	c, err := Open(Options{Glob: "**/*.go", BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// 41 files sorted: bin/blob.go first, then f00..f39; indices 19 and 39 are held out.
	if c.Skipped != 1 || c.TrainFiles+c.ValFiles != 40 || c.ValFiles != 2 {
		t.Errorf("skipped %d, train %d, val %d files", c.Skipped, c.TrainFiles, c.ValFiles)
	}
	if strings.Contains(string(c.Train), "\x00") || len(c.Val) == 0 {
		t.Error("binary text included or no validation text")
	}
	// Determinism: same (seed, step, window) gives the same batch; other keys differ; a
	// step split into micro-batches sees the same windows.
	a, _ := c.Batch(1, 5, 0, 4, 16)
	b, _ := c.Batch(1, 5, 0, 4, 16)
	d, _ := c.Batch(1, 6, 0, 4, 16)
	e, _ := c.Batch(2, 5, 0, 4, 16)
	if !slices.Equal(a, b) || slices.Equal(a, d) || slices.Equal(a, e) || len(a) != 4*17 {
		t.Error("batches not keyed by (seed, step)")
	}
	lo, _ := c.Batch(1, 5, 0, 2, 16)
	hi, _ := c.Batch(1, 5, 2, 2, 16)
	if !slices.Equal(a, append(lo, hi...)) {
		t.Error("windows depend on the micro-batch split")
	}
	for i := 0; i < 4; i++ {
		row := a[i*17 : (i+1)*17]
		var s []byte
		for _, v := range row {
			if v < 0 || v > 255 {
				t.Fatalf("token %d out of byte range", v)
			}
			s = append(s, byte(v))
		}
		if !strings.Contains(string(c.Train), string(s)) {
			t.Errorf("window %q is not a slice of the training text", s)
		}
	}
	w, err := c.ValWindows(16, 3)
	if err != nil || len(w) != 3 || len(w[0]) != 17 {
		t.Fatalf("ValWindows = %d windows, %v", len(w), err)
	}
	w2, _ := c.ValWindows(16, 3)
	if !slices.Equal(w[2], w2[2]) {
		t.Error("validation windows not stable")
	}
	if _, err := c.ValWindows(1<<20, 3); diag.CodeOf(err) != diag.CodeEmptyCorpus {
		t.Errorf("oversized window: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := writeTree(t, map[string]string{"a.bin": "\x00\x01", "b.bin": "x\x00", "c.txt": "hello world\n", "empty.val": ""})
	at := diag.Range{File: "t.moe", Start: ast.Pos{Line: 9, Col: 14}}
	cases := []struct {
		opt  Options
		code diag.Code
		want string
	}{
		{Options{Glob: "*.nothing", BaseDir: dir}, diag.CodeEmptyCorpus, "matches no files in " + dir + " or the working directory"},
		{Options{Glob: "*.bin", BaseDir: dir}, diag.CodeEmptyCorpus, "2 binary files skipped"},
		{Options{Glob: "*.txt", ValGlob: "*.md", BaseDir: dir}, diag.CodeEmptyCorpus, "validation glob"},
		{Options{Glob: "[", BaseDir: dir}, diag.CodeEmptyCorpus, "syntax error"},
		// val_data that holds no text is refused where it is written, never replaced by a
		// slice of the training text.
		{Options{Glob: "*.txt", ValGlob: "*.val", BaseDir: dir, ValSource: at}, diag.CodeEmptyCorpus, "t.moe:9:14: error[E0604]: validation glob \"*.val\" matches 1 file, which is empty"},
		{Options{Glob: "*.txt", ValGlob: "*.bin", BaseDir: dir, ValSource: at}, diag.CodeEmptyCorpus, "t.moe:9:14: error[E0604]: validation glob \"*.bin\" matches 2 files, none of which holds text (2 binary)"},
		{Options{Glob: "*.txt", ValGlob: "*.md", BaseDir: dir, ValSource: at}, diag.CodeEmptyCorpus, "t.moe:9:14: error[E0604]: validation glob \"*.md\" matches no files"},
	}
	for _, c := range cases {
		_, err := Open(c.opt)
		if diag.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want %s %q", c.opt, err, c.code, c.want)
		}
	}
	// A relative glob falls back to the working directory (here the package directory).
	c, err := Open(Options{Glob: "data_test.go", BaseDir: dir})
	if err != nil || c.TrainFiles != 1 {
		t.Errorf("working-directory fallback: %v", err)
	}
	// One text file: train on 99%, validate on the last 1%.
	c, err = Open(Options{Glob: "*.txt", BaseDir: dir})
	if err != nil || len(c.Train)+len(c.Val) != 12 || len(c.Val) != 1 {
		t.Errorf("single file split: %v", err)
	}
	if _, err := c.Batch(1, 1, 0, 1, 100); diag.CodeOf(err) != diag.CodeEmptyCorpus {
		t.Errorf("window longer than the corpus: %v", err)
	}
	if os.Getuid() != 0 {
		p := filepath.Join(dir, "c.txt")
		os.Chmod(p, 0)
		defer os.Chmod(p, 0o644)
		if _, err := Open(Options{Glob: "*.txt", BaseDir: dir}); diag.CodeOf(err) != diag.CodeBadDataFile {
			t.Errorf("unreadable file: %v", err)
		}
	}
}
