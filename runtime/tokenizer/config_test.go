package tokenizer

import (
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
