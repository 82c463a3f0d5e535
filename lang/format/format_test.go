package format

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// sameTree compares two files ignoring every position: the round-trip property.
func sameTree(a, b *ast.File) string {
	return cmp.Diff(a, b, cmpopts.IgnoreTypes(ast.Span{}, ast.Pos{}), cmpopts.IgnoreFields(ast.File{}, "Name"))
}

// check asserts the formatter's properties on src, which must parse without errors:
// fmt(fmt(x)) == fmt(x), parse(fmt(x)) equals parse(x) spans aside, and every comment
// survives (the tree comparison includes File.Comments).
func check(t testing.TB, src []byte) []byte {
	t.Helper()
	f, diags := parse.File("in.moe", src)
	if diags.HasErrors() {
		t.Fatalf("input does not parse:\n%s", render(diags, src))
	}
	out := Source(f, src)
	g, diags := parse.File("out.moe", out)
	if diags.HasErrors() {
		t.Fatalf("formatted output does not parse:\n%s\n--- output\n%s--- input\n%s", render(diags, out), out, src)
	}
	if d := sameTree(f, g); d != "" {
		t.Fatalf("formatting changed the tree (-input +output):\n%s\n--- output\n%s--- input\n%s", d, out, src)
	}
	if again := Source(g, out); !bytes.Equal(again, out) {
		t.Fatalf("formatting is not idempotent:\n--- once\n%s--- twice\n%s--- input\n%s", out, again, src)
	}
	return out
}

func render(l diag.List, src []byte) string {
	var b bytes.Buffer
	for _, d := range l {
		diag.Render(&b, d, src)
	}
	return b.String()
}

// TestGolden formats the `input.moe` section of every testdata/*.txtar file and compares
// the result with `fmt`.
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		return []golden.Section{{Name: "fmt", Data: check(t, in["input.moe"])}}
	})
}

// TestParserCorpus checks the properties on every error-free input of the parser's
// golden files.
func TestParserCorpus(t *testing.T) {
	for _, src := range corpus(t) {
		check(t, src)
	}
}

// corpus returns the inputs of this package's and lang/parse's golden files that parse
// without errors.
func corpus(t testing.TB) [][]byte {
	var out [][]byte
	for _, pattern := range []string{"testdata/*.txtar", "../parse/testdata/*.txtar"} {
		files, _ := filepath.Glob(pattern)
		for _, path := range files {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range ar.Files {
				if f.Name != "input.moe" {
					continue
				}
				if _, d := parse.File("x.moe", f.Data); !d.HasErrors() {
					out = append(out, f.Data)
				}
			}
		}
	}
	return out
}

func FuzzFormat(f *testing.F) {
	for _, src := range corpus(f) {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		if _, d := parse.File("in.moe", src); d.HasErrors() {
			return
		}
		check(t, src)
	})
}

func TestFileRefusesBrokenInput(t *testing.T) {
	out, diags := File("b.moe", []byte("model m {\n  vocab 1\n}\n"))
	if out != nil || !diags.HasErrors() {
		t.Fatalf("got %q, %v", out, diags)
	}
	out, diags = File("g.moe", []byte("model m{vocab=1}"))
	if string(out) != "model m {\n  vocab = 1\n}\n" || len(diags) != 0 {
		t.Fatalf("got %q, %v", out, diags)
	}
}

// TestLineEndings checks that CRLF input and input without a final newline format like
// plain LF input, and that an empty file stays empty.
func TestLineEndings(t *testing.T) {
	lf := "// c\nmodel m {\n  a = 1 // t\n\n  b = 2\n}\n"
	want := check(t, []byte(lf))
	for _, src := range []string{strings.ReplaceAll(lf, "\n", "\r\n"), strings.TrimSuffix(lf, "\n")} {
		if got := check(t, []byte(src)); !bytes.Equal(got, want) {
			t.Errorf("%q formats as\n%s\nwant\n%s", src, got, want)
		}
	}
	for _, src := range []string{"", "\n\n", "  \n"} {
		if got := check(t, []byte(src)); len(got) != 0 {
			t.Errorf("%q formats as %q", src, got)
		}
	}
	if got := check(t, []byte("\n\n// only a comment\n\n")); string(got) != "// only a comment\n" {
		t.Errorf("comment-only file formats as %q", got)
	}
}

// TestShippedFilesAreCanonical: the models and examples moec ships are what `moec fmt`
// writes, so a user's first `moec fmt -l` over them lists nothing.
func TestShippedFilesAreCanonical(t *testing.T) {
	var files []string
	for _, pattern := range []string{"../../models/*.moe", "../../examples/*.moe"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no shipped .moe files found")
	}
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if out := check(t, src); !bytes.Equal(out, src) {
			t.Errorf("%s is not in canonical layout; run moec fmt -w %s", path, filepath.Base(path))
		}
	}
}
