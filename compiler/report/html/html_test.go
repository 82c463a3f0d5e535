package html_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/compiler/check"
	"github.com/moec-dev/moec/compiler/report"
	reporthtml "github.com/moec-dev/moec/compiler/report/html"
	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/diag"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// build loads the txtar's input.moe, writes report.html like `moec build` and returns it.
func build(t *testing.T, archive *txtar.Archive) []byte {
	t.Helper()
	for _, f := range archive.Files {
		if f.Name == "input.moe" {
			return buildSource(t, f.Data)
		}
	}
	t.Fatal("no -- input.moe -- section")
	return nil
}

// buildSource writes src as input.moe, writes report.html like `moec build` and returns it.
func buildSource(t *testing.T, src []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "input.moe")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	prog, sources, diags := check.Load(path, os.ReadFile)
	if diags.HasErrors() {
		var b bytes.Buffer
		diag.RenderAll(&b, diags, sources)
		t.Fatalf("input.moe has errors:\n%s", b.String())
	}
	if err := reporthtml.Write(dir, prog, "input.moe"); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func goldenFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.txtar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in testdata (%v)", err)
	}
	return files
}

// TestGolden compares report.html with the txtar's `-- report.html --` section.
func TestGolden(t *testing.T) {
	golden.Files(t, filepath.Join("testdata", "*.txtar"), *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		src, ok := in["input.moe"]
		if !ok {
			t.Fatal("no -- input.moe -- section")
		}
		got := buildSource(t, src)
		if again := buildSource(t, src); !bytes.Equal(got, again) {
			t.Fatal("two renderings of the same input differ")
		}
		checkSelfContained(t, got)
		for _, want := range []string{"aria-label=\"memory per tier\"", "aria-label=\"device mesh\"", "Communication per step", "aria-label=\"curriculum timeline\"", "serve small", "small, stage all"} {
			if !bytes.Contains(got, []byte(want)) {
				t.Errorf("report.html lacks %q", want)
			}
		}
		return []golden.Section{{Name: "report.html", Data: got}}
	})
}

// checkSelfContained fails unless page is well-formed markup that loads nothing and runs
// nothing: no script, no external reference of any kind.
func checkSelfContained(t *testing.T, page []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(page))
	dec.Strict = true
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("report.html is not well-formed: %v", err)
		}
		el, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch strings.ToLower(el.Name.Local) {
		case "script", "link", "img", "iframe", "object", "embed", "image", "use":
			t.Errorf("report.html has a <%s> element", el.Name.Local)
		}
		for _, a := range el.Attr {
			if n := strings.ToLower(a.Name.Local); n == "src" || n == "href" || strings.HasPrefix(n, "on") {
				t.Errorf("<%s> has attribute %s=%q", el.Name.Local, a.Name.Local, a.Value)
			}
		}
	}
	for _, bad := range []string{"http://", "https://", "url(", "@import"} {
		if bytes.Contains(page, []byte(bad)) {
			t.Errorf("report.html contains %q", bad)
		}
	}
}

// Names come from the user's file: they must not become markup.
func TestEscapes(t *testing.T) {
	r := &report.Report{Source: "a<b>.moe", Models: []report.ModelReport{{Name: `<script>alert("x")</script>`}},
		Trains: []report.TrainReport{{Model: "m&m", Cluster: "c", Tokens: 10, Stages: []report.StageReport{{Name: `"><svg onload=x>`, Tokens: 10}}}}}
	page := reporthtml.Render(reporthtml.Page{Report: r})
	checkSelfContained(t, page)
	if !bytes.Contains(page, []byte("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")) {
		t.Errorf("model name not escaped:\n%s", page)
	}
}
