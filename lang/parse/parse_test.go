package parse

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/ast"
	"github.com/moec-dev/moec/lang/diag"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestGolden parses the `input.moe` section of every testdata/*.txtar file and compares
// the rendered diagnostics (`errors`) and the tree with its spans (`ast`).
func TestGolden(t *testing.T) {
	golden.Files(t, "testdata/*.txtar", *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		src, ok := in["input.moe"]
		if !ok {
			t.Fatal("no -- input.moe -- section")
		}
		f, diags := File("input.moe", src)
		checkSpans(t, f, src)
		wantErrors := strings.HasPrefix(path.Base(t.Name()), "err_")
		if wantErrors != diags.HasErrors() {
			t.Errorf("file name says errors=%v but parse reported %d diagnostics", wantErrors, len(diags))
		}
		var errs bytes.Buffer
		diag.RenderAll(&errs, diags, map[string][]byte{"input.moe": src})
		return []golden.Section{{Name: "errors", Data: errs.Bytes()}, {Name: "ast", Data: []byte(dump(f))}}
	})
}

// checkSpans verifies the span invariants every later phase relies on: each node's
// offsets agree with its line and column, its end does not precede its start, children
// lie inside their parents, and leaves cover exactly their source text.
func checkSpans(t testing.TB, f *ast.File, src []byte) {
	t.Helper()
	lineStart := []int{0, 0} // lineStart[n] is the offset of line n
	for i, c := range src {
		if c == '\n' {
			lineStart = append(lineStart, i+1)
		}
	}
	pos := func(what string, p ast.Pos) {
		if p.Line < 1 || p.Line >= len(lineStart) || lineStart[p.Line]+p.Col-1 != p.Offset || p.Offset > len(src) {
			t.Errorf("%s: position %+v does not agree with the source", what, p)
		}
	}
	var walk func(n ast.Node, parent ast.Span)
	walk = func(n ast.Node, parent ast.Span) {
		s := ast.Span{Start: n.Pos(), End: n.EndPos()}
		what := fmt.Sprintf("%T at %s", n, s.Start)
		pos(what, s.Start)
		pos(what+" (end)", s.End)
		if s.End.Offset < s.Start.Offset || s.Start.Offset < parent.Start.Offset || s.End.Offset > parent.End.Offset {
			t.Errorf("%s: span %d..%d outside parent %d..%d", what, s.Start.Offset, s.End.Offset, parent.Start.Offset, parent.End.Offset)
			return
		}
		text := string(src[s.Start.Offset:s.End.Offset])
		switch n := n.(type) {
		case *ast.Ident:
			if text != n.Name {
				t.Errorf("%s: span covers %q, name is %q", what, text, n.Name)
			}
		case *ast.Number:
			if text != n.Text {
				t.Errorf("%s: span covers %q, text is %q", what, text, n.Text)
			}
		case *ast.Comment:
			if text != n.Text {
				t.Errorf("%s: span covers %q, text is %q", what, text, n.Text)
			}
		case *ast.String:
			if !strings.HasPrefix(text, `"`) {
				t.Errorf("%s: span covers %q", what, text)
			}
		case *ast.Import:
			walk(n.Path, s)
		case *ast.Block:
			for _, id := range []*ast.Ident{n.Kind, n.Name, n.Extends, n.On, n.From} {
				if id != nil {
					walk(id, s)
				}
			}
			for _, e := range n.Body {
				walk(e, s)
			}
			if n.RBrace.IsValid() && (n.RBrace.Offset != s.End.Offset-1 || src[n.RBrace.Offset] != '}') {
				t.Errorf("%s: RBrace %+v is not the block's last byte", what, n.RBrace)
			}
		case *ast.Assign:
			walk(n.Key, s)
			walk(n.Value, s)
		case *ast.List:
			for _, e := range n.Elems {
				walk(e, s)
			}
		case *ast.Unary:
			walk(n.X, s)
		case *ast.Binary:
			walk(n.X, s)
			walk(n.Y, s)
		case *ast.Paren:
			walk(n.X, s)
		case *ast.Call:
			walk(n.Fn, s)
			for _, e := range n.Args {
				walk(e, s)
			}
			for _, a := range n.Named {
				walk(a, s)
			}
		}
	}
	for _, im := range f.Imports {
		walk(im, f.Span)
	}
	for _, c := range f.Comments {
		walk(c, f.Span)
	}
	for _, b := range f.Decls {
		walk(b, f.Span)
	}
}

// TestEverySyntaxCodeHasAGoldenCase keeps the error goldens complete: each E01xx code
// appears in some `errors` section, except the internal-error code, which no input may
// trigger, and E0117, whose input (a million elements in a row) is too big for a golden
// file: TestTooManyRepeats builds it.
func TestEverySyntaxCodeHasAGoldenCase(t *testing.T) {
	files, _ := filepath.Glob("testdata/err_*.txtar")
	var all strings.Builder
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, info := range diag.Registry() {
		if !strings.HasPrefix(string(info.Code), "E01") || info.Code == diag.CodeInternalParserError || info.Code == diag.CodeTooManyRepeats {
			continue
		}
		if !strings.Contains(all.String(), "error["+string(info.Code)+"]") {
			t.Errorf("no golden case produces %s (%s)", info.Code, info.Summary)
		}
	}
}
