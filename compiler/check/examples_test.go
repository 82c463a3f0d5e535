package check

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/diag"
)

// TestCodeExamples loads every .moe example of lang/diag/examples (the example `moec
// explain CODE` prints) and holds it to its code: the parser or the checker reports that
// code and no other, and, where the example marks a line with `// ERROR CODE`, reports it
// on that line. The txtar examples (command lines) run in cmd/moec's tests.
func TestCodeExamples(t *testing.T) {
	for _, ex := range diag.Examples() {
		if ex.IsArchive() {
			continue
		}
		t.Run(ex.File, func(t *testing.T) {
			first, _, _ := strings.Cut(ex.Text, "\n")
			if !strings.HasPrefix(first, "//") {
				t.Errorf("the first line is not a comment saying what is wrong: %q", first)
			}
			_, sources, diags := Load(ex.File, func(name string) ([]byte, error) {
				if name == ex.File {
					return []byte(ex.Text), nil
				}
				return nil, fs.ErrNotExist
			})
			var rendered bytes.Buffer
			diag.RenderAll(&rendered, diags, sources)
			if len(diags) == 0 {
				t.Fatalf("no diagnostic; want %s", ex.Code)
			}
			marked := markedLines(ex.Text, ex.Code)
			for _, d := range diags {
				if d.Code != ex.Code {
					t.Errorf("reports %s besides %s:\n%s", d.Code, ex.Code, rendered.String())
					continue
				}
				if len(marked) > 0 && !marked[d.Subject.Start.Line] {
					t.Errorf("reports %s on line %d, not on a line marked `// ERROR %s`:\n%s", d.Code, d.Subject.Start.Line, ex.Code, rendered.String())
				}
			}
		})
	}
}

// markedLines returns the lines of src marked `// ERROR code`.
func markedLines(src string, code diag.Code) map[int]bool {
	out := map[int]bool{}
	for i, line := range strings.Split(src, "\n") {
		if m := inlineRE.FindStringSubmatch(line); m != nil && containsStr(strings.Fields(m[1]), string(code)) {
			out[i+1] = true
		}
	}
	return out
}
