package serve

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// streamChunk is a streamed chunk as the tests read it, usage and logprobs included.
type streamChunk struct {
	Choices []struct {
		Index        int             `json:"index"`
		Text         string          `json:"text"`
		FinishReason *string         `json:"finish_reason"`
		Logprobs     json.RawMessage `json:"logprobs"`
		Delta        struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

// readChunks splits a stream into its chunks (readEvents checks the framing and [DONE]).
func readChunks(t *testing.T, raw []byte) []streamChunk {
	t.Helper()
	readEvents(t, raw)
	var out []streamChunk
	for _, line := range strings.Split(string(raw), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c streamChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		out = append(out, c)
	}
	return out
}

// stream_options: include_usage adds a last chunk with no choices and the usage, and every
// chunk before it has "usage": null, as OpenAI streams; stream_options: null is accepted
// (LangChain, LiteLLM and the Vercel AI SDK send one or the other when they stream).
func TestStreamOptionsUsage(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	for _, c := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/completions", map[string]any{"prompt": "usage", "max_tokens": 9, "seed": 1}},
		{"/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 9, "seed": 1}},
	} {
		c.body["stream"] = true
		c.body["stream_options"] = nil
		code, raw := post(t, ts.URL+c.path, c.body)
		if code != 200 {
			t.Fatalf("%s with stream_options null: %d %s", c.path, code, raw)
		}
		for _, ch := range readChunks(t, raw) {
			if ch.Usage != nil {
				t.Errorf("%s: without include_usage a chunk has usage %s", c.path, ch.Usage)
			}
		}
		c.body["stream_options"] = map[string]any{"include_usage": true}
		code, raw = post(t, ts.URL+c.path, c.body)
		if code != 200 {
			t.Fatalf("%s with include_usage: %d %s", c.path, code, raw)
		}
		chunks := readChunks(t, raw)
		last := chunks[len(chunks)-1]
		var u usage
		if err := json.Unmarshal(last.Usage, &u); err != nil || len(last.Choices) != 0 {
			t.Fatalf("%s: last chunk has choices %v and usage %s, want none and the usage", c.path, last.Choices, last.Usage)
		}
		if u.CompletionTokens != 9 || u.PromptTokens == 0 || u.TotalTokens != u.PromptTokens+9 {
			t.Errorf("%s: usage %+v", c.path, u)
		}
		for _, ch := range chunks[:len(chunks)-1] {
			if string(ch.Usage) != "null" {
				t.Errorf("%s: a chunk before the last has usage %s, want null", c.path, ch.Usage)
			}
		}
	}
}

// A chat message's content may be a list of text parts, and a message may have a name.
func TestChatContentParts(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	msgs := []map[string]any{
		{"role": "system", "content": []map[string]string{{"type": "text", "text": "be"}, {"type": "text", "text": "brief"}}},
		{"role": "user", "name": "ann", "content": "hi"},
	}
	code, body := post(t, ts.URL+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 3})
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if c := decodeCompletion(t, body); c.Usage.PromptTokens != len("system: be\nbrief\nuser (ann): hi\nassistant:") {
		t.Errorf("prompt tokens %d: the parts or the name were not rendered", c.Usage.PromptTokens)
	}
}

// n > 1 returns n choices: the first is what n = 1 returns with the same seed, the others
// draw their own streams, and a stream carries the same texts as the whole answer.
func TestChoices(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	one := map[string]any{"prompt": "choose", "max_tokens": 12, "temperature": 1, "seed": 3}
	_, b := post(t, ts.URL+"/v1/completions", one)
	first := decodeCompletion(t, b).Choices[0].Text
	one["n"] = 3
	code, b := post(t, ts.URL+"/v1/completions", one)
	if code != 200 {
		t.Fatalf("n=3: %d %s", code, b)
	}
	c := decodeCompletion(t, b)
	if len(c.Choices) != 3 || c.Usage.CompletionTokens != 36 {
		t.Fatalf("n=3: %d choices, %d completion tokens, want 3 and 36", len(c.Choices), c.Usage.CompletionTokens)
	}
	if c.Choices[0].Text != first {
		t.Errorf("choice 0 %q, n=1 gave %q", c.Choices[0].Text, first)
	}
	if c.Choices[1].Text == c.Choices[0].Text || c.Choices[2].Text == c.Choices[1].Text {
		t.Errorf("choices repeat one another: %q", []string{c.Choices[0].Text, c.Choices[1].Text, c.Choices[2].Text})
	}
	one["stream"] = true
	code, raw := post(t, ts.URL+"/v1/completions", one)
	if code != 200 {
		t.Fatalf("n=3 stream: %d", code)
	}
	got := make([]string, 3)
	finished := 0
	for _, ch := range readChunks(t, raw) {
		for _, choice := range ch.Choices {
			got[choice.Index] += choice.Text
			if choice.FinishReason != nil {
				finished++
			}
		}
	}
	for i := range got {
		if got[i] != c.Choices[i].Text {
			t.Errorf("streamed choice %d %q, whole %q", i, got[i], c.Choices[i].Text)
		}
	}
	if finished != 3 {
		t.Errorf("%d finish reasons streamed, want 3", finished)
	}
}

// completionLogprobs is the logprobs object of a completion choice.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// logprobs on /v1/completions: one entry per byte of the text, the tokens spell it, the
// greedy token is the most likely alternative, probabilities are at most 1, and the
// streamed entries are the whole answer's.
func TestCompletionLogprobs(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	body := map[string]any{"prompt": "lp", "max_tokens": 10, "temperature": 0, "logprobs": 3}
	code, b := post(t, ts.URL+"/v1/completions", body)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var whole struct {
		Choices []struct {
			Text     string             `json:"text"`
			Logprobs completionLogprobs `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &whole); err != nil {
		t.Fatal(err)
	}
	text, lp := whole.Choices[0].Text, whole.Choices[0].Logprobs
	if len(lp.Tokens) != 10 || len(lp.TokenLogprobs) != 10 || len(lp.TopLogprobs) != 10 || len(lp.TextOffset) != 10 {
		t.Fatalf("logprobs %+v: want 10 entries of each", lp)
	}
	var spelled strings.Builder
	for i, tok := range lp.Tokens {
		if hex, ok := strings.CutPrefix(tok, `bytes:\x`); ok {
			v, err := strconv.ParseUint(hex, 16, 8)
			if err != nil {
				t.Fatalf("token %q", tok)
			}
			spelled.WriteByte(byte(v))
		} else {
			spelled.WriteString(tok)
		}
		if lp.TextOffset[i] != i {
			t.Errorf("text_offset[%d] = %d", i, lp.TextOffset[i])
		}
		v := lp.TokenLogprobs[i]
		if v > 0 || math.IsNaN(v) {
			t.Errorf("token %d logprob %g", i, v)
		}
		best := math.Inf(-1)
		for _, alt := range lp.TopLogprobs[i] {
			best = max(best, alt)
		}
		if n := len(lp.TopLogprobs[i]); n != 3 && n != 4 || best != v || lp.TopLogprobs[i][tok] != v {
			t.Errorf("token %d (%q, %g): top %v; at temperature 0 it must be the most likely of 3", i, tok, v, lp.TopLogprobs[i])
		}
	}
	if viaJSON(t, spelled.String()) != text {
		t.Errorf("tokens spell %q, text %q", spelled.String(), text)
	}
	body["stream"] = true
	_, raw := post(t, ts.URL+"/v1/completions", body)
	var streamed []float64
	for _, ch := range readChunks(t, raw) {
		for _, choice := range ch.Choices {
			if string(choice.Logprobs) == "null" || choice.Logprobs == nil {
				continue
			}
			var part completionLogprobs
			if err := json.Unmarshal(choice.Logprobs, &part); err != nil {
				t.Fatal(err)
			}
			streamed = append(streamed, part.TokenLogprobs...)
		}
	}
	if mustJSON(t, streamed) != mustJSON(t, lp.TokenLogprobs) {
		t.Errorf("streamed logprobs %v, whole %v", streamed, lp.TokenLogprobs)
	}
}

// logprobs on /v1/chat/completions: logprobs.content has one entry per byte of the
// content, with its bytes and top_logprobs alternatives.
func TestChatLogprobs(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	code, b := post(t, ts.URL+"/v1/chat/completions", map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 8, "seed": 2,
		"logprobs": true, "top_logprobs": 2})
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var c struct {
		Choices []struct {
			Message  struct{ Content string } `json:"message"`
			Logprobs struct {
				Content []struct {
					Token       string  `json:"token"`
					Logprob     float64 `json:"logprob"`
					RawBytes    []int   `json:"bytes"`
					TopLogprobs []struct {
						Token   string  `json:"token"`
						Logprob float64 `json:"logprob"`
					} `json:"top_logprobs"`
				} `json:"content"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	content := c.Choices[0].Logprobs.Content
	var spelled []byte
	for i, e := range content {
		if len(e.RawBytes) != 1 || len(e.TopLogprobs) != 2 || e.Logprob > 0 || e.TopLogprobs[0].Logprob < e.TopLogprobs[1].Logprob {
			t.Errorf("entry %d: %+v", i, e)
		}
		spelled = append(spelled, byte(e.RawBytes[0]))
	}
	if got := viaJSON(t, string(spelled)); got != c.Choices[0].Message.Content || len(content) == 0 {
		t.Errorf("logprobs bytes spell %q, content %q", got, c.Choices[0].Message.Content)
	}
}

// The penalties follow OpenAI's definition over the tokens generated so far.
func TestPenalize(t *testing.T) {
	s := newSampler(4)
	for _, tok := range []int{0, 0, 1} {
		s.generated(tok)
	}
	logits := []float32{1, 1, 1, 1}
	cases := []struct {
		p    penalties
		want []float32
	}{
		{penalties{}, []float32{1, 1, 1, 1}},
		{penalties{frequency: 0.5}, []float32{0, 0.5, 1, 1}},
		{penalties{presence: 0.25}, []float32{0.75, 0.75, 1, 1}},
		{penalties{presence: 0.25, frequency: 0.5}, []float32{-0.25, 0.25, 1, 1}},
		{penalties{presence: -1, frequency: -2}, []float32{6, 4, 1, 1}},
	}
	for _, c := range cases {
		if got := s.penalize(logits, c.p); mustJSON(t, got) != mustJSON(t, c.want) {
			t.Errorf("%+v: %v, want %v", c.p, got, c.want)
		}
	}
	s.reset()
	if got := s.penalize(logits, penalties{presence: 1, frequency: 1}); mustJSON(t, got) != mustJSON(t, logits) {
		t.Errorf("after reset: %v", got)
	}
}

// A frequency penalty reaches the sampler: greedy text from the untrained model repeats
// bytes, and the penalty makes the most repeated byte rarer. The bytes are counted from the
// logprobs tokens: the text arrives through JSON, which replaces invalid UTF-8.
func TestPenaltyChangesText(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	most := func(pen float64) int {
		code, b := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "aaaa", "max_tokens": 40, "temperature": 0,
			"frequency_penalty": pen, "logprobs": 0})
		if code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		var c struct {
			Choices []struct {
				Logprobs completionLogprobs `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, tok := range c.Choices[0].Logprobs.Tokens {
			counts[tok]++
		}
		return slices.Max(slices.Collect(maps.Values(counts)))
	}
	plain, penalized := most(0), most(2)
	t.Logf("most repeated byte of 40 greedy tokens: %d times without a penalty, %d with frequency_penalty 2", plain, penalized)
	if plain < 3 || penalized >= plain {
		t.Errorf("most repeated byte: %d times without a penalty, %d with frequency_penalty 2", plain, penalized)
	}
}

// A request without a seed draws one: identical requests sample apart, and the seed the
// X-Moec-Seed header reports gives the same text again. A request with a seed is
// reproducible.
func TestUnseededRequestsDiffer(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	ask := func(body map[string]any) (string, string) {
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(mustJSON(t, body)))
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		return decodeCompletion(t, b).Choices[0].Text, resp.Header.Get("X-Moec-Seed")
	}
	body := map[string]any{"prompt": "same", "max_tokens": 16, "temperature": 1}
	texts := map[string]bool{}
	var text0, seed0 string
	for i := range 3 {
		text, seed := ask(body)
		texts[text] = true
		if i == 0 {
			text0, seed0 = text, seed
		}
	}
	if len(texts) == 1 {
		t.Errorf("three unseeded requests at temperature 1 gave the same text %q", text0)
	}
	seed, err := strconv.ParseInt(seed0, 10, 64)
	if err != nil {
		t.Fatalf("X-Moec-Seed %q: %v", seed0, err)
	}
	body["seed"] = seed
	if again, _ := ask(body); again != text0 {
		t.Errorf("with the reported seed %d: %q, the unseeded request gave %q", seed, again, text0)
	}
	if a, b := func() string { s, _ := ask(body); return s }(), text0; a != b {
		t.Errorf("seeded requests differ: %q and %q", a, b)
	}
}

// GET /v1/models/{id} answers for the served model (whose name holds a slash) and 404s for
// another; created is the server's start time, not 0.
func TestModelByID(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(readAll(t, resp), &v); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, v
	}
	code, m := get("/v1/models/tiny/s")
	now := float64(time.Now().Unix())
	if code != 200 || m["id"] != "tiny/s" || m["object"] != "model" || math.Abs(m["created"].(float64)-now) > 600 {
		t.Errorf("/v1/models/tiny/s: %d %v", code, m)
	}
	code, m = get("/v1/models/gpt-4")
	if e, _ := m["error"].(map[string]any); code != 404 || e["code"] != "model_not_found" {
		t.Errorf("/v1/models/gpt-4: %d %v", code, m)
	}
	_, list := get("/v1/models")
	if created := list["data"].([]any)[0].(map[string]any)["created"].(float64); math.Abs(created-now) > 600 {
		t.Errorf("/v1/models created %v", created)
	}
}

// Only JSON bodies are read: another Content-Type is a 415; none, or JSON with a charset, is fine.
func TestContentType(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1})
	body := `{"prompt":"x","max_tokens":1}`
	for _, c := range []struct {
		ct   string
		code int
	}{
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"application/json; charset=utf-8", 200},
		{"", 200},
	} {
		r, err := http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if c.ct != "" {
			r.Header.Set("Content-Type", c.ct)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != c.code {
			t.Errorf("Content-Type %q: %d %s, want %d", c.ct, resp.StatusCode, b, c.code)
		}
	}
}

// A request's events are held as they come, not in room reserved up front for every event
// it may produce: 64 choices of 100000 tokens would reserve 6.4M events.
func TestJobsDoNotReserveTheirEvents(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	jobs, cancels, _ := newJobs(context.Background(), sampling{n: 64, maxTokens: 100000})
	runtime.ReadMemStats(&after)
	for _, c := range cancels {
		c()
	}
	if len(jobs) != 64 {
		t.Fatalf("%d jobs", len(jobs))
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("making the jobs allocated %d bytes", d)
	}
}
