package golden

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
)

// Section is one named part of a golden archive: an input, or what a test generated.
type Section struct {
	Name string
	Data []byte
}

// Files runs fn on every archive matching pattern, each as a subtest named after the file
// less its .txtar. An archive is a comment, its inputs, then its generated sections: fn
// gets every section by name (so it can read inputs, or see which optional outputs the
// archive asks for) and returns the generated sections in order. The sections before the
// first one fn generates are the inputs. Archive then holds the file to its comment, its
// inputs and exactly what fn generated, or with update writes that, so an output fn no
// longer generates is reported (and dropped by update) like one that differs or is missing.
func Files(t *testing.T, pattern string, update bool, fn func(t *testing.T, in map[string][]byte) []Section) {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files match %s (%v)", pattern, err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			old, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatalf("%v", err)
			}
			in := make(map[string][]byte, len(old.Files))
			for _, f := range old.Files {
				if _, dup := in[f.Name]; dup {
					t.Fatalf("%s: two sections named %s", path, f.Name)
				}
				in[f.Name] = f.Data
			}
			Archive(t, path, withOutputs(old, fn(t, in)), update)
		})
	}
}

// withOutputs is old with its generated sections replaced by gen: its comment, the
// sections before the first one gen names, then gen.
func withOutputs(old *txtar.Archive, gen []Section) *txtar.Archive {
	generated := make(map[string]bool, len(gen))
	for _, s := range gen {
		generated[s.Name] = true
	}
	out := &txtar.Archive{Comment: old.Comment}
	for _, f := range old.Files {
		if generated[f.Name] {
			break
		}
		out.Files = append(out.Files, f)
	}
	for _, s := range gen {
		out.Files = append(out.Files, txtar.File{Name: s.Name, Data: s.Data})
	}
	return out
}
