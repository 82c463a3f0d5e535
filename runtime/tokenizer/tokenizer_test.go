package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moec-dev/moec/lang/diag"
)

// fixtures are the tokenizers testdata/gen_fixtures.py builds with the Hugging Face
// `tokenizers` package, each with the pipeline of a model family's tokenizer.json.
var fixtures = []struct {
	name      string
	byteLevel bool
}{
	{"qwen3", true},
	{"llama3", true},
	{"deepseek_v3", true},
	{"gpt_oss", true},
	{"mistral", false},
	{"llama2_metaspace", false},
}

type fixtureCase struct {
	Text               string `json:"text"`
	IDs                []int  `json:"ids"`
	IDsWithSpecial     []int  `json:"ids_with_special"`
	Decoded            string `json:"decoded"`
	DecodedSkipSpecial string `json:"decoded_skip_special"`
}

func loadFixture(t testing.TB, name string) (*Tokenizer, []fixtureCase) {
	t.Helper()
	tok, err := Load(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("testdata", name+".cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []fixtureCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return tok, f.Cases
}

// TestReferenceIDs holds Encode and Decode to the ids and text the `tokenizers` package
// gives for every string of the corpus, for each family's tokenizer.
func TestReferenceIDs(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			tok, cases := loadFixture(t, fx.name)
			if len(cases) < 20 {
				t.Fatalf("only %d cases", len(cases))
			}
			for _, c := range cases {
				ids, err := tok.Encode(c.Text, false)
				if err != nil {
					t.Fatalf("Encode(%q): %v", c.Text, err)
				}
				if !slices.Equal(ids, c.IDs) && !(len(ids) == 0 && len(c.IDs) == 0) {
					t.Errorf("Encode(%q)\n got  %v\n want %v", c.Text, ids, c.IDs)
				}
				withSpecial, err := tok.Encode(c.Text, true)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(withSpecial, c.IDsWithSpecial) && !(len(withSpecial) == 0 && len(c.IDsWithSpecial) == 0) {
					t.Errorf("Encode(%q, special)\n got  %v\n want %v", c.Text, withSpecial, c.IDsWithSpecial)
				}
				for _, skip := range []bool{false, true} {
					want := c.Decoded
					if skip {
						want = c.DecodedSkipSpecial
					}
					got, err := tok.Decode(c.IDs, skip)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("Decode(ids of %q, skip special %v) = %q, want %q", c.Text, skip, got, want)
					}
				}
			}
		})
	}
}

// TestByteLevelRoundTrip: a byte-level tokenizer decodes every text it encoded to itself
// (Qwen's NFC normalizer aside, which rewrites combining sequences).
func TestByteLevelRoundTrip(t *testing.T) {
	for _, fx := range fixtures {
		if !fx.byteLevel || fx.name == "qwen3" {
			continue
		}
		tok, cases := loadFixture(t, fx.name)
		for _, c := range cases {
			ids, err := tok.Encode(c.Text, false)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := tok.Decode(ids, false); got != c.Text {
				t.Errorf("%s: Decode(Encode(%q)) = %q", fx.name, c.Text, got)
			}
		}
	}
}

// TestMergesForms: llama3.json writes its merges as "a b" strings, the others as pairs;
// both load into the same ranks.
func TestMergesForms(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "llama3.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	model := raw["model"].(map[string]any)
	merges := model["merges"].([]any)
	if _, ok := merges[0].(string); !ok {
		t.Fatalf("llama3.json's merges are not strings: %T", merges[0])
	}
	pairs := make([]any, len(merges))
	for i, m := range merges {
		a, b, _ := strings.Cut(m.(string), " ")
		pairs[i] = []string{a, b}
	}
	model["merges"] = pairs
	asPairs, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	fromStrings, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	fromPairs, err := Parse(asPairs)
	if err != nil {
		t.Fatal(err)
	}
	if len(fromPairs.model.merges) != len(merges) || len(fromStrings.model.merges) != len(merges) {
		t.Fatalf("merges: %d from pairs, %d from strings, %d in the file", len(fromPairs.model.merges), len(fromStrings.model.merges), len(merges))
	}
	for k, m := range fromStrings.model.merges {
		if fromPairs.model.merges[k] != m {
			t.Fatalf("merge %v: %v from strings, %v from pairs", k, m, fromPairs.model.merges[k])
		}
	}
}

// TestRefusals: a tokenizer of another kind is refused naming the kind, as is a component
// moec does not implement.
func TestRefusals(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`, `"WordPiece"`},
		{`{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`, `"Unigram"`},
		{`{"model": {"type": "WordLevel", "vocab": {"a": 0}}}`, `"WordLevel"`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "BertNormalizer"}}`, `"BertNormalizer"`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}}`, `"BertPreTokenizer"`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "WordPiece"}}`, `"WordPiece"`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, `merge 0`},
		{`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}`, `unk_token`},
		{`not json`, `not a tokenizer.json`},
	} {
		_, err := Parse([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) = %v, want an error naming %s", c.json, err, c.want)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(path, []byte(`{"model": {"type": "Unigram", "vocab": []}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	var re *diag.Diagnostic
	if !errors.As(err, &re) || re.Code != diag.CodeTokenizerUnreadable || !strings.Contains(err.Error(), "Unigram") {
		t.Errorf("Load(folder with a Unigram tokenizer) = %v, want %s naming Unigram", err, diag.CodeTokenizerUnreadable)
	}
}

// TestOtherKindsNamed: a file a model folder holds beside tokenizer.json (or instead of
// it), given where a tokenizer.json belongs, is refused naming what it is.
func TestOtherKindsNamed(t *testing.T) {
	for _, c := range []struct {
		data []byte
		want string
	}{
		{[]byte("\x0a\x0b\x0a\x05<unk>\x15\x00\x00\x00\x00\x18\x02\xff"), "SentencePiece model"},
		{[]byte("IQ== 0\nIg== 1\nIw== 2\n"), "tiktoken"},
		{[]byte(`{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000}`), "model config (config.json)"},
		{[]byte(`{"tokenizer_class": "LlamaTokenizer", "chat_template": "{{ x }}"}`), "tokenizer_config.json"},
		{[]byte(`{"bos_token": "<s>", "eos_token": "</s>"}`), "special_tokens_map.json"},
		{[]byte(`{"a": 0, "b": 1, "ab": 2}`), "vocab.json"},
		{[]byte("#version: 0.2\na b\n"), "merges.txt"},
		{[]byte(`{"config": {"pattern": "x"}, "vocab": [{"rank": 0, "token_bytes": "IQ=="}]}`), "tekken.json"},
		{[]byte("  \n"), "an empty file"},
	} {
		_, err := Parse(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", c.data, err, c.want)
		}
	}
}

// TestDecodeRefusesUnknownID: an id past the vocabulary is an error, not a panic.
func TestDecodeRefusesUnknownID(t *testing.T) {
	tok, _ := loadFixture(t, "qwen3")
	if _, err := tok.Decode([]int{tok.VocabSize()}, false); err == nil {
		t.Error("Decode of an id past the vocabulary succeeded")
	}
	if _, err := tok.Decode([]int{-1}, false); err == nil {
		t.Error("Decode of a negative id succeeded")
	}
}

func TestLossyUTF8(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ok", "ok"},
		{"\xf0\x9f", "\uFFFD"},                 // a truncated 4-byte sequence is one maximal subpart
		{"\x80\x80", "\uFFFD\uFFFD"},           // lone continuation bytes each
		{"a\xe4\xbdb", "a\uFFFDb"},             // truncated 3-byte
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // a surrogate: ED then two lone bytes
	} {
		if got := lossyUTF8([]byte(c.in)); got != c.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzEncode: encoding never panics, every id is in the vocabulary, and a byte-level
// tokenizer's decoding gives the text back.
func FuzzEncode(f *testing.F) {
	toks := map[string]*Tokenizer{}
	for _, fx := range fixtures {
		tok, cases := loadFixture(f, fx.name)
		toks[fx.name] = tok
		for _, c := range cases {
			f.Add(c.Text)
		}
	}
	f.Add("\xff\xfe invalid \xc3")
	f.Fuzz(func(t *testing.T, text string) {
		for _, fx := range fixtures {
			tok := toks[fx.name]
			ids, err := tok.Encode(text, true)
			if err != nil {
				t.Fatalf("%s: Encode(%q): %v", fx.name, text, err)
			}
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("%s: Encode(%q) gave id %d outside the vocabulary", fx.name, text, id)
				}
			}
			ids, _ = tok.Encode(text, false)
			got, err := tok.DecodeBytes(ids, false)
			if err != nil {
				t.Fatalf("%s: %v", fx.name, err)
			}
			if fx.byteLevel && fx.name != "qwen3" && string(got) != text {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", fx.name, text, got)
			}
			if fx.name == "qwen3" && utf8.ValidString(text) && string(got) == "" && text != "" {
				t.Fatalf("qwen3: Encode(%q) decodes to nothing", text)
			}
		}
	})
}

// TestStream: the text a stream returns token by token is the decoding of all the ids,
// for every fixture and case (CJK and emoji through byte fallback included).
func TestStream(t *testing.T) {
	for _, fx := range fixtures {
		tok, cases := loadFixture(t, fx.name)
		for _, c := range cases {
			s := tok.NewStream(false)
			var got []byte
			for _, id := range c.IDs {
				b, err := s.Add(id)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
			}
			got = append(got, s.Flush()...)
			if string(got) != c.Decoded {
				t.Errorf("%s: streamed %q, want %q", fx.name, got, c.Decoded)
			}
		}
	}
}
