package chattemplate

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgainstJinja2: every template of testdata rendered with every conversation gives
// Jinja2's output, or refuses with the template's own raise_exception message, as
// testdata/gen_cases.py recorded them.
func TestAgainstJinja2(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Conversations map[string]json.RawMessage `json:"conversations"`
		Cases         []struct {
			Template            string `json:"template"`
			Conversation        string `json:"conversation"`
			AddGenerationPrompt bool   `json:"add_generation_prompt"`
			Output              *string
			Error               *string
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) < 20 {
		t.Fatalf("only %d cases", len(f.Cases))
	}
	compiled := map[string]*Template{}
	for _, c := range f.Cases {
		tmpl := compiled[c.Template]
		if tmpl == nil {
			src, err := os.ReadFile(filepath.Join("testdata", c.Template+".jinja"))
			if err != nil {
				t.Fatal(err)
			}
			if tmpl, err = Compile(string(src)); err != nil {
				t.Fatalf("%s: %v", c.Template, err)
			}
			tmpl.Now = func() time.Time { return time.Date(2026, 12, 6, 15, 4, 5, 0, time.UTC) }
			compiled[c.Template] = tmpl
		}
		messages, err := ParseJSON(f.Conversations[c.Conversation])
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.Render(map[string]any{
			"messages":              messages,
			"add_generation_prompt": c.AddGenerationPrompt,
			"bos_token":             "<s>", "eos_token": "</s>",
		})
		name := c.Template + "/" + c.Conversation
		switch {
		case c.Error != nil:
			var re *RaiseError
			if !errors.As(err, &re) || re.Message != *c.Error {
				t.Errorf("%s: got %q, %v; want the refusal %q", name, got, err, *c.Error)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case got != *c.Output:
			t.Errorf("%s (generation prompt %v):\n got  %q\n want %q", name, c.AddGenerationPrompt, got, *c.Output)
		}
	}
}

// A template outside the subset is refused when compiled, naming what it met.
func TestRefusesUnsupported(t *testing.T) {
	for src, want := range map[string]string{
		"{% call f() %}x{% endcall %}":           "call",
		"{% include 'x' %}":                      "include",
		"{{ x | wordwrap }}":                     "", // a filter is refused when it runs
		"{% for x in y %}":                       "endfor",
		"{{ 'unterminated }}":                    "",
		"{% if x %}{% endfor %}":                 "endfor",
		"{% set x %}block{% endset %}":           "block set",
		"{% for x in y recursive %}{% endfor %}": "recursive",
	} {
		_, err := Compile(src)
		if want == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile(%q) = %v, want an error naming %q", src, err, want)
		}
	}
	tmpl, err := Compile("{{ x | wordwrap }}")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmpl.Render(map[string]any{"x": "a"}); err == nil || !strings.Contains(err.Error(), "wordwrap") {
		t.Errorf("rendering an unknown filter: %v", err)
	}
}

// FuzzTemplate: compiling and rendering any text never panics.
func FuzzTemplate(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "*.jinja"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("{{ a[::-1] }}{% for x in y if x %}{% break %}{% endfor %}{{ 1 // 0 }}")
	f.Fuzz(func(t *testing.T, src string) {
		tmpl, err := Compile(src)
		if err != nil {
			return
		}
		msg := NewDict()
		msg.Set("role", "user")
		msg.Set("content", "hi")
		_, _ = tmpl.Render(map[string]any{"messages": []any{msg}, "add_generation_prompt": true, "bos_token": "<s>"})
	})
}
