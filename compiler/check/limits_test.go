package check

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
)

// limitsBase is a complete model and cluster the generated inputs below build on.
const limitsBase = `model m0 {
  vocab = 256; d_model = 128; layers = 4; seq_len = 128
  attention { heads = 4 }
  ffn { hidden = 4 * d_model }
}
cluster local { gpu = cpu; ranks = 1; host_memory = 16GiB }
`

// stageChain is a train of n stages, each from the one before, declared last first (the
// order that made the old curriculum checks quadratic in both passes).
func stageChain(n int) string {
	var b strings.Builder
	b.WriteString(limitsBase)
	b.WriteString("train m0 on local {\n  tokens_per_batch = 8 * 128; precision = fp32; data = \"x\"\n")
	for i := n - 1; i > 0; i-- {
		fmt.Fprintf(&b, "  stage s%d from s%d { tokens = 1024 }\n", i, i-1)
	}
	b.WriteString("  stage s0 { tokens = 1024 }\n}\n")
	return b.String()
}

// extendsChain is n models, each extending the one before, declared last first.
func extendsChain(n int) string {
	var b strings.Builder
	for i := n - 1; i > 0; i-- {
		fmt.Fprintf(&b, "model m%d extends m%d { layers = %d }\n", i, i-1, i%7+1)
	}
	b.WriteString(limitsBase)
	return b.String()
}

// loadString parses and checks src as one file, as `moec check` does.
func loadString(src string) (*program.Program, diag.List) {
	prog, _, diags := Load("t.moe", func(string) ([]byte, error) { return []byte(src), nil })
	return prog, diags
}

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestSyntaxErrorHidesMissingKeys: a key the parser dropped after a syntax error is not
// reported again as missing (E0212), in the block, its declaration, or a model that
// extends it; a key the user did leave out still is.
func TestSyntaxErrorHidesMissingKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []diag.Code
	}{{
		name: "value of a required key",
		src:  "model m {\n  vocab = 256; d_model = 128; layers = 4\n  seq_len = 128 128\n  attention { heads = 4 }\n}\n",
		want: []diag.Code{diag.CodeUnexpectedToken},
	}, {
		name: "inside a section",
		src:  "model m {\n  vocab = 256; d_model = 128; layers = 4; seq_len = 128\n  attention { heads = 4 + }\n}\n",
		want: []diag.Code{diag.CodeUnexpectedToken},
	}, {
		name: "a whole body cut short",
		src:  "model m {\n  vocab = 256 d_model = 128 layers = 4 seq_len = 128\n  attention { heads = 4 }\n}\n",
		want: []diag.Code{diag.CodeMissingSeparator, diag.CodeMissingSeparator, diag.CodeMissingSeparator},
	}, {
		name: "a model extending a broken one",
		src:  "model base {\n  vocab = 256; d_model = 128; layers = (4\n  seq_len = 128\n  attention { heads = 4 }\n}\nmodel child extends base { }\n",
		want: []diag.Code{diag.CodeMissingClose},
	}, {
		name: "an expression past the operator cap",
		src:  "model m {\n  vocab = 1" + strings.Repeat("+1", parse.MaxOperators+1) + "\n  d_model = 128; layers = 4; seq_len = 128\n  attention { heads = 4 }\n}\n",
		want: []diag.Code{diag.CodeExprTooLong},
	}, {
		name: "a train's stage",
		src: limitsBase + "train m0 on local {\n  tokens_per_batch = 8 * 128; precision = fp32\n  data = \"x\" \"y\"\n" +
			"  stage s0 { tokens = }\n}\n",
		want: []diag.Code{diag.CodeUnexpectedToken, diag.CodeMissingValue},
	}, {
		name: "no syntax error: a missing key is still reported",
		src:  "model m {\n  vocab = 256; d_model = 128; layers = 4\n  attention { heads = 4 }\n}\n",
		want: []diag.Code{diag.CodeMissingKey},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := loadString(tc.src)
			var got []diag.Code
			for _, d := range diags {
				got = append(got, d.Code)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v:\n%v", got, tc.want, diags.Err())
			}
		})
	}
}

// TestLongChainEvaluatesWithoutRecursion: the parser folds `1 + 1 + …` to the left, a
// tree as deep as the chain is long; the checker walks it with a loop. The tree is built
// here far longer than the parser allows, with a stack far smaller than Go's default, so
// evaluation that recursed down the chain dies of a stack overflow.
func TestLongChainEvaluatesWithoutRecursion(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(32 << 20))
	const n = 300000
	for _, tc := range []struct {
		name      string
		bad       int // index of an operand that is a string, or -1
		wantVocab int64
		wantCodes string
	}{
		{"sum", -1, n + 1, "[]"},
		{"a string in the middle", n / 2, 0, "[E0205]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, diags := parse.File("t.moe", []byte(limitsBase))
			if len(diags) > 0 {
				t.Fatal(diags.Err())
			}
			vocab := f.Decls[0].Body[0].(*ast.Assign)
			span := vocab.Value.(*ast.Number).Span
			one := &ast.Number{Span: span, Text: "1", Value: 1}
			var x ast.Expr = one
			for i := 0; i < n; i++ {
				var y ast.Expr = one
				if i == tc.bad {
					y = &ast.String{Span: span, Value: "x"}
				}
				x = &ast.Binary{Span: span, Op: "+", X: x, Y: y}
			}
			vocab.Value = x
			prog, diags := Check(f)
			var codes []diag.Code
			for _, d := range diags {
				codes = append(codes, d.Code)
			}
			if fmt.Sprint(codes) != tc.wantCodes {
				t.Fatalf("diagnostics %v, want %s", codes, tc.wantCodes)
			}
			if tc.bad < 0 && (prog.Models["m0"] == nil || prog.Models["m0"].Vocab != tc.wantVocab) {
				t.Errorf("vocab = %v, want %d", prog.Models["m0"], tc.wantVocab)
			}
		})
	}
}

// TestLongStageChain: a curriculum of 20,000 stages, declared last first, checks clean
// and comes out parents first, for an allocation that grows with the stages, not with
// their square (the old cycle search built a map of every stage's whole chain: gigabytes).
func TestLongStageChain(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a 20,000-stage curriculum")
	}
	const n = 20000
	src := stageChain(n)
	var prog *program.Program
	var diags diag.List
	bytes := allocated(func() { prog, diags = loadString(src) })
	if len(diags) > 0 {
		t.Fatalf("%d diagnostics, first %v", len(diags), diags[0])
	}
	stages := prog.Trains["m0"].Stages
	if len(stages) != n {
		t.Fatalf("%d stages, want %d", len(stages), n)
	}
	for i, s := range stages {
		if want := fmt.Sprintf("s%d", i); s.Name != want {
			t.Fatalf("stage %d is %s, want %s (parents first)", i, s.Name, want)
		}
	}
	// About 30 KB a stage, parse included; the quadratic search alone allocated gigabytes.
	if limit := uint64(n) * 80 << 10; bytes > limit {
		t.Errorf("allocated %d MB for %d stages, want under %d MB", bytes>>20, n, limit>>20)
	}
}

// TestStageOrder holds the curriculum order the linear sort must keep: parents first,
// declaration order otherwise, as repeated passes over the declarations placed them.
func TestStageOrder(t *testing.T) {
	for _, tc := range []struct {
		stages string
		want   string
	}{
		{"stage a { }; stage b from a { }; stage c from b { }", "[a b c]"},
		{"stage c from b { }; stage b from a { }; stage a { }", "[a b c]"},
		{"stage b from a { }; stage a { }; stage c { }", "[a c b]"},
		{"stage x from b { }; stage b from a { }; stage a { }; stage y from a { }", "[a y b x]"},
		{"stage a { }; stage c from b { }; stage b from a { }; stage d from c { }", "[a b c d]"},
	} {
		src := limitsBase + "train m0 on local {\n  tokens_per_batch = 1024; precision = fp32; data = \"x\"\n  " +
			strings.ReplaceAll(strings.ReplaceAll(tc.stages, "{ }", "{ tokens = 1024 }"), "; ", "\n  ") + "\n}\n"
		prog, diags := loadString(src)
		if len(diags) > 0 {
			t.Fatalf("%s: %v", tc.stages, diags.Err())
		}
		var names []string
		for _, s := range prog.Trains["m0"].Stages {
			names = append(names, s.Name)
		}
		if got := fmt.Sprint(names); got != tc.want {
			t.Errorf("%s: order %s, want %s", tc.stages, got, tc.want)
		}
	}
}

// TestLongExtendsChain: 5,000 models, each extending the one before and declared last
// first, check clean, every one inheriting from the root, for an allocation linear in
// the models (BenchmarkLongChains runs 20,000).
func TestLongExtendsChain(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 5,000 models")
	}
	const n = 5000
	src := extendsChain(n)
	var prog *program.Program
	var diags diag.List
	bytes := allocated(func() { prog, diags = loadString(src) })
	if len(diags) > 0 {
		t.Fatalf("%d diagnostics, first %v", len(diags), diags[0])
	}
	last := prog.Models[fmt.Sprintf("m%d", n-1)]
	if last == nil || last.DModel != 128 || last.FFN.Hidden != 512 || last.Extends != fmt.Sprintf("m%d", n-2) {
		t.Fatalf("last model: %+v", last)
	}
	if limit := uint64(n) * 128 << 10; bytes > limit {
		t.Errorf("allocated %d MB for %d models, want under %d MB", bytes>>20, n, limit>>20)
	}
}

// BenchmarkLongChains times the generated inputs of the tests above through Load, as
// `moec check` reads them.
func BenchmarkLongChains(b *testing.B) {
	for _, tc := range []struct {
		name string
		src  string
	}{
		{"stages=20000", stageChain(20000)},
		{"extends=20000", extendsChain(20000)},
		{"chain=10000", limitsBase + "model big extends m0 { vocab = 1" + strings.Repeat("+1", parse.MaxOperators) + " }\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.src)))
			for b.Loop() {
				if _, diags := loadString(tc.src); len(diags) > 0 {
					b.Fatal(diags[0])
				}
			}
		})
	}
}

// TestFlattenWithoutRecursion: merging an extends chain follows it with a loop. 100,000
// bodiless models (built as a tree: parsing them would take longer than the point needs)
// are merged under a stack far smaller than Go's default, which a recursion down the
// chain overflows; the last model inherits the root's entry, naming the root as its writer.
func TestFlattenWithoutRecursion(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(8 << 20))
	const n = 100000
	ident := func(name string) *ast.Ident { return &ast.Ident{Name: name} }
	f := &ast.File{Name: "t.moe"}
	for i := n - 1; i >= 0; i-- {
		b := &ast.Block{Kind: ident("model"), Name: ident(fmt.Sprintf("m%d", i))}
		if i > 0 {
			b.Extends = ident(fmt.Sprintf("m%d", i-1))
		} else {
			b.Body = []ast.Entry{&ast.Assign{Key: ident("vocab"), Value: &ast.Number{Text: "256", Value: 256}}}
		}
		f.Decls = append(f.Decls, b)
	}
	c := newChecker()
	c.collect(f)
	fb := c.flatten(c.byKind["model"][fmt.Sprintf("m%d", n-1)])
	e := fb.entries["vocab"]
	if len(c.r.diags) > 0 || e == nil || e.source != program.Inherited || e.from != "model m0" {
		t.Fatalf("vocab entry %+v, diagnostics %v", e, c.r.diags)
	}
}
