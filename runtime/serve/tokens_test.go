package serve

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moec-dev/moec/runtime/generate"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/tokenizer"
)

// tokenizedServer serves a model whose vocab holds a test tokenizer's ids.
func tokenizedServer(t *testing.T, cfg tokenizer.Config) (*nn.Model, *tokenizer.Tokenizer, string) {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join("..", "tokenizer", "testdata", "qwen3.json"))
	if err != nil {
		t.Fatal(err)
	}
	pm := tinyModel()
	pm.Vocab = 720
	m, err := nn.New(pm, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, ts := startServer(t, m, Options{Slots: 2, Tokenizer: tok, TokenizerConfig: cfg})
	return m, tok, ts.URL
}

// With a tokenizer, a completion reads the prompt as its ids and answers with the text of
// the ids it samples: the text `moec generate` writes with the tokenizer and the same seed.
func TestTokenizerCompletion(t *testing.T) {
	m, tok, url := tokenizedServer(t, tokenizer.Config{})
	for _, r := range []struct {
		prompt string
		n      int
		seed   int64
	}{{"hello world", 12, 1}, {"你好 <|im_start|>", 20, 2}, {"", 8, 3}} {
		code, body := post(t, url+"/v1/completions", map[string]any{
			"prompt": r.prompt, "max_tokens": r.n, "temperature": 0.9, "top_k": 0, "seed": r.seed})
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		c := decodeCompletion(t, body)
		text := r.prompt
		if text == "" {
			text = "\n"
		}
		ids, err := tok.Encode(text, true)
		if err != nil {
			t.Fatal(err)
		}
		if c.Usage.PromptTokens != len(ids) || c.Usage.CompletionTokens != r.n {
			t.Errorf("%q: usage %+v, want %d prompt tokens (the tokenizer's) and %d completion tokens", r.prompt, c.Usage, len(ids), r.n)
		}
		prompt := make([]int32, len(ids))
		for i, id := range ids {
			prompt[i] = int32(id)
		}
		var gen []int
		err = generate.GenerateIDs(context.Background(), m.Config(), m.NewDecoder(1, int(m.Config().SeqLen)), prompt, r.n, tok.VocabSize(),
			generate.Sampler{Temperature: 0.9, Seed: r.seed}, func(id int32) (bool, error) { gen = append(gen, int(id)); return false, nil })
		if err != nil {
			t.Fatal(err)
		}
		want, err := tok.Decode(gen, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Choices[0].Text; got != viaJSON(t, want) {
			t.Errorf("%q: served %q, generate gives %q", r.prompt, got, want)
		}
		for _, id := range gen {
			if id >= tok.VocabSize() {
				t.Errorf("sampled id %d past the tokenizer's %d", id, tok.VocabSize())
			}
		}
	}
}

// An end-of-sequence id ends a choice as a stop string does.
func TestTokenizerEOS(t *testing.T) {
	_, _, plain := tokenizedServer(t, tokenizer.Config{})
	body := map[string]any{"prompt": "abc", "max_tokens": 30, "temperature": 0, "seed": 1}
	_, b := post(t, plain+"/v1/completions", body)
	c := decodeCompletion(t, b)
	m, tok, _ := tokenizedServer(t, tokenizer.Config{})
	// The id greedy decoding picks first becomes the end of sequence: the text is empty.
	ids, _ := tok.Encode("abc", true)
	prompt := make([]int32, len(ids))
	for i, id := range ids {
		prompt[i] = int32(id)
	}
	var first int32 = -1
	_ = generate.GenerateIDs(context.Background(), m.Config(), m.NewDecoder(1, int(m.Config().SeqLen)), prompt, 1, tok.VocabSize(),
		generate.Sampler{}, func(id int32) (bool, error) { first = id; return true, nil })
	_, _, url := tokenizedServer(t, tokenizer.Config{EOS: []int{int(first)}})
	_, b = post(t, url+"/v1/completions", body)
	e := decodeCompletion(t, b)
	if e.Choices[0].FinishReason != "stop" || e.Choices[0].Text != "" || e.Usage.CompletionTokens != 1 {
		t.Errorf("with EOS %d: finish %q text %q usage %+v; want stop, no text, 1 token (without it: %q)", first, e.Choices[0].FinishReason, e.Choices[0].Text, e.Usage, c.Choices[0].Text)
	}
}

// A chat request renders the tokenizer's chat template (with the generation prompt, its
// bos_token, and no BOS added again): its answer is the completion of the rendered text.
// A template outside the Jinja subset is refused (501) naming what it met, one that raises
// answers 400 with its message.
func TestTokenizerChatTemplate(t *testing.T) {
	template := "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}" +
		"<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
	cfg := tokenizer.Config{ChatTemplate: template, BOS: []int{700}}
	_, _, url := tokenizedServer(t, cfg)
	_, _, plain := tokenizedServer(t, tokenizer.Config{BOS: []int{700}})
	sampling := map[string]any{"max_tokens": 10, "temperature": 0.7, "seed": 5}
	chatBody := map[string]any{"messages": []map[string]any{{"role": "user", "content": "hi there"}}}
	// The rendering: bos_token (<|im_start|>, id 700), the turn, the generation prompt.
	complBody := map[string]any{"prompt": "<|im_start|><|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n"}
	for k, v := range sampling {
		chatBody[k], complBody[k] = v, v
	}
	code, body := post(t, url+"/v1/chat/completions", chatBody)
	if code != 200 {
		t.Fatalf("chat: %d %s", code, body)
	}
	var chat struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &chat); err != nil {
		t.Fatal(err)
	}
	// The completion endpoint adds no BOS (the tokenizer's post-processor has none), nor
	// does the chat one after the template: the same ids, the same text.
	code, body = post(t, plain+"/v1/completions", complBody)
	if code != 200 {
		t.Fatalf("completion: %d %s", code, body)
	}
	c := decodeCompletion(t, body)
	if chat.Choices[0].Message.Content != c.Choices[0].Text || chat.Usage.PromptTokens != c.Usage.PromptTokens {
		t.Errorf("chat %q (%d prompt tokens), completion of the rendered text %q (%d)", chat.Choices[0].Message.Content, chat.Usage.PromptTokens, c.Choices[0].Text, c.Usage.PromptTokens)
	}
	code, body = post(t, url+"/v1/chat/completions", map[string]any{"messages": []map[string]any{{"role": "system", "content": "x"}}})
	if code != 400 || !strings.Contains(string(body), "no system") {
		t.Errorf("a template that raises: %d %s", code, body)
	}
	_, _, bad := tokenizedServer(t, tokenizer.Config{ChatTemplate: "{% call m() %}{% endcall %}"})
	code, body = post(t, bad+"/v1/chat/completions", chatBody)
	if code != 501 || !strings.Contains(string(body), "call") {
		t.Errorf("a template outside the subset: %d %s", code, body)
	}
}

// Logprobs with a tokenizer are refused.
func TestTokenizerRefusals(t *testing.T) {
	_, _, url := tokenizedServer(t, tokenizer.Config{})
	code, body := post(t, url+"/v1/completions", map[string]any{"prompt": "hi", "logprobs": 2})
	if code != 400 || !strings.Contains(string(body), "logprobs") {
		t.Errorf("logprobs with a tokenizer: %d %s", code, body)
	}
}
