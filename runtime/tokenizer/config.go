package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
)

// Config is what tokenizer_config.json and generation_config.json beside a tokenizer.json
// say about its special tokens and chat template.
type Config struct {
	BOS, EOS     []int  // ids; EOS ends generation
	ChatTemplate string // tokenizer_config.json's chat_template ("" when none)
}

// LoadConfig reads the configs in dir (the folder of a tokenizer.json); files that are
// missing or malformed leave their fields empty: they only refine generation.
func LoadConfig(dir string, t *Tokenizer) Config {
	var c Config
	var gen struct {
		BOS json.RawMessage `json:"bos_token_id"`
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil && json.Unmarshal(b, &gen) == nil {
		c.BOS, c.EOS = IDList(gen.BOS), IDList(gen.EOS)
	}
	var tc struct {
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json")); err == nil && json.Unmarshal(b, &tc) == nil {
		if c.BOS == nil {
			c.BOS = tokenList(tc.BOS, t)
		}
		if c.EOS == nil {
			c.EOS = tokenList(tc.EOS, t)
		}
		var s string
		if json.Unmarshal(tc.ChatTemplate, &s) == nil {
			c.ChatTemplate = s
		} else {
			// Several named templates: [{"name": "default", "template": "..."}, ...].
			var named []struct{ Name, Template string }
			if json.Unmarshal(tc.ChatTemplate, &named) == nil {
				for _, n := range named {
					if n.Name == "default" || c.ChatTemplate == "" {
						c.ChatTemplate = n.Template
					}
				}
			}
		}
	}
	return c
}

// IDList reads a special-token field of a Hugging Face config (bos_token_id,
// eos_token_id, ...): one id or a list of ids; nil when the field is absent, null or
// malformed.
func IDList(raw json.RawMessage) []int {
	if raw == nil || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	var one int
	if json.Unmarshal(raw, &one) == nil {
		return []int{one}
	}
	var many []int
	if json.Unmarshal(raw, &many) == nil {
		return many
	}
	return nil
}

// tokenList reads a token as a string or an AddedToken object ({"content": ...}) and
// returns its id.
func tokenList(raw json.RawMessage, t *Tokenizer) []int {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var obj struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		s = obj.Content
	}
	if id, ok := t.TokenID(s); ok && s != "" {
		return []int{id}
	}
	return nil
}
