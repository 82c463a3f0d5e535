package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/internal/atomicfile"
	"github.com/moec-dev/moec/lang/diag"
	"github.com/moec-dev/moec/runtime/tokenizer"
)

// KeepTokenizer copies a tokenizer.json (path; "" for bytes) into a run folder (or an
// imported model's folder), so that generate, serve, eval and export find it from a
// checkpoint alone: tokenizer.json and, when they sit next to it, the files that say its
// special tokens and chat template.
func KeepTokenizer(runDir, path string) error {
	if path == "" {
		return nil
	}
	src := filepath.Dir(path)
	for i, name := range []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"} {
		from := filepath.Join(src, name)
		if i == 0 {
			from = path
		}
		b, err := os.ReadFile(from)
		if os.IsNotExist(err) && i > 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("keeping the tokenizer with the run: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(runDir, name), b, 0o644); err != nil {
			return fmt.Errorf("keeping the tokenizer with the run: %w", err)
		}
	}
	return nil
}

// FindTokenizer returns the tokenizer.json that goes with a checkpoint folder: one in the
// folder itself (an imported Hugging Face checkpoint), or in the run folder it belongs to
// (checkpoints/step-N is two levels below). "" when there is none: the model reads bytes.
func FindTokenizer(checkpointDir string) string {
	for _, dir := range []string{checkpointDir, filepath.Dir(filepath.Dir(checkpointDir))} {
		p := filepath.Join(dir, "tokenizer.json")
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p
		}
	}
	return ""
}

// LoadTokenizer returns the tokenizer that generation and serving read and write text
// with: the one named (path), else the one kept with the checkpoint (FindTokenizer), else
// nil (bytes), with what the configs beside it say (end-of-sequence ids, chat template).
// Its ids must fit the model's vocab.
func LoadTokenizer(path, checkpointDir string, vocab int64) (*tokenizer.Tokenizer, tokenizer.Config, error) {
	if path == "" {
		path = FindTokenizer(checkpointDir)
	}
	if path == "" {
		return nil, tokenizer.Config{}, nil
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		return nil, tokenizer.Config{}, err
	}
	if int64(tok.VocabSize()) > vocab {
		return nil, tokenizer.Config{}, diag.Runtimef(diag.CodeTokenizerUnreadable, "tokenizer %s has %d token ids, more than the model's vocab of %d", path, tok.VocabSize(), vocab)
	}
	dir := path
	if info, err := os.Stat(path); err == nil && !info.IsDir() {
		dir = filepath.Dir(path)
	}
	return tok, tokenizer.LoadConfig(dir, tok), nil
}
