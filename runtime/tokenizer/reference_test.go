package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/pyvenv"
)

// pythonWithTokenizers returns a Python interpreter that imports the Hugging Face
// tokenizers package: $MOEC_PYTHON, else the repository's .venv (make venv), else it skips
// saying why.
func pythonWithTokenizers(t *testing.T) string {
	t.Helper()
	return pyvenv.Python(t, "../..", "tokenizers")
}

// randomTexts are strings drawn from pieces that stress the splits: letters of several
// scripts and cases, digit runs, whitespace runs of every kind, punctuation, contractions,
// emoji and the fixtures' added tokens.
func randomTexts(n int) []string {
	pieces := []string{
		"a", "Z", "the", "The", "HTTP", "Server", "é", "ß", "Ü", "e\u0301", "中", "文字", "こんにちは", "カタ", "한",
		"ρ", "Ж", "0", "12", "3456", "７", "٣", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \n ",
		"'s", "'T", "'ll", "n't", ".", ",", "!?", "...", "/", "//", "-", "_", "(", ")", "#", "**", "\"",
		"👋", "🏽", "\u200d", "🎉", "<|im_start|>", "<|im_end|>", "<think>", "<|begin_of_text|>", "<|end|>",
		"[INST]", "<pad>", "<｜User｜>", "<｜fim▁hole｜>", "▁", "<0x41>", "\x00", "\x1b",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for k := rng.IntN(12); k >= 0; k-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		out[i] = b.String()
	}
	return out
}

// TestAgainstTokenizersPackage: on a few thousand random strings and their concatenation,
// Encode gives the ids the `tokenizers` package itself gives for each fixture.
func TestAgainstTokenizersPackage(t *testing.T) {
	py := pythonWithTokenizers(t)
	texts := randomTexts(3000)
	// And all of them as one text: for a SentencePiece model, one word of some 60k
	// characters (its merges run through a priority queue, as tokenizers' do).
	texts = append(texts, strings.Join(texts, " "))
	data, err := json.Marshal(texts)
	if err != nil {
		t.Fatal(err)
	}
	stringsPath := filepath.Join(t.TempDir(), "strings.json")
	if err := os.WriteFile(stringsPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			path := filepath.Join("testdata", fx.name+".json")
			out, err := exec.Command(py, filepath.Join("testdata", "reference_ids.py"), path, stringsPath).Output()
			if err != nil {
				t.Fatalf("reference_ids.py: %v", err)
			}
			var want [][]int
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatal(err)
			}
			tok, _ := loadFixture(t, fx.name)
			bad := 0
			for i, text := range texts {
				got, err := tok.Encode(text, false)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want[i]) && !(len(got) == 0 && len(want[i]) == 0) {
					if bad++; bad <= 5 {
						t.Errorf("Encode(%q)\n got  %v\n want %v", text, got, want[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d strings differ", bad, len(texts))
			}
		})
	}
}
