package parse

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"
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
		"":          diag.CodeMissingValue,
		"4 *":       diag.CodeUnexpectedToken,
		"(1":        diag.CodeMissingClose,
		"1)":        diag.CodeUnmatchedClose,
		"\"abc":     diag.CodeUnterminatedString,
		"40Gib":     diag.CodeUnknownSuffix,
		"1 2":       diag.CodeUnexpectedToken,
		"f(a = )":   diag.CodeUnexpectedToken,
		"- - 1":     diag.CodeUnexpectedToken,
		"1.2.3":     diag.CodeBadNumber,
		"1e999":     diag.CodeBadNumber,
		"\"a\\qb\"": diag.CodeBadEscape,
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
		if len(diags) == 0 || diags[0].Code != diag.CodeNestingTooDeep {
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
	// A long flat chain of operators is not nesting: MaxOperators of them are fine.
	src = "model m {\n  x = 1" + strings.Repeat(" + 1", MaxOperators) + "\n}\n"
	if _, diags := File("flat.moe", []byte(src)); len(diags) != 0 {
		t.Errorf("long chain: %v", firstN(diags, 3))
	}
}

// TestLongExpression: a value with more than MaxOperators operators is one E0116 at the
// first operator past the cap, wherever it sits, and the rest of the file is kept. The
// first case is the 1.2 MB file that used to crash `moec check` with a stack overflow.
func TestLongExpression(t *testing.T) {
	chain := func(n int, op string) string { return "1" + strings.Repeat(op+"1", n) }
	for _, tc := range []struct {
		name  string
		value string
		col   int // column of the reported operator, counted from the value's start
	}{
		{"flat 600k", chain(600000, "+"), 2*MaxOperators + 2},
		{"just over", chain(MaxOperators+1, "+"), 2*MaxOperators + 2},
		{"products", chain(MaxOperators+5, "*"), 2*MaxOperators + 2},
		{"inside parens", "(" + chain(MaxOperators+1, "-") + ")", 2*MaxOperators + 3},
		{"list element", "[1, " + chain(MaxOperators+1, "/") + "]", 2*MaxOperators + 6},
		{"constructor argument", "adamw { lr = " + chain(MaxOperators+1, "+") + " }", 2*MaxOperators + 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "model m {\n  vocab = 256\n  x = " + tc.value + "\n  d_model = 128\n}\ncluster c { nodes = 1 }\n"
			f, diags := File("long.moe", []byte(src))
			if len(diags) != 1 || diags[0].Code != diag.CodeExprTooLong {
				t.Fatalf("want one E0116, got %d: %v", len(diags), firstN(diags, 3))
			}
			if at := diags[0].Subject.Start; at.Line != 3 || at.Col != len("  x = ")+tc.col {
				t.Errorf("reported at %s, want 3:%d", at, len("  x = ")+tc.col)
			}
			if len(f.Decls) != 2 {
				t.Fatalf("want both declarations kept, got %d", len(f.Decls))
			}
			m := f.Decls[0]
			if !m.Broken || len(m.Body) != 2 {
				t.Errorf("model: broken=%v with %d entries; want broken with vocab and d_model", m.Broken, len(m.Body))
			}
			if f.Decls[1].Broken {
				t.Error("the cluster after it is marked broken")
			}
		})
	}
	if _, diags := Expr(chain(MaxOperators+1, "+")); len(diags) != 1 || diags[0].Code != diag.CodeExprTooLong {
		t.Errorf("Expr: want one E0116, got %v", firstN(diags, 3))
	}
}

// TestLongExpressionMemory: refusing a 1.2 MB chain costs about what scanning it costs,
// not the gigabytes the grammar would spend on 600,000 operands.
func TestLongExpressionMemory(t *testing.T) {
	src := []byte("model m {\n  vocab = 1" + strings.Repeat("+1", 600000) + "\n}\n")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, diags := File("long.moe", src)
	runtime.ReadMemStats(&after)
	if len(diags) != 1 || diags[0].Code != diag.CodeExprTooLong {
		t.Fatalf("want one E0116, got %v", firstN(diags, 3))
	}
	// 1.2M tokens of 64 bytes: 77 MB. The grammar alone spent gigabytes on it.
	const limit = 200 << 20
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
		t.Errorf("parsing a %d-byte file allocated %d MB, want under %d MB", len(src), alloc>>20, limit>>20)
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
		if d.Code == diag.CodeInternalParserError {
			t.Fatalf("internal error on %q: %s %v", src, d.Summary, d.Notes)
		}
		if d.Subject.Start.Offset > len(src) || d.Subject.End.Offset > len(src) || d.Subject.End.Offset < d.Subject.Start.Offset && d.Subject.End.IsValid() {
			t.Fatalf("diagnostic range out of file: %v %+v", d, d.Subject)
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

// TestNoGrammarNamesReachUsers: participle names the grammar's Go types in its messages
// (`too many iterations of GOpTerm*`); every diagnostic says it in moec's words instead.
func TestNoGrammarNamesReachUsers(t *testing.T) {
	grammarName := regexp.MustCompile(`\bG[A-Z][A-Za-z]*`)
	// A chain of over a million operands used to reach participle's repetition cap.
	src := "model m {\n  vocab = 1" + strings.Repeat("+1", 1000001) + "\n}\n"
	_, diags := File("huge.moe", []byte(src))
	if len(diags) != 1 || diags[0].Code != diag.CodeExprTooLong {
		t.Errorf("million-operand chain: want one E0116, got %v", firstN(diags, 3))
	}
	for _, d := range diags {
		if grammarName.MatchString(d.Summary) {
			t.Errorf("grammar name in %q", d.Summary)
		}
	}
}

// TestTooManyRepeats: participle's cap on a repetition (a million `;` in a row, a list
// of a million elements) is E0117 in moec's words. Such an input costs participle about
// a gigabyte, so the error is built here rather than provoked.
func TestTooManyRepeats(t *testing.T) {
	for _, rule := range []string{"GOpTerm*", `(<nl> | ";")*`, "GEntry*"} {
		p := &parser{name: "r.moe"}
		at := lexer.Position{Filename: "r.moe", Offset: 12, Line: 2, Column: 3}
		p.syntaxError(participle.Errorf(at, "too many iterations of %s (> %d)", rule, participle.MaxIterations), chunk{}, "")
		if len(p.diags) != 1 {
			t.Fatalf("%s: %v", rule, p.diags)
		}
		d := p.diags[0]
		want := fmt.Sprintf("more than %d entries, separators or list elements in a row", participle.MaxIterations)
		if d.Code != diag.CodeTooManyRepeats || d.Summary != want || d.Subject.Start.Line != 2 || d.Subject.Start.Col != 3 {
			t.Errorf("%s: got %s at %s", rule, d, d.Subject.Start)
		}
	}
	// Any other participle message loses the names of grammar rules.
	p := &parser{name: "r.moe"}
	p.syntaxError(participle.Errorf(lexer.Position{Line: 1, Column: 1}, "branch GOpTerm was accepted but did not progress"), chunk{}, "")
	if len(p.diags) != 1 || strings.Contains(p.diags[0].Summary, "GOpTerm") {
		t.Errorf("got %v", p.diags)
	}
}

// TestDistillHeader: `distill` after a stage's name marks a distillation stage; a stage
// may still be named distill.
func TestDistillHeader(t *testing.T) {
	src := "train t on c {\n  stage s distill from a { }\n  stage distill from a { }\n}\n"
	f, diags := File("d.moe", []byte(src))
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	var got []string
	for _, e := range f.Decls[0].Body {
		b := e.(*ast.Block)
		got = append(got, fmt.Sprintf("%s distill=%v from=%s", b.Name.Name, b.Distill != nil, b.From.Name))
	}
	if want := "s distill=true from=a; distill distill=false from=a"; strings.Join(got, "; ") != want {
		t.Errorf("headers %q, want %q", strings.Join(got, "; "), want)
	}
}
