package hf

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/pyvenv"
)

// copyFile copies a test file into dir under name.
func copyFile(t *testing.T, from, dir, name string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A checkpoint whose run kept a tokenizer exports it, with generation_config.json and
// config.json naming the model's own BOS and EOS ids, not the class defaults; without a
// tokenizer nothing of the kind is written, and config.json's BOS and EOS ids are null.
func TestExportTokenizer(t *testing.T) {
	m := tinyModel(t, "tiny_llama")
	bare, _ := saveCheckpoint(t, m)
	out := filepath.Join(t.TempDir(), "bare")
	if _, err := Export(bare, out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tokenizer.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(out, name)); err == nil {
			t.Errorf("an export without a tokenizer wrote %s", name)
		}
	}
	// A model trained on bytes has no BOS or EOS: config.json says null rather than let
	// transformers read its class's defaults (LlamaConfig's 1 and 2, bytes here).
	var bareCfg map[string]any
	readJSON(t, filepath.Join(out, ConfigFile), &bareCfg)
	for _, key := range []string{"bos_token_id", "eos_token_id"} {
		if v, ok := bareCfg[key]; !ok || v != nil {
			t.Errorf("an export without special ids writes %s = %v (present %v), want null", key, v, ok)
		}
	}

	dir, _ := saveCheckpoint(t, m)
	runDir := filepath.Dir(filepath.Dir(dir))
	copyFile(t, filepath.Join("..", "..", "runtime", "tokenizer", "testdata", "mistral.json"), runDir, "tokenizer.json")
	if err := os.WriteFile(filepath.Join(runDir, "tokenizer_config.json"), []byte(`{"eos_token": "</s>", "chat_template": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(t.TempDir(), "hf")
	man, err := Export(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyExport(out); err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	var gen, cfg map[string]any
	for name, v := range map[string]*map[string]any{"generation_config.json": &gen, ConfigFile: &cfg} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	// mistral.json: <s> is 1 (its TemplateProcessing's BOS), </s> is 2.
	for what, m := range map[string]map[string]any{"generation_config.json": gen, "config.json": cfg} {
		if m["bos_token_id"] != 1.0 || m["eos_token_id"] != 2.0 {
			t.Errorf("%s: bos %v eos %v, want 1 and 2", what, m["bos_token_id"], m["eos_token_id"])
		}
	}
	listed := map[string]bool{}
	for _, f := range man.Files {
		listed[f.Name] = true
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
		if !listed[name] {
			t.Errorf("%s is not in the export manifest", name)
		}
	}
	// transformers itself loads the tokenizer, when it is installed.
	py := pyvenv.Python(t, "../..", "transformers")
	got, err := exec.Command(py, "-c", `import sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(sys.argv[1])
print(t("[INST] Hello world")["input_ids"], t.eos_token_id)`, out).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("AutoTokenizer: %v\n%s", err, stderr)
	}
	if line := strings.TrimSpace(string(got)); !strings.HasSuffix(line, " 2") || !strings.HasPrefix(line, "[1, 600,") {
		t.Errorf("AutoTokenizer of the export: %s; want the BOS 1, [INST] 600 and EOS 2", line)
	}
}
