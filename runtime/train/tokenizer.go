package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/internal/atomicfile"
)

// keepTokenizer copies the tokenizer a run trains with (path; "" for bytes) into the run
// folder, so that generate, serve and eval find it from a checkpoint alone: tokenizer.json
// and, when they sit next to it, the files that say its special tokens and chat template.
func keepTokenizer(runDir, path string) error {
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
