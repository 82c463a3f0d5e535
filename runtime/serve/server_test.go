package serve

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moec-dev/moec/runtime/generate"
)

type req struct {
	prompt string
	n      int
	temp   float64
	topK   int
	seed   int64
}

// Requests that share the batched decoder must produce exactly what each produces alone,
// and what `moec generate` produces with the same seed: sampling streams are per request
// and each slot keeps its own positions. Some requests run past the 32-token context, so
// the refill path is covered too.
func TestConcurrentMatchesAlone(t *testing.T) {
	m := newModel(t)
	srv, ts := startServer(t, m, Options{Slots: 3})
	reqs := []req{
		{"func main() {", 40, 0.8, 40, 1},
		{"hello", 12, 0, 0, 0},
		{"", 20, 1.0, 0, 7},
		{"a much longer prompt that is longer than the context of the model", 30, 0.7, 10, 3},
		{"x", 5, 0.8, 40, 1},
		{"func main() {", 40, 0.8, 40, 2},
		{"tiny", 50, 1.5, 5, 9},
	}
	ask := func(r req) string {
		code, body := post(t, ts.URL+"/v1/completions", map[string]any{
			"prompt": r.prompt, "max_tokens": r.n, "temperature": r.temp, "top_k": r.topK, "seed": r.seed})
		if code != 200 {
			t.Errorf("status %d: %s", code, body)
			return ""
		}
		c := decodeCompletion(t, body)
		if c.Usage.CompletionTokens != r.n || c.Choices[0].FinishReason != "length" {
			t.Errorf("usage %+v finish %q, want %d tokens and length", c.Usage, c.Choices[0].FinishReason, r.n)
		}
		return c.Choices[0].Text
	}
	alone := make([]string, len(reqs))
	for i, r := range reqs {
		alone[i] = ask(r)
		var want strings.Builder
		prompt := []byte(r.prompt)
		if len(prompt) == 0 {
			prompt = []byte{'\n'}
		}
		err := generate.Generate(context.Background(), m, prompt, r.n, generate.Sampler{Temperature: r.temp, TopK: r.topK, Seed: r.seed},
			func(b byte) error { want.WriteByte(b); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if w := viaJSON(t, want.String()); alone[i] != w {
			t.Errorf("request %d: served %q, generate gives %q", i, alone[i], w)
		}
	}
	if alone[0] == alone[5] {
		t.Errorf("seeds 1 and 2 gave the same text %q: the seed does not reach the sampler", alone[0])
	}
	// Concurrent rounds until two of them shared decoding steps (at most six): every round's
	// answers must equal the ones alone. Whether requests meet in a step depends on when
	// they arrive — a request of this tiny model lasts a few milliseconds, and a loaded
	// machine spreads the arrivals out — so the test asks for sharing in two rounds, not in
	// every one.
	shared := 0
	for round := 0; round < 6 && shared < 2; round++ {
		got := make([]string, len(reqs))
		steps0, slots0 := srv.stepCounts()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, r := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[i] = ask(r)
			}()
		}
		close(start)
		wg.Wait()
		// Alone, every step had one busy slot; sharing shows as a mean above one.
		steps1, slots1 := srv.stepCounts()
		batch := float64(slots1-slots0) / float64(steps1-steps0)
		if batch > 1 {
			shared++
		}
		t.Logf("round %d: mean batch %.2f", round, batch)
		for i := range reqs {
			if got[i] != alone[i] {
				t.Errorf("round %d request %d: concurrent %q, alone %q", round, i, got[i], alone[i])
			}
		}
	}
	if shared < 2 {
		t.Errorf("%d concurrent rounds of six shared decoding steps, want 2", shared)
	}
}

// A streamed answer carries the same text as the whole one, in order, then [DONE].
func TestStreamingMatchesWhole(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	body := map[string]any{"prompt": "stream me", "max_tokens": 45, "temperature": 0.9, "seed": 4}
	_, whole := post(t, ts.URL+"/v1/completions", body)
	want := decodeCompletion(t, whole).Choices[0].Text
	body["stream"] = true
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(mustJSON(t, body)))
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	raw := readAll(t, resp)
	events := readEvents(t, raw)
	var got strings.Builder
	for i, ev := range events {
		got.WriteString(ev.Choices[0].Text)
		if last := i == len(events)-1; last != (ev.Choices[0].FinishReason != "") {
			t.Errorf("event %d of %d has finish_reason %q", i, len(events), ev.Choices[0].FinishReason)
		}
	}
	if got.String() != want {
		t.Errorf("streamed %q, whole %q", got.String(), want)
	}
	if len(events) < 3 {
		t.Errorf("only %d events: the text was not streamed", len(events))
	}
}

func TestChat(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	msgs := []map[string]string{{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}}
	code, body := post(t, ts.URL+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 20, "temperature": 0, "model": "tiny/s"})
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	c := decodeCompletion(t, body)
	if c.Choices[0].Message.Role != "assistant" || c.Usage.PromptTokens != len("system: be brief\nuser: hi\nassistant:") {
		t.Errorf("answer %s", body)
	}
	code, raw := post(t, ts.URL+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 20, "temperature": 0, "stream": true})
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	events := readEvents(t, raw)
	if events[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("first chunk %+v has no assistant role", events[0])
	}
	var got strings.Builder
	for _, ev := range events {
		got.WriteString(ev.Choices[0].Delta.Content)
	}
	if got.String() != c.Choices[0].Message.Content {
		t.Errorf("streamed %q, whole %q", got.String(), c.Choices[0].Message.Content)
	}
}

// A stop string ends the text before it, with finish_reason "stop", in both forms.
func TestStop(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	body := map[string]any{"prompt": "abc", "max_tokens": 60, "temperature": 0.9, "seed": 5}
	_, whole := post(t, ts.URL+"/v1/completions", body)
	full := decodeCompletion(t, whole).Choices[0].Text
	if len(full) < 20 {
		t.Fatalf("text %q too short to pick a stop string", full)
	}
	// The untrained model writes mostly non-ASCII bytes; stop at its first printable pair.
	at := -1
	for i := 5; i+1 < len(full) && at < 0; i++ {
		if full[i] >= ' ' && full[i] < 0x7f && full[i+1] >= ' ' && full[i+1] < 0x7f {
			at = i
		}
	}
	if at < 0 {
		t.Fatalf("text %q has no printable pair to stop at; pick another seed", full)
	}
	stop := full[at : at+2]
	want := full[:strings.Index(full, stop)]
	body["stop"] = []string{"\x00never", stop}
	_, b := post(t, ts.URL+"/v1/completions", body)
	c := decodeCompletion(t, b)
	if c.Choices[0].Text != want || c.Choices[0].FinishReason != "stop" {
		t.Errorf("with stop %q: %q (%s), want %q (stop)", stop, c.Choices[0].Text, c.Choices[0].FinishReason, want)
	}
	body["stream"] = true
	_, raw := post(t, ts.URL+"/v1/completions", body)
	var got strings.Builder
	events := readEvents(t, raw)
	for _, ev := range events {
		got.WriteString(ev.Choices[0].Text)
	}
	if got.String() != want || events[len(events)-1].Choices[0].FinishReason != "stop" {
		t.Errorf("streamed with stop: %q, want %q", got.String(), want)
	}
}

// Inputs beyond the limits are refused with a 4xx and a message naming the limit.
func TestLimits(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1, MaxPromptBytes: 100, MaxTokens: 50, MaxBodyBytes: 1000})
	url := ts.URL + "/v1/completions"
	cases := []struct {
		name string
		body any
		code int
		want string
	}{
		{"bad json", `{"prompt": `, 400, "not valid JSON"},
		{"too many tokens", map[string]any{"prompt": "a", "max_tokens": 51}, 400, "between 1 and 50"},
		{"zero tokens", map[string]any{"prompt": "a", "max_tokens": 0}, 400, "between 1 and 50"},
		{"long prompt", map[string]any{"prompt": strings.Repeat("a", 101)}, 400, "the limit is 100"},
		{"huge body", map[string]any{"prompt": strings.Repeat("a", 2000)}, 413, "limit of 1000 bytes"},
		{"negative temperature", map[string]any{"prompt": "a", "temperature": -1}, 400, "between 0 and 2"},
		{"negative top_k", map[string]any{"prompt": "a", "top_k": -1}, 400, "top_k"},
		{"no choices", map[string]any{"prompt": "a", "n": 0}, 400, "n = 0: it must be between 1 and 64"},
		{"too many choices", map[string]any{"prompt": "a", "n": 65}, 400, "n = 65: it must be between 1 and 64"},
		{"token prompt", map[string]any{"prompt": []int{1, 2}}, 400, "token ids"},
		{"two prompts", map[string]any{"prompt": []string{"a", "b"}}, 400, "one prompt"},
		{"stop list", map[string]any{"prompt": "a", "stop": []string{"a", "b", "c", "d", "e"}}, 400, "at most 4"},
		{"unknown model", map[string]any{"prompt": "a", "model": "gpt-4"}, 404, `model_not_found`},
		{"top_p out of range", map[string]any{"prompt": "x", "max_tokens": 3, "top_p": 5}, 400, "top_p = 5: it must be between 0 and 1"},
		{"unknown field", map[string]any{"prompt": "x", "top_q": 0.5}, 400, `Unrecognized request argument supplied: top_q (did you mean top_p?)`},
		{"chat body", map[string]any{"messages": []any{}, "max_tokens": 3}, 400, `"param":"messages"`},
		{"no prompt", map[string]any{"max_tokens": 3}, 400, "prompt is missing"},
		{"penalty", map[string]any{"prompt": "x", "presence_penalty": 2.5}, 400, "presence_penalty = 2.5: it must be between -2 and 2"},
		{"frequency penalty", map[string]any{"prompt": "x", "frequency_penalty": -3}, 400, "frequency_penalty = -3: it must be between -2 and 2"},
		{"logprobs", map[string]any{"prompt": "x", "logprobs": 21}, 400, "logprobs = 21: it must be between 0 and 20"},
		{"logprobs with echo", map[string]any{"prompt": "x", "logprobs": 1, "echo": true}, 400, "logprobs with echo"},
		{"stream_options without stream", map[string]any{"prompt": "x", "stream_options": map[string]any{"include_usage": true}}, 400, "only allowed when stream is true"},
		{"stream_options unknown", map[string]any{"prompt": "x", "stream": true, "stream_options": map[string]any{"include_usages": true}}, 400, "include_usages"},
		{"trailing junk", `{"prompt":"x","max_tokens":1} trailing`, 400, "data after its JSON object"},
		{"two objects", `{"prompt":"x","max_tokens":1}{"prompt":"y"}`, 400, "data after its JSON object"},
	}
	for _, c := range cases {
		code, body := post(t, url, c.body)
		if code != c.code || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d %s, want %d containing %q", c.name, code, body, c.code, c.want)
		}
	}
	user := []map[string]any{{"role": "user", "content": "x"}}
	chatCases := []struct {
		name string
		body any
		want string
	}{
		{"bad role", map[string]any{"messages": []map[string]string{{"role": "robot", "content": "x"}}}, "messages[0].role"},
		{"top_logprobs without logprobs", map[string]any{"messages": user, "top_logprobs": 2}, "top_logprobs needs logprobs: true"},
		{"top_logprobs too many", map[string]any{"messages": user, "logprobs": true, "top_logprobs": 21}, "top_logprobs = 21"},
		{"image part", map[string]any{"messages": []map[string]any{{"role": "user", "content": []map[string]any{
			{"type": "image_url", "image_url": map[string]string{"url": "http://127.0.0.1/x.png"}}}}}}, `\"image_url\" part; this model reads text only`},
		{"tool calls", map[string]any{"messages": []map[string]any{{"role": "assistant", "content": "x", "tool_calls": []any{}}}}, "tool_calls"},
	}
	for _, c := range chatCases {
		code, body := post(t, ts.URL+"/v1/chat/completions", c.body)
		if code != 400 || !strings.Contains(string(body), c.want) {
			t.Errorf("chat %s: %d %s, want 400 containing %q", c.name, code, body, c.want)
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d", url, resp.StatusCode)
	}
}

// With one slot and a queue of one, a third concurrent request is refused with 429, and a
// request that cannot finish within the timeout gets 504.
func TestQueueFullAndTimeout(t *testing.T) {
	// The long requests ask for more tokens than any machine decodes in the timeout (a
	// tiny model decodes tens of thousands a second, and the chunked prefill reads the
	// context again in one step when the cache fills).
	const tooMany = 50_000_000
	s, ts := startServer(t, newModel(t), Options{Slots: 1, QueueDepth: 1, Timeout: 2 * time.Second, MaxTokens: tooMany})
	long := map[string]any{"prompt": "a", "max_tokens": tooMany}
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			code, _ := post(t, ts.URL+"/v1/completions", long)
			codes <- code
		}()
	}
	// Wait until one request holds the slot and the other waits.
	deadline := time.Now().Add(5 * time.Second)
	for len(s.sched.queue) < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	code, body := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "b", "max_tokens": 1})
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "queue_full") {
		t.Errorf("third request: %d %s, want 429 queue_full", code, body)
	}
	for range 2 {
		if c := <-codes; c != http.StatusGatewayTimeout {
			t.Errorf("long request ended with %d, want 504", c)
		}
	}
	// The slot is free again once the timed-out requests leave. A client sees its 504
	// slightly before the scheduler has dropped the request, so allow a moment for that.
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, body := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "c", "max_tokens": 3})
		if code == 200 {
			break
		}
		if code != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Errorf("after the timeouts: %d %s", code, body)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealthModelsMetrics(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 2})
	post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 4})
	post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "hi", "max_tokens": -4})
	for _, path := range []string{"/healthz", "/v1/models"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "tiny/s") {
			t.Errorf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readAll(t, resp))
	for _, want := range []string{
		`moec_requests_total{code="200",endpoint="completions"} 1`,
		`moec_requests_total{code="400",endpoint="completions"} 1`,
		"moec_generation_tokens_total 4",
		"moec_prompt_tokens_total 2",
		"moec_slots 2",
		"moec_num_requests_running 0",
		"moec_num_requests_waiting 0",
		`moec_e2e_request_latency_seconds_count{endpoint="completions"} 2`,
		// vLLM's latency histograms: one first token, three gaps between four tokens.
		"moec_time_to_first_token_seconds_count 1",
		"moec_inter_token_latency_seconds_count 3",
		"moec_request_queue_time_seconds_count 1",
		"moec_request_generation_tokens_count 1",
		"# TYPE moec_time_to_first_token_seconds histogram",
		// The Go and process collectors of the server's own registry.
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	// Every sample line is "name{labels} value" with a declared TYPE.
	typed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			typed[strings.Fields(name)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err != nil || !(typed[name] || typed[base]) {
			t.Errorf("bad metrics line %q", line)
		}
	}
}

// Closing the server ends waiting requests with 503 instead of leaving them hanging.
func TestClose(t *testing.T) {
	s, ts := startServer(t, newModel(t), Options{Slots: 1, MaxTokens: 50_000_000})
	done := make(chan int)
	go func() {
		code, _ := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "a", "max_tokens": 50_000_000})
		done <- code
	}()
	time.Sleep(100 * time.Millisecond)
	s.Close()
	select {
	case code := <-done:
		if code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request still running 10 s after Close")
	}
}

// A client that hangs up mid-stream frees its slot: the next request on a one-slot server
// is answered instead of waiting behind a generation nobody reads.
func TestDisconnectFreesSlot(t *testing.T) {
	_, ts := startServer(t, newModel(t), Options{Slots: 1, MaxTokens: 1000000, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	r, err := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions",
		strings.NewReader(`{"prompt":"a","max_tokens":1000000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	done := make(chan int)
	go func() {
		code, _ := post(t, ts.URL+"/v1/completions", map[string]any{"prompt": "b", "max_tokens": 2})
		done <- code
	}()
	select {
	case code := <-done:
		if code != 200 {
			t.Errorf("next request: %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the slot was not freed after the client left")
	}
}

// top_p keeps the fewest most likely tokens reaching that mass: 0 is greedy, a mass below
// the top token's is greedy too, and 1 leaves the draw exactly as without it.
func TestSampleTopP(t *testing.T) {
	logits := []float32{0.5, 2, 1.9, -1}
	s := newSampler(len(logits))
	seen := map[int]bool{}
	for seed := int64(0); seed < 200; seed++ {
		if got := s.sample(logits, 1, 0, 0, seed, 0, 0); got != 1 {
			t.Fatalf("top_p 0, seed %d: token %d, want the argmax 1", seed, got)
		}
		// p(1) ≈ 0.46, p(2) ≈ 0.42: a mass of 0.8 keeps exactly tokens 1 and 2.
		got := s.sample(logits, 1, 0, 0.8, seed, 0, 0)
		if got != 1 && got != 2 {
			t.Fatalf("top_p 0.8, seed %d: token %d outside the nucleus {1, 2}", seed, got)
		}
		seen[got] = true
		if a, b := s.sample(logits, 1, 0, 1, seed, 0, 0), s.sample(logits, 1, 0, 1, seed, 0, 0); a != b {
			t.Fatalf("top_p 1 is not deterministic per seed")
		}
	}
	if !seen[1] || !seen[2] {
		t.Errorf("top_p 0.8 drew only %v over 200 seeds; both nucleus tokens should appear", seen)
	}
}
