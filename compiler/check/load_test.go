package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
)

// TestLoadUnreadableRoot: a root file that cannot be read (missing, a directory) is one
// diagnostic about the file, written without a 0:0 position and naming the cause once.
func TestLoadUnreadableRoot(t *testing.T) {
	dir := t.TempDir()
	asDir := filepath.Join(dir, "dir.moe")
	if err := os.Mkdir(asDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, cause string
	}{
		{asDir, "is a directory"},
		{filepath.Join(dir, "missing.moe"), "no such file or directory"},
	} {
		_, _, diags := Load(tc.path, os.ReadFile)
		if len(diags) != 1 || diags[0].Code != diag.CodeImportUnreadable {
			t.Fatalf("%s: diags = %v", tc.path, diags)
		}
		want := filepath.Clean(tc.path) + ": error[E0218]: cannot read " + filepath.Clean(tc.path) + ": " + tc.cause
		if got := diags[0].String(); got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
		if strings.Count(diags[0].Summary, filepath.Base(tc.path)) != 1 {
			t.Errorf("the path is repeated in %q", diags[0].Summary)
		}
	}
}

// TestLoadEmptyFile: a file that declares nothing is a warning; one that only imports is
// not (it gathers other files), and neither is a file whose parse failed.
func TestLoadEmptyFile(t *testing.T) {
	files := map[string]string{
		"empty.moe":   "",
		"comment.moe": "// nothing here\n",
		"imports.moe": `import "m.moe"` + "\n",
		"m.moe":       "model m {\n  vocab = 256; d_model = 128; layers = 4; seq_len = 128\n  attention { heads = 4 }\n}\n",
		"broken.moe":  "model {\n",
	}
	read := func(name string) ([]byte, error) {
		if src, ok := files[filepath.ToSlash(name)]; ok {
			return []byte(src), nil
		}
		return nil, os.ErrNotExist
	}
	for _, tc := range []struct {
		path string
		warn bool
	}{{"empty.moe", true}, {"comment.moe", true}, {"imports.moe", false}, {"m.moe", false}, {"broken.moe", false}} {
		_, _, diags := Load(tc.path, read)
		got := false
		for _, d := range diags {
			if d.Code == diag.CodeEmptyFile {
				got = true
				if d.Severity != diag.Warning || d.Subject.File != tc.path || d.Subject.Start.IsValid() {
					t.Errorf("%s: %+v", tc.path, d)
				}
			}
		}
		if got != tc.warn {
			t.Errorf("%s: W9203 reported = %v, want %v (%v)", tc.path, got, tc.warn, diags)
		}
	}
}

// TestLoadAbsoluteImport: an absolute import is refused as written, never read and never
// joined to the importing file's folder; the suggestion spells it from that folder.
func TestLoadAbsoluteImport(t *testing.T) {
	files := map[string]string{
		"/proj/m/a.moe":      "import \"/proj/shared/c.moe\"\nimport \"b.moe\"\n",
		"/proj/m/b.moe":      "model b {\n  vocab = 256; d_model = 128; layers = 4; seq_len = 128\n  attention { heads = 4 }\n}\n",
		"/proj/shared/c.moe": "model c {\n  vocab = 256; d_model = 128; layers = 4; seq_len = 128\n  attention { heads = 4 }\n}\n",
	}
	var read []string
	_, _, diags := Load("/proj/m/a.moe", func(p string) ([]byte, error) {
		read = append(read, p)
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, os.ErrNotExist
	})
	if len(diags) != 1 || diags[0].Code != diag.CodeAbsoluteImport {
		t.Fatalf("diags = %v", diags)
	}
	d := diags[0]
	want := `/proj/m/a.moe:1:8: error[E0222]: import "/proj/shared/c.moe" is an absolute path; imports are relative to the importing file`
	if d.String() != want || d.Suggestion != `write the path from a.moe's folder: import "../shared/c.moe"` {
		t.Errorf("got  %s (%s)\nwant %s", d, d.Suggestion, want)
	}
	if strings.Contains(strings.Join(read, " "), "c.moe") {
		t.Errorf("the absolute import was read: %v", read)
	}
}
