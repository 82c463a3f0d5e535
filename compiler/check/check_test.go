package check

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/moec-dev/moec/internal/golden"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/lang/parse"
)

var update = flag.Bool("update", false, "rewrite the golden sections of testdata/*.txtar")

// A golden case is a txtar archive: `input.moe` (the file checked) and any files it
// imports, then `check` (rendered diagnostics, or "ok") and, for inputs without errors,
// `explain` (the Explain rendering). Expected diagnostics are also written inline on the
// offending line as `// ERROR E0201` (several codes may follow), and every diagnostic
// must be expected there: the golden holds the wording, the inline marks hold the
// positions, and neither can drift silently. A diagnostic about a whole file (no line) is
// expected by `// FILE CODE` anywhere in that file.
func TestGolden(t *testing.T) {
	golden.Files(t, filepath.Join("testdata", "*.txtar"), *update, func(t *testing.T, in map[string][]byte) []golden.Section {
		files := map[string][]byte{}
		for name, data := range in {
			if strings.HasSuffix(name, ".moe") {
				files[name] = data
			}
		}
		if files["input.moe"] == nil {
			t.Fatal("no input.moe")
		}
		prog, sources, diags := Load("input.moe", func(name string) ([]byte, error) {
			if src, ok := files[filepath.ToSlash(name)]; ok {
				return src, nil
			}
			return nil, fs.ErrNotExist
		})
		checkInline(t, files, diags)

		var check bytes.Buffer
		if len(diags) == 0 {
			check.WriteString("ok\n")
		} else {
			diag.RenderAll(&check, diags, sources)
		}
		out := []golden.Section{{Name: "check", Data: check.Bytes()}}
		if !diags.HasErrors() {
			var explain bytes.Buffer
			Explain(&explain, prog)
			out = append(out, golden.Section{Name: "explain", Data: explain.Bytes()})
		}
		return out
	})
}

var inlineRE = regexp.MustCompile(`//\s*ERROR((?:\s+[EW]\d{4})+)`)

// fileRE marks a diagnostic about the whole file, which has no line: `// FILE W9203`.
var fileRE = regexp.MustCompile(`//\s*FILE((?:\s+[EW]\d{4})+)`)

type lineKey struct {
	file string
	line int
}

// checkInline matches `// ERROR CODE...` marks against the diagnostics' lines.
func checkInline(t *testing.T, files map[string][]byte, diags diag.List) {
	t.Helper()
	expected := map[lineKey][]string{}
	for name, src := range files {
		for i, line := range strings.Split(string(src), "\n") {
			if m := inlineRE.FindStringSubmatch(line); m != nil {
				expected[lineKey{name, i + 1}] = strings.Fields(m[1])
			}
			if m := fileRE.FindStringSubmatch(line); m != nil {
				expected[lineKey{name, 0}] = append(expected[lineKey{name, 0}], strings.Fields(m[1])...)
			}
		}
	}
	got := map[lineKey][]string{}
	for _, d := range diags {
		k := lineKey{filepath.ToSlash(d.Subject.File), d.Subject.Start.Line}
		got[k] = append(got[k], string(d.Code))
	}
	for k, codes := range expected {
		for _, c := range codes {
			if !containsStr(got[k], c) {
				t.Errorf("%s:%d: expected %s, got %v", k.file, k.line, c, got[k])
			}
		}
	}
	for k, codes := range got {
		for _, c := range codes {
			if !containsStr(expected[k], c) {
				t.Errorf("%s:%d: unexpected %s (no inline `// ERROR %s`)", k.file, k.line, c, c)
			}
		}
	}
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestEveryCodeHasAGolden holds the registry and the goldens together: each code the
// checker owns is produced by at least one golden input.
func TestEveryCodeHasAGolden(t *testing.T) {
	seen := map[string]bool{}
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.txtar"))
	codeRE := regexp.MustCompile(`(?:error|warning)\[([EW]\d{4})\]`)
	for _, path := range paths {
		ar, err := txtar.ParseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ar.Files {
			if f.Name == "check" {
				for _, m := range codeRE.FindAllStringSubmatch(string(f.Data), -1) {
					seen[m[1]] = true
				}
			}
		}
	}
	// E0299 reports a bug in the checker; no valid or invalid input should produce it.
	unreachable := map[string]bool{"E0299": true}
	var missing []string
	for _, info := range diag.Registry() {
		c := string(info.Code)
		owned := strings.HasPrefix(c, "E02") || strings.HasPrefix(c, "E03") || strings.HasPrefix(c, "E04") || strings.HasPrefix(c, "W92")
		if owned && !unreachable[c] && !seen[c] {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("codes with no golden test: %v", missing)
	}
}

// FuzzCheck parses and checks arbitrary input: the checker must never panic (which
// Check turns into E0299) whatever the parser hands it.
func FuzzCheck(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "*.txtar"))
	for _, path := range paths {
		ar, err := txtar.ParseFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if strings.HasSuffix(file.Name, ".moe") {
				f.Add(file.Data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		file, _ := parse.File("fuzz.moe", src)
		_, diags := Check(file)
		for _, d := range diags {
			if d.Code == "E0299" {
				t.Fatalf("checker panicked: %s", d.Summary)
			}
		}
		var b bytes.Buffer
		diag.RenderAll(&b, diags, map[string][]byte{"fuzz.moe": src})
		_ = fmt.Sprint(b.Len())
	})
}

// TestExampleChecksClean holds the embedded CPU example to a clean check: it is the
// file a new user runs first.
func TestExampleChecksClean(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "hunyuan_tiny.moe")
	prog, sources, diags := Load(path, os.ReadFile)
	if len(diags) > 0 {
		var b bytes.Buffer
		diag.RenderAll(&b, diags, sources)
		t.Fatalf("%s does not check clean:\n%s", path, b.String())
	}
	tr := prog.Trains["hunyuan_tiny"]
	if tr == nil || len(tr.Stages) != 3 {
		t.Fatalf("want one train with three stages, got %+v", tr)
	}
	var total int64
	var experts []int
	for _, s := range tr.Stages {
		total += s.Tokens
		experts = append(experts, s.Experts)
	}
	if total != 1536000 || fmt.Sprint(experts) != "[1 4 8]" || tr.TokensPerBatch != 1024 {
		t.Errorf("curriculum: %d tokens, experts %v, batch %d", total, experts, tr.TokensPerBatch)
	}
}

// TestLoadMissingRoot: an unreadable root file is one diagnostic naming it, not a panic.
func TestLoadMissingRoot(t *testing.T) {
	prog, sources, diags := Load("absent.moe", func(string) ([]byte, error) { return nil, fs.ErrNotExist })
	if len(diags) != 1 || diags[0].Code != diag.CodeImportUnreadable || diags[0].Subject.File != "absent.moe" {
		t.Fatalf("diags = %v", diags)
	}
	if prog == nil || len(sources) != 0 {
		t.Errorf("prog = %v, sources = %v", prog, sources)
	}
}
