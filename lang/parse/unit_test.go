package parse

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

func TestNumbers(t *testing.T) {
	for _, tc := range []struct {
		src    string
		value  float64
		suffix string
	}{
		{"150k", 150, "k"}, {"3B", 3, "B"}, {"1.6T", 1.6, "T"}, {"2M", 2, "M"},
		{"40GiB", 40, "GiB"}, {"1TB", 1, "TB"}, {"1.6Tbps", 1.6, "Tbps"}, {"2TB/s", 2, "TB/s"},
		{"900GiB/s", 900, "GiB/s"}, {"312TFLOPS", 312, "TFLOPS"}, {"1e-4", 0.0001, ""},
		{"1.5E+3", 1500, ""}, {"2048", 2048, ""}, {"0.5", 0.5, ""}, {"5e-6", 5e-6, ""}, {"1e3k", 1000, "k"},
	} {
		x, diags := Expr(tc.src)
		if len(diags) > 0 {
			t.Errorf("%s: %v", tc.src, diags)
			continue
		}
		n, ok := x.(*ast.Number)
		if !ok || n.Value != tc.value || n.Suffix != tc.suffix || n.Text != tc.src {
			t.Errorf("%s: got %#v, want value %g suffix %q", tc.src, x, tc.value, tc.suffix)
		}
		if n != nil && (n.Pos() != ast.Pos{Offset: 0, Line: 1, Col: 1} || n.EndPos().Offset != len(tc.src)) {
			t.Errorf("%s: span %v-%v", tc.src, n.Pos(), n.EndPos())
		}
	}
}

// TestRatesNeedNoSpace checks that `/s` belongs to a byte-rate suffix only when it is one:
// `2TB/s` is a rate, `2TB / s` and `4 / s` are divisions.
func TestRatesNeedNoSpace(t *testing.T) {
	for src, want := range map[string]string{"2TB/s": "*ast.Number", "2TB / s": "*ast.Binary", "4/s": "*ast.Binary", "2k/s": "*ast.Binary"} {
		x, diags := Expr(src)
		if got := typeName(x); got != want || len(diags) > 0 {
			t.Errorf("%s: got %s %v, want %s", src, got, diags, want)
		}
	}
}

func typeName(x ast.Expr) string { return fmt.Sprintf("%T", x) }

func TestExprErrors(t *testing.T) {
	for src, code := range map[string]diag.Code{
		"":          diag.MissingValue,
		"4 *":       diag.UnexpectedToken,
		"(1":        diag.MissingClose,
		"1)":        diag.UnmatchedClose,
		"\"abc":     diag.UnterminatedString,
		"40Gib":     diag.UnknownSuffix,
		"1 2":       diag.UnexpectedToken,
		"f(a = )":   diag.UnexpectedToken,
		"- - 1":     diag.UnexpectedToken,
		"1.2.3":     diag.BadNumber,
		"1e999":     diag.BadNumber,
		"\"a\\qb\"": diag.BadEscape,
	} {
		_, diags := Expr(src)
		if len(diags) == 0 || diags[0].Code != code {
			t.Errorf("Expr(%q): got %v, want %s", src, diags, code)
		}
	}
}

// TestDeepNesting feeds brackets far deeper than MaxDepth: one diagnostic, no crash, and
// linear time.
func TestDeepNesting(t *testing.T) {
	const n = 200000
	for _, open := range []string{"[", "(", "{", "f("} {
		src := "model m {\n  x = " + strings.Repeat(open, n) + "\n}\n"
		start := time.Now()
		_, diags := File("deep.moe", []byte(src))
		if len(diags) == 0 || diags[0].Code != diag.NestingTooDeep {
			t.Errorf("%s: got %v", open, firstN(diags, 3))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", open, d)
		}
	}
	// Exactly MaxDepth levels are fine.
	src := "model m {\n  x = " + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + "\n}\n"
	if _, diags := File("ok.moe", []byte(src)); len(diags) != 0 {
		t.Errorf("depth %d: %v", MaxDepth, diags)
	}
	// A long flat chain of operators is not nesting.
	src = "model m {\n  x = 1" + strings.Repeat(" + 1", 20000) + "\n}\n"
	if _, diags := File("flat.moe", []byte(src)); len(diags) != 0 {
		t.Errorf("long chain: %v", firstN(diags, 3))
	}
}

func firstN(l diag.List, n int) diag.List { return l[:min(n, len(l))] }

// TestEveryErrorReported checks recovery: a file with one error per block reports them
// all, keeps the good entries, and the count does not depend on the fast path.
func TestEveryErrorReported(t *testing.T) {
	src := `model a {
  vocab = 256
  heads 4
  d_model = 128
}
cluster c {
  nodes = (1
  gpus_per_node = 8
}
train a on c {
  seed = 1 2
  data = "x.txt"
}
`
	f, diags := File("e.moe", []byte(src))
	if len(diags) != 3 {
		t.Fatalf("want 3 diagnostics, got %v", diags)
	}
	var keys []string
	for _, b := range f.Decls {
		for _, e := range b.Body {
			if a, ok := e.(*ast.Assign); ok {
				keys = append(keys, a.Key.Name)
			}
		}
	}
	if got := strings.Join(keys, " "); got != "vocab d_model gpus_per_node data" {
		t.Errorf("kept entries %q", got)
	}
}

func TestCommentsKept(t *testing.T) {
	src := "// a\nmodel m { // b\n  x = [1, // c\n  2] // d\n}\n// e"
	f, diags := File("c.moe", []byte(src))
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	var texts []string
	for _, c := range f.Comments {
		texts = append(texts, c.Text)
	}
	if got := strings.Join(texts, ","); got != "// a,// b,// c,// d,// e" {
		t.Errorf("comments %q", got)
	}
}

// checkInvariants is what FuzzParse asserts for any input.
func checkInvariants(t *testing.T, src []byte) {
	f, diags := File("fuzz.moe", src)
	if f == nil {
		t.Fatal("nil file")
	}
	for _, d := range diags {
		if d.Code == diag.InternalParserError {
			t.Fatalf("internal error on %q: %s %v", src, d.Message, d.Notes)
		}
		if d.Range.Start.Offset > len(src) || d.Range.End.Offset > len(src) || d.Range.End.Offset < d.Range.Start.Offset && d.Range.End.IsValid() {
			t.Fatalf("diagnostic range out of file: %v %+v", d, d.Range)
		}
		var b bytes.Buffer
		diag.Render(&b, d, src)
	}
	checkSpans(t, f, src)
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txtar")
	more, _ := filepath.Glob("../format/testdata/*.txtar")
	for _, path := range append(files, more...) {
		ar, err := txtar.ParseFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if file.Name == "input.moe" {
				f.Add(file.Data)
			}
		}
	}
	f.Fuzz(checkInvariants)
}
