package tokenizer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moec-dev/moec/internal/atomicfile"
)

var update = flag.Bool("update", false, "rewrite testdata/published/FAMILY.ids.json with the ids of the tokenizers package")

// publishedDir holds the corpus, the reference ids and the table of published vocabularies.
const publishedDir = "testdata/published"

// publishedVocabulary is one row of testdata/published/vocabularies.tsv: a family's
// published tokenizer.json, the npm package that ships it and its SHA-256.
type publishedVocabulary struct {
	family, npmPackage, version, sha256, model string
}

func readPublishedVocabularies(t *testing.T) []publishedVocabulary {
	t.Helper()
	f, err := os.Open(filepath.Join(publishedDir, "vocabularies.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []publishedVocabulary
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 5 {
			t.Fatalf("vocabularies.tsv: %d fields in %q, want 5", len(fields), line)
		}
		rows = append(rows, publishedVocabulary{fields[0], fields[1], fields[2], fields[3], fields[4]})
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// publishedFile is the cached tokenizer.json of v (scripts/published-tokenizers.sh, which
// `make test` runs, fetches it), under $MOEC_PUBLISHED_TOKENIZERS if set, else under the
// repository's .cache/published-tokenizers. It skips t when the file is absent, and fails
// it when the file is not the published one.
func publishedFile(t *testing.T, v publishedVocabulary) string {
	t.Helper()
	dir := os.Getenv("MOEC_PUBLISHED_TOKENIZERS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".cache", "published-tokenizers")
	}
	path := filepath.Join(dir, v.family, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("the published %s tokenizer (%s@%s) is not cached (%v); scripts/published-tokenizers.sh fetches it", v.family, v.npmPackage, v.version, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != v.sha256 {
		t.Fatalf("%s has SHA-256 %s, not the published file's %s; remove it and rerun scripts/published-tokenizers.sh", path, got, v.sha256)
	}
	return path
}

// publishedCase is one string of the corpus with the ids the `tokenizers` package gives.
type publishedCase struct {
	Text           string `json:"text"`
	IDs            []int  `json:"ids"`
	IDsWithSpecial []int  `json:"ids_with_special"`
	Decoded        string `json:"decoded"`
}

type publishedReference struct {
	Tokenizers string          `json:"tokenizers"`
	Cases      []publishedCase `json:"cases"`
}

// writePublishedReference runs reference.py on the published file and writes
// FAMILY.ids.json, one case a line so that a changed id shows in a diff.
func writePublishedReference(t *testing.T, v publishedVocabulary, path string) {
	t.Helper()
	py := pythonWithTokenizers(t)
	out, err := exec.Command(py, filepath.Join(publishedDir, "reference.py"), path, filepath.Join(publishedDir, "corpus.json")).Output()
	if err != nil {
		t.Fatalf("reference.py %s: %v", v.family, err)
	}
	var ref publishedReference
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\"vocabulary\": %q, \"sha256\": %q, \"tokenizers\": %q, \"cases\": [\n", v.npmPackage+"@"+v.version, v.sha256, ref.Tokenizers)
	for i, c := range ref.Cases {
		line, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		if i < len(ref.Cases)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]}\n")
	if err := atomicfile.WriteFile(filepath.Join(publishedDir, v.family+".ids.json"), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPublishedVocabularies: on the tokenizer.json files Qwen3, Llama 3, DeepSeek-V3,
// gpt-oss and Mistral publish, Encode and Decode give, for every string of
// testdata/published/corpus.json, what the `tokenizers` package gave (FAMILY.ids.json;
// -update regenerates them with the package).
func TestPublishedVocabularies(t *testing.T) {
	for _, v := range readPublishedVocabularies(t) {
		t.Run(v.family, func(t *testing.T) {
			path := publishedFile(t, v)
			if *update {
				writePublishedReference(t, v, path)
			}
			data, err := os.ReadFile(filepath.Join(publishedDir, v.family+".ids.json"))
			if err != nil {
				t.Fatal(err)
			}
			var ref struct {
				SHA256 string          `json:"sha256"`
				Cases  []publishedCase `json:"cases"`
			}
			if err := json.Unmarshal(data, &ref); err != nil {
				t.Fatal(err)
			}
			if ref.SHA256 != v.sha256 {
				t.Fatalf("%s.ids.json is for the file with SHA-256 %s, vocabularies.tsv names %s: rerun with -update", v.family, ref.SHA256, v.sha256)
			}
			var corpus []string
			corpusData, err := os.ReadFile(filepath.Join(publishedDir, "corpus.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(corpusData, &corpus); err != nil {
				t.Fatal(err)
			}
			if len(ref.Cases) != len(corpus) {
				t.Fatalf("%s.ids.json has %d cases, corpus.json %d strings: rerun with -update", v.family, len(ref.Cases), len(corpus))
			}
			tok, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range ref.Cases {
				if c.Text != corpus[i] {
					t.Fatalf("case %d is %q, corpus.json has %q: rerun with -update", i, c.Text, corpus[i])
				}
				for _, addSpecial := range []bool{false, true} {
					want := c.IDs
					if addSpecial {
						want = c.IDsWithSpecial
					}
					got, err := tok.Encode(c.Text, addSpecial)
					if err != nil {
						t.Fatalf("Encode(%q): %v", c.Text, err)
					}
					if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
						t.Errorf("Encode(%q, special %v)\n got  %v\n want %v", c.Text, addSpecial, got, want)
					}
				}
				decoded, err := tok.Decode(c.IDs, false)
				if err != nil {
					t.Fatal(err)
				}
				if decoded != c.Decoded {
					t.Errorf("Decode(ids of %q) = %q, want %q", c.Text, decoded, c.Decoded)
				}
			}
		})
	}
}

// randomRuneTexts are strings of code points drawn from blocks whose Unicode categories
// the split patterns tell apart (letters of each case, marks, digits of several scripts,
// symbols, punctuation, spaces, controls, CJK, emoji), with runs of one block, so that
// each family's splits and merges meet what a published vocabulary holds.
func randomRuneTexts(n int) []string {
	blocks := [][2]rune{
		{' ', '~'}, {' ', ' '}, {'0', '9'}, {'a', 'z'}, {'A', 'Z'}, {'\t', '\r'}, {0x00, 0x1f}, {0x7f, 0xa0},
		{0xa1, 0x24f}, {0x300, 0x36f}, {0x370, 0x3ff}, {0x400, 0x4ff}, {0x590, 0x5ff}, {0x600, 0x6ff},
		{0x900, 0x97f}, {0xe00, 0xe7f}, {0x1100, 0x11ff}, {0x2000, 0x206f}, {0x2070, 0x209f},
		{0x2100, 0x22ff}, {0x2460, 0x24ff}, {0x3000, 0x303f}, {0x3040, 0x30ff}, {0x4e00, 0x9fff},
		{0xac00, 0xd7a3}, {0xfe00, 0xfe0f}, {0xff00, 0xffef}, {0x1d400, 0x1d7ff}, {0x1f300, 0x1faff},
		{0x20000, 0x2a6df}, {0xe000, 0xe0ff},
		// Assigned by Unicode 15.1 and 16.0, after Go's tables: Garay, Kirat Rai, Todhri,
		// legacy-computing symbols, CJK Extension I.
		{0x10d40, 0x10d8f}, {0x16d40, 0x16d79}, {0x105c0, 0x105f3}, {0x1cc00, 0x1ceaf}, {0x2ebf0, 0x2ee5d},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		for k := rng.IntN(8); k >= 0; k-- {
			block := blocks[rng.IntN(len(blocks))]
			for m := rng.IntN(6); m >= 0; m-- {
				b.WriteRune(block[0] + rune(rng.IntN(int(block[1]-block[0]+1))))
			}
		}
		out[i] = b.String()
	}
	return out
}

// TestPublishedAgainstTokenizersPackage: on a thousand random strings of pieces
// (randomTexts) and a thousand of code points (randomRuneTexts), Encode on each published
// vocabulary gives the ids the `tokenizers` package gives there and then.
//
// The code points are drawn only when the package classes them by Unicode 16.0, as moec
// does (tokenizers 0.23; the 0.20 that transformers 4.46 pins in .venv has
// older tables). The current package is .venv-bench's (make venv-torch), else .venv's.
func TestPublishedAgainstTokenizersPackage(t *testing.T) {
	vocabularies := readPublishedVocabularies(t)
	if os.Getenv("MOEC_PYTHON") == "" {
		if bench, err := filepath.Abs(filepath.Join("..", "..", ".venv-bench", "bin", "python")); err == nil {
			if _, err := os.Stat(bench); err == nil {
				t.Setenv("MOEC_PYTHON", bench)
			}
		}
	}
	py := pythonWithTokenizers(t)
	texts := randomTexts(1000)
	// HARP (U+1FA89) came with Unicode 16.0, CJK Extension J (U+323B0) with 17.0.
	probe := `from tokenizers import Regex, pre_tokenizers as p
so = lambda c: p.Split(Regex(r"\p{So}|\p{Lo}"), "removed").pre_tokenize_str(c) == []
print(so("\U0001FA89") and not so("\U000323B0"))`
	if out, err := exec.Command(py, "-c", probe).Output(); err != nil {
		t.Fatalf("probing the Unicode version of %s's tokenizers: %v", py, err)
	} else if strings.TrimSpace(string(out)) == "True" {
		texts = append(texts, randomRuneTexts(1000)...)
	} else {
		t.Logf("the tokenizers package of %s does not class code points by Unicode 16.0: random code points not drawn", py)
	}
	data, err := json.Marshal(texts)
	if err != nil {
		t.Fatal(err)
	}
	stringsPath := filepath.Join(t.TempDir(), "strings.json")
	if err := os.WriteFile(stringsPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range vocabularies {
		t.Run(v.family, func(t *testing.T) {
			path := publishedFile(t, v)
			out, err := exec.Command(py, filepath.Join("testdata", "reference_ids.py"), path, stringsPath).Output()
			if err != nil {
				t.Fatalf("reference_ids.py: %v", err)
			}
			var want [][]int
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatal(err)
			}
			tok, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
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
