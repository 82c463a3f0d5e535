package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// LoadConfig reads ids from generation_config.json (one or a list) before the tokens of
// tokenizer_config.json (a string or an AddedToken object), and a chat template given
// as a string or as named templates.
func TestLoadConfig(t *testing.T) {
	tok, _ := loadFixture(t, "llama3")
	write := func(dir, name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	write(dir, "tokenizer_config.json", `{"bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>"}, "eos_token": "<|eot_id|>",
		"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}`)
	c := LoadConfig(dir, tok)
	if !slices.Equal(c.BOS, []int{700}) || !slices.Equal(c.EOS, []int{702}) || c.ChatTemplate != "D" {
		t.Errorf("from tokenizer_config.json: %+v", c)
	}
	write(dir, "generation_config.json", `{"bos_token_id": 700, "eos_token_id": [701, 702]}`)
	c = LoadConfig(dir, tok)
	if !slices.Equal(c.EOS, []int{701, 702}) || !slices.Equal(c.BOS, []int{700}) {
		t.Errorf("with generation_config.json: %+v", c)
	}
	if c := LoadConfig(t.TempDir(), tok); c.BOS != nil || c.EOS != nil || c.ChatTemplate != "" {
		t.Errorf("no files: %+v", c)
	}
}

// TestIDList: a special-token field is one id, a list, or nothing — null (as transformers
// writes an unset pad_token_id) is no id, not id 0.
func TestIDList(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want []int
	}{{"2", []int{2}}, {"[1, 7]", []int{1, 7}}, {"null", nil}, {" null ", nil}, {"", nil}, {`"x"`, nil}} {
		var raw json.RawMessage
		if c.raw != "" {
			raw = json.RawMessage(c.raw)
		}
		if got := IDList(raw); !slices.Equal(got, c.want) {
			t.Errorf("IDList(%q) = %v, want %v", c.raw, got, c.want)
		}
	}
}
