package serve

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/data"
	"github.com/moec-dev/moec/runtime/generate"
	"github.com/moec-dev/moec/runtime/nn"
)

// recordingDecoder is nn's decoder fed one token a Step, keeping the logits of the last
// Step: the token-by-token reference the chunked prefill is held to. It embeds the
// generate.Decoder interface, not *nn.Decoder, so that generate does not find (and use)
// nn's Prefill.
type recordingDecoder struct {
	generate.Decoder
	logits []float32
}

func (r *recordingDecoder) Step(tokens []int32) ([]float32, error) {
	lg, err := r.Decoder.Step(tokens)
	r.logits = lg
	return lg, err
}

// generated is one sampled token and its log-probability.
type generated struct {
	tok     int32
	logprob float64
}

// tokenByToken generates j's tokens as `moec generate` does: one token a Step, the
// cache-full restart read again token by token.
func tokenByToken(t *testing.T, m *nn.Model, j *job) []generated {
	t.Helper()
	cfg := m.Config()
	dec := &recordingDecoder{Decoder: m.NewDecoder(1, int(cfg.SeqLen))}
	prompt := j.prompt
	if len(prompt) == 0 {
		prompt = []int32{'\n'}
	}
	var out []generated
	err := generate.GenerateIDs(context.Background(), cfg, dec, prompt, j.maxTokens, data.Vocab,
		generate.Sampler{Temperature: j.temperature, TopK: j.topK, Seed: j.seed},
		func(id int32) (bool, error) {
			out = append(out, generated{id, logprobsOf(dec.logits[:data.Vocab], int(id), 0).logprob})
			return false, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// schedule runs jobs through a scheduler of the given slots and prefill chunk, all queued
// before it starts (so prompts are read while other slots decode), and returns each job's
// tokens.
func schedule(t *testing.T, m *nn.Model, slots, chunk int, jobs []*job) [][]generated {
	t.Helper()
	return scheduleOn(t, m, nil, slots, chunk, jobs)
}

// scheduleOn is schedule decoding with dec (nil: runtime/nn's decoder).
func scheduleOn(t *testing.T, m *nn.Model, dec feeder, slots, chunk int, jobs []*job) [][]generated {
	t.Helper()
	mt := newMetrics(slots, len(jobs), func() int { return 0 })
	s, err := newScheduler(m, dec, slots, len(jobs), data.Vocab, chunk, mt)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if !s.submit(j) {
			t.Fatal("the queue is full")
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	go s.run(ctx)
	defer func() {
		stop()
		<-s.done
	}()
	out := make([][]generated, len(jobs))
	for i, j := range jobs {
		var evs []event
	wait:
		for {
			select {
			case <-j.out.ready:
			case <-time.After(time.Minute):
				t.Fatalf("job %d: no event for a minute", i)
			}
			for _, ev := range j.out.take(evs) {
				if ev.done {
					if ev.err != nil {
						t.Fatalf("job %d: %v", i, ev.err)
					}
					break wait
				}
				out[i] = append(out[i], generated{ev.tok, ev.logprob.logprob})
			}
		}
	}
	return out
}

// Reading prompts in chunks must not change what is generated: the tokens equal those of
// token-by-token feeding (`moec generate`) and their log-probabilities agree within 1e-5
// (relative), greedy and sampled, for chunks of 1, of sizes that do not divide the
// prompts and larger than the context, on an MoE and a dense model and on Llama 4's and
// gpt-oss's per-layer attention (chunks, layers without rotary positions, alternating
// windows). The requests generate
// past the 32-position context, so the cache-full restart (read again in chunks) is
// covered, and three slots serve six requests, so prompts are read beside decoding slots.
func TestPrefillMatchesTokenByToken(t *testing.T) {
	dense := tinyModel()
	dense.MoE = nil
	// Llama 4's attention: chunks of 5, every second layer without rotary positions and
	// with the query temperature, unscaled q/k norms.
	llama4 := tinyModel()
	llama4.Layers = 4
	a := &llama4.Attention
	a.NopeEvery, a.ChunkSize, a.QKL2Norm, a.NopeTemperature, a.NopeTemperatureFloor = 2, 5, true, 0.5, 3
	// gpt-oss's attention: sinks and a window of 6 in every other layer.
	gptOSS := tinyModel()
	gptOSS.Attention.Sinks, gptOSS.Attention.Window, gptOSS.Attention.FullEvery = true, 6, 2
	for name, cfg := range map[string]func() *program.Model{"moe": tinyModel, "dense": func() *program.Model { return dense },
		"llama4_chunked": func() *program.Model { return llama4 }, "gpt_oss_window": func() *program.Model { return gptOSS }} {
		t.Run(name, func(t *testing.T) {
			m, err := nn.New(cfg(), 3)
			if err != nil {
				t.Fatal(err)
			}
			// Weights further from their small initial values: logits that differ by more
			// than rounding from token to token, so a misplaced row shows.
			r := rand.New(rand.NewPCG(11, 12))
			for _, p := range m.Params() {
				for i := range p.W {
					p.W[i] += float32(0.05 * r.NormFloat64())
				}
			}
			prompts := []string{"", "hello", "func main() { return 1 }", "a prompt of thirty-one bytes ok",
				"a much longer prompt that is longer than the context of the model", "x"}
			mkJobs := func() []*job {
				var jobs []*job
				for i, p := range prompts {
					j := &job{ctx: context.Background(), prompt: bytesToIDs(p), maxTokens: 45, topP: 1,
						seed: int64(i + 1), logprobs: true, out: newMailbox(), queued: time.Now()}
					if i%2 == 1 {
						j.temperature, j.topK = 0.9, 20
					}
					jobs = append(jobs, j)
				}
				return jobs
			}
			var want [][]generated
			for _, j := range mkJobs() {
				want = append(want, tokenByToken(t, m, j))
			}
			for _, chunk := range []int{1, 3, 7, 16, 256} {
				t.Run(fmt.Sprint("chunk", chunk), func(t *testing.T) {
					got := schedule(t, m, 3, chunk, mkJobs())
					for i := range want {
						if len(got[i]) != len(want[i]) {
							t.Fatalf("job %d: %d tokens, want %d", i, len(got[i]), len(want[i]))
						}
						for k, w := range want[i] {
							g := got[i][k]
							if g.tok != w.tok {
								t.Fatalf("job %d token %d: %d, token by token %d", i, k, g.tok, w.tok)
							}
							if d := math.Abs(g.logprob - w.logprob); d > 1e-5*max(1, math.Abs(w.logprob)) {
								t.Fatalf("job %d token %d: log-probability %g, token by token %g", i, k, g.logprob, w.logprob)
							}
						}
					}
				})
			}
		})
	}
}

func bytesToIDs(s string) []int32 {
	ids := make([]int32, len(s))
	for i := range len(s) {
		ids[i] = int32(s[i])
	}
	return ids
}

// A prompt of P tokens reaches its first token in ceil(P/N) steps with a prefill chunk of
// N (token by token it took P), and the context read again after the cache fills is read
// in chunks too. Steps are counted, not timed.
func TestPromptReadInChunks(t *testing.T) {
	m := newModel(t)
	for _, c := range []struct {
		prompt, chunk, maxTokens int
		steps                    int64
	}{
		{29, 1, 1, 29},
		{29, 4, 1, 8},
		{29, 7, 1, 5},
		{29, 29, 1, 1},
		{29, 256, 1, 1},
		{1, 4, 1, 1},
		// 31 prompt tokens in 8 steps, the 32nd position in one, then the cache is full:
		// its newest 16 tokens are read again in 4 steps before the third token.
		{31, 4, 3, 8 + 1 + 4},
		{31, 256, 3, 1 + 1 + 1},
	} {
		t.Run(fmt.Sprintf("P%d_N%d_tokens%d", c.prompt, c.chunk, c.maxTokens), func(t *testing.T) {
			srv, ts := startServer(t, m, Options{Slots: 2, PrefillChunk: c.chunk})
			code, body := post(t, ts.URL+"/v1/completions", map[string]any{
				"prompt": strings.Repeat("a", c.prompt), "max_tokens": c.maxTokens, "temperature": 0})
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			if u := decodeCompletion(t, body).Usage; u.PromptTokens != c.prompt || u.CompletionTokens != c.maxTokens {
				t.Errorf("usage %+v, want %d prompt and %d completion tokens", u, c.prompt, c.maxTokens)
			}
			if steps, _ := srv.stepCounts(); steps != c.steps {
				t.Errorf("%d steps, want %d", steps, c.steps)
			}
		})
	}
}

// Each step feeds every decoding slot its token and shares the chunk among the prompts
// being read, oldest first; a free slot feeds nothing.
func TestPlanSharesTheChunk(t *testing.T) {
	s := &scheduler{chunk: 8, slots: make([]slot, 5)}
	set := func(i, length, fed int, admitted uint64) {
		s.slots[i] = slot{job: &job{}, tokens: make([]int32, length), fed: fed, admitted: admitted}
	}
	set(0, 10, 9, 0)  // decoding
	set(1, 20, 0, 3)  // a prompt, newer
	set(2, 5, 0, 2)   // a prompt, older
	set(4, 40, 39, 4) // decoding
	runs, pos := make([][]int32, 5), make([]int, 5)
	s.plan(runs, pos, nil)
	for i, want := range [][2]int{{1, 9}, {3, 0}, {5, 0}, {0, 0}, {1, 39}} {
		if len(runs[i]) != want[0] || pos[i] != want[1] {
			t.Errorf("slot %d feeds %d tokens at %d, want %d at %d", i, len(runs[i]), pos[i], want[0], want[1])
		}
	}
	s.chunk = 2 // the older prompt takes it all; the newer waits; decoding goes on
	s.plan(runs, pos, nil)
	for i, want := range []int{1, 0, 2, 0, 1} {
		if len(runs[i]) != want {
			t.Errorf("chunk 2: slot %d feeds %d tokens, want %d", i, len(runs[i]), want)
		}
	}
}
