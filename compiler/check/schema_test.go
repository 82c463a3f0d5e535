package check

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moec-dev/moec/lang/ast"
)

// TestSchemaDefaultsParse: every default in the tables is well formed (a bad one would
// only surface as E0299 on the first input that needs it).
func TestSchemaDefaultsParse(t *testing.T) {
	s := newSchema()
	for kind, b := range s.blocks {
		for _, k := range b.keys {
			if k.def == "" {
				if !k.required && !k.optional && k.defFn == nil {
					t.Errorf("%s.%s has no default and is neither required nor optional", kind, k.name)
				}
				continue
			}
			if _, err := parseDefault(k.def); err != nil {
				t.Errorf("%s.%s: %v", kind, k.name, err)
			}
		}
		for _, p := range b.positional {
			if b.key(p) == nil {
				t.Errorf("constructor %s: positional %s is not a key", kind, p)
			}
		}
	}
}

// TestSchemaMatchesReference holds the key names to docs/language.md, the contract
// between teams: each key the checker knows is documented, and each key in the
// reference's tables is known.
func TestSchemaMatchesReference(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "language.md"))
	if err != nil {
		t.Skipf("language reference not found: %v", err)
	}
	text := string(doc)
	s := newSchema()
	known := map[string]bool{}
	for kind, b := range s.blocks {
		for _, k := range b.keys {
			known[k.name] = true
			if !strings.Contains(text, "`"+k.name+"`") && !strings.Contains(text, " "+k.name+" ") &&
				!strings.Contains(text, k.name+",") && !strings.Contains(text, k.name+" [") && !strings.Contains(text, "("+k.name) {
				t.Errorf("%s.%s is not in docs/language.md", kind, k.name)
			}
		}
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_0-9]+)`(?:, `([a-z_0-9]+)`)? \\|")
	for _, m := range row.FindAllStringSubmatch(text, -1) {
		for _, name := range m[1:] {
			if name != "" && !known[name] {
				t.Errorf("docs/language.md documents key %s, which the checker does not know", name)
			}
		}
	}
}

func TestCanonicalValues(t *testing.T) {
	for _, tc := range []struct{ text, suffix, want string }{
		{"16GiB", "GiB", "16GiB"},
		{"1TB", "TB", "1TB"},
		{"1.5KB", "KB", "1.5KB"},
		{"1536", "", "1536"},
		{"1.6Tbps", "Tbps", "200GB/s"},
		{"200Gbps", "Gbps", "25GB/s"},
		{"2TB/s", "TB/s", "2TB/s"},
		{"400GiB/s", "GiB/s", "400GiB/s"},
		{"312TFLOPS", "TFLOPS", "312TFLOPS"},
		{"1.6T", "T", "1600000000000"},
		{"150k", "k", "150000"},
		{"3B", "B", "3000000000"},
		{"1e-4", "", "0.0001"},
	} {
		v, err := parseNumber(tc.text, tc.suffix)
		if err != nil {
			t.Errorf("%s: %v", tc.text, err)
			continue
		}
		if got := v.String(); got != tc.want {
			t.Errorf("%s reads back as %s, want %s", tc.text, v, tc.want)
		}
	}
	if _, err := parseNumber("1e-999999999", ""); err == nil {
		t.Errorf("a huge negative exponent must be refused before exact arithmetic")
	}
}

// TestCheckEmpty: nothing in, nothing out, no panic.
func TestCheckEmpty(t *testing.T) {
	prog, diags := Check()
	if len(diags) != 0 || prog == nil || len(prog.Models) != 0 {
		t.Errorf("Check() = %v, %v", prog, diags)
	}
	if _, diags := Check(nil, &ast.File{Name: "empty.moe"}); len(diags) != 0 {
		t.Errorf("empty file: %v", diags)
	}
}
