package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/checkpoint"
	"github.com/moec-dev/moec/runtime/tokenizer"
	"github.com/moec-dev/moec/runtime/train"
)

// exportTokenizer writes the tokenizer that goes with checkpoint dir (train.FindTokenizer:
// the one a run kept, or an imported folder's), so that AutoTokenizer and pipeline load
// the export: tokenizer.json, the tokenizer_config.json and special_tokens_map.json beside
// it (a minimal tokenizer_config.json naming PreTrainedTokenizerFast when there is none),
// and generation_config.json with the model's own BOS and EOS ids, which also go into cfg
// (config.json) so transformers does not fall back to its class's defaults. Without a
// tokenizer it writes nothing.
func exportTokenizer(dir string, m *program.Model, special *checkpoint.SpecialTokens, cfg any, write func(name string, b []byte) error) error {
	path := train.FindTokenizer(dir)
	if path == "" {
		return exportSpecialTokens(special, cfg, write)
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		return err
	}
	src := filepath.Dir(path)
	tc := tokenizer.LoadConfig(src, tok)
	if len(tc.BOS) == 0 {
		if id, ok := tok.BOS(); ok {
			tc.BOS = []int{id}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return diag.RuntimeWrap(diag.CodeNotExportable, err, "reading the tokenizer")
	}
	if err := write("tokenizer.json", b); err != nil {
		return err
	}
	for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if os.IsNotExist(err) {
			if name == "tokenizer_config.json" {
				b, err = minimalTokenizerConfig(tok, tc, m)
			} else {
				continue
			}
		}
		if err != nil {
			return diag.RuntimeWrap(diag.CodeNotExportable, err, "reading %s", name)
		}
		if err := write(name, b); err != nil {
			return err
		}
	}
	gen := map[string]any{"_from_model_config": false}
	if b, err := os.ReadFile(filepath.Join(src, "generation_config.json")); err == nil {
		// A generation config beside the tokenizer (an imported model's) keeps its
		// sampling settings.
		if err := json.Unmarshal(b, &gen); err != nil {
			return diag.RuntimeWrap(diag.CodeNotExportable, err, "reading generation_config.json")
		}
	}
	if ids := oneOrList(tc.BOS); ids != nil {
		gen["bos_token_id"] = ids
	}
	if ids := oneOrList(tc.EOS); ids != nil {
		gen["eos_token_id"] = ids
	}
	if err := writeGenerationConfig(gen, write); err != nil {
		return err
	}
	if c, ok := cfg.(map[string]any); ok {
		c["bos_token_id"], c["eos_token_id"] = oneOrList(tc.BOS), oneOrList(tc.EOS)
	}
	return nil
}

// exportSpecialTokens writes, for a checkpoint without tokenizer files, the special ids
// its import recorded (checkpoint.Manifest.SpecialTokens) into config.json and
// generation_config.json, so that transformers reads the model's own ids rather than its
// class's defaults. A BOS or EOS id it does not have (none at all for a model trained on
// bytes) is written null in config.json: the class's default (Mixtral's 1 and 2, OLMoE's
// 50279) would name a byte, or no token of the vocabulary. Without recorded ids it writes
// no generation_config.json.
func exportSpecialTokens(special *checkpoint.SpecialTokens, cfg any, write func(name string, b []byte) error) error {
	c, _ := cfg.(map[string]any)
	if special == nil {
		if c != nil {
			c["bos_token_id"], c["eos_token_id"] = nil, nil
		}
		return nil
	}
	gen := map[string]any{"_from_model_config": false}
	for _, f := range []struct {
		key string
		ids []int
	}{{"bos_token_id", special.BOS}, {"eos_token_id", special.EOS}, {"pad_token_id", special.PAD}} {
		ids := oneOrList(f.ids)
		if ids != nil {
			gen[f.key] = ids
		}
		if c != nil && (ids != nil || f.key != "pad_token_id") {
			c[f.key] = ids
		}
	}
	return writeGenerationConfig(gen, write)
}

// writeGenerationConfig writes gen as generation_config.json.
func writeGenerationConfig(gen map[string]any, write func(name string, b []byte) error) error {
	gb, err := json.MarshalIndent(gen, "", "  ")
	if err != nil {
		return fmt.Errorf("hf: encoding generation_config.json: %w", err)
	}
	return write("generation_config.json", append(gb, '\n'))
}

// specialTokensOf reads the special ids of a Hugging Face config.json, or nil when it
// lists none.
func specialTokensOf(config []byte) *checkpoint.SpecialTokens {
	var c struct {
		BOS json.RawMessage `json:"bos_token_id"`
		EOS json.RawMessage `json:"eos_token_id"`
		PAD json.RawMessage `json:"pad_token_id"`
	}
	if json.Unmarshal(config, &c) != nil {
		return nil
	}
	st := &checkpoint.SpecialTokens{BOS: tokenizer.IDList(c.BOS), EOS: tokenizer.IDList(c.EOS), PAD: tokenizer.IDList(c.PAD)}
	if st.BOS == nil && st.EOS == nil && st.PAD == nil {
		return nil
	}
	return st
}

// oneOrList is ids as generation_config.json writes them: one id, a list, or nil.
func oneOrList(ids []int) any {
	switch len(ids) {
	case 0:
		return nil
	case 1:
		return ids[0]
	}
	return ids
}

// minimalTokenizerConfig is the tokenizer_config.json AutoTokenizer needs to load a bare
// tokenizer.json: the fast tokenizer class and the special tokens.
func minimalTokenizerConfig(tok *tokenizer.Tokenizer, tc tokenizer.Config, m *program.Model) ([]byte, error) {
	cfg := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"model_max_length":             m.SeqLen,
		"clean_up_tokenization_spaces": false,
	}
	for key, ids := range map[string][]int{"bos_token": tc.BOS, "eos_token": tc.EOS} {
		if len(ids) > 0 {
			if s, err := tok.Decode(ids[:1], false); err == nil {
				cfg[key] = s
			}
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	return append(b, '\n'), err
}
