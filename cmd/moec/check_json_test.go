package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

// `moec check --json` writes one JSON object per diagnostic on standard output, with
// every field an editor needs, nothing on standard error, and the usual exit status.
func TestCheckJSON(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.moe", `model m {
  vocab = 256; d_model = 64; layers = 2; seq_len = 32
  attention { heads = 4 }
  ffn { hidden = 4 * d_model; activation = swiglu }
  moe { experts = 4; top_k = 2 }
}
`)
	bad := write("bad.moe", `model m {
  vocab = 256; d_model = 64; layers = 2; seq_len = 32
  attention { heads = 4 }
  moe { experts = 4; top_k = 5 }
}
cluster c { gpu = a100_40gbb; host_memory = 1024 }
`)
	twice := write("twice.moe", `model m {
  vocab = 256; d_model = 64; layers = 2; seq_len = 32
  vocab = 512
  attention { heads = 4 }
}
`)
	for _, tc := range []struct {
		name   string
		file   string
		status int
		want   []diagnosticJSON // in order; only these, compared whole
	}{
		{name: "clean", file: good, status: exitOK},
		{name: "errors", file: bad, status: exitInput, want: []diagnosticJSON{
			// Each in the innermost block around it: its context.
			{File: bad, Line: 4, Col: 30, EndLine: 4, EndCol: 31, Severity: "error", Code: "E0303",
				Message: "top_k (5) exceeds experts (4)", Notes: []string{}, Suggestion: "use top_k <= 4", Labels: []labelJSON{},
				Context: &rangeJSON{File: bad, Line: 4, Col: 3, EndLine: 4, EndCol: 33}},
			{File: bad, Line: 6, Col: 19, EndLine: 6, EndCol: 29, Severity: "error", Code: "E0403",
				Message: "gpu `a100_40gbb` is not in the device catalog", Notes: []string{}, Suggestion: "did you mean `a100_40gb`?", Labels: []labelJSON{},
				Context: &rangeJSON{File: bad, Line: 6, Col: 1, EndLine: 6, EndCol: 51}},
			{File: bad, Line: 6, Col: 45, EndLine: 6, EndCol: 49, Severity: "error", Code: "E0206",
				Message: "host_memory expects a size in bytes (e.g. 16GiB); `1024` has no unit", Notes: []string{}, Suggestion: "did you mean 1024GiB?", Labels: []labelJSON{},
				Context: &rangeJSON{File: bad, Line: 6, Col: 1, EndLine: 6, EndCol: 51}},
		}},
		// The place a key was first written is a label with its own range, not a note.
		{name: "labels", file: twice, status: exitInput, want: []diagnosticJSON{
			{File: twice, Line: 3, Col: 3, EndLine: 3, EndCol: 8, Severity: "error", Code: "E0202",
				Message: "`vocab` is written twice in model m", Notes: []string{},
				Labels:  []labelJSON{{rangeJSON: rangeJSON{File: twice, Line: 2, Col: 3, EndLine: 2, EndCol: 8}, Message: "first written here"}},
				Context: &rangeJSON{File: twice, Line: 1, Col: 1, EndLine: 5, EndCol: 2}},
		}},
		{name: "unreadable", file: filepath.Join(dir, "nope.moe"), status: exitInput, want: []diagnosticJSON{
			{File: filepath.Join(dir, "nope.moe"), Severity: "error", Code: "E0218",
				Message: "cannot read " + filepath.Join(dir, "nope.moe") + ": no such file or directory", Notes: []string{}, Labels: []labelJSON{}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run([]string{"check", "--json", tc.file}, &stdout, &stderr); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr is not empty:\n%s", stderr.String())
			}
			var got []diagnosticJSON
			for i, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
				if stdout.Len() == 0 {
					break
				}
				dec := json.NewDecoder(strings.NewReader(line))
				dec.DisallowUnknownFields()
				var d diagnosticJSON
				if err := dec.Decode(&d); err != nil {
					t.Fatalf("line %d is not one JSON object: %v\n%s", i+1, err, line)
				}
				// Every field is present in every object, empty or not; context only when
				// the diagnostic has one (a place inside a block has one).
				var fields map[string]any
				want := 11
				if d.Context != nil {
					want = 12
				}
				if err := json.Unmarshal([]byte(line), &fields); err != nil || len(fields) != want {
					t.Errorf("line %d has %d fields, want %d: %s", i+1, len(fields), want, line)
				}
				got = append(got, d)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("diagnostics:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// writeDiagnosticsJSON writes a diagnostic's context range when it has one and its cause
// after its summary, as the text rendering does.
func TestDiagnosticJSONContextAndCause(t *testing.T) {
	at := func(line, col int) ast.Pos { return ast.Pos{Line: line, Col: col} }
	d := diag.Diagnostic{Severity: diag.Error, Code: diag.CodeDuplicateKey, Summary: "s",
		Subject: diag.Range{File: "m.moe", Start: at(3, 3), End: at(3, 8)},
		Context: diag.Range{File: "m.moe", Start: at(1, 1), End: at(5, 2)}, Err: errors.New("cause")}
	var b bytes.Buffer
	if err := writeDiagnosticsJSON(&b, diag.List{d}); err != nil {
		t.Fatal(err)
	}
	want := `{"file":"m.moe","line":3,"col":3,"end_line":3,"end_col":8,"severity":"error","code":"E0202","message":"s: cause","notes":[],"suggestion":"","labels":[],"context":{"file":"m.moe","line":1,"col":1,"end_line":5,"end_col":2}}` + "\n"
	if b.String() != want {
		t.Errorf("got  %s\nwant %s", b.String(), want)
	}
}
