package serve

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moec-dev/moec/codegen/cuda"
	"github.com/moec-dev/moec/internal/longtest"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestServeOnCudaEmulated: continuous batching through the generated CUDA feeding
// programs (Options.Device cuda-emulated) serves the tokens the CPU serves: six requests of
// prompt lengths 0 to 66 bytes over three slots (so slots are freed and reused, prompts
// are read in chunks of 7 beside decoding slots, and generation runs past the 32-position
// context, whose newest half is read again), greedy and sampled; the same tokens, their
// log-probabilities within 1e-4. On request (MOEC_LONG_EMULATION=1: about a minute);
// cmd/moec's serve_device.txtar serves greedy requests through the CLI by default.
func TestServeOnCudaEmulated(t *testing.T) {
	longtest.Require(t, "about a minute of emulated decoding; make test stays under ten minutes")
	if cuda.FindClang() == "" {
		t.Skip("no clang++ on PATH: the emulated CUDA decoding needs clang 16 or newer")
	}
	m, err := nn.New(tinyModel(), 3)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(11, 12))
	for _, p := range m.Params() {
		for i := range p.W {
			p.W[i] += float32(0.05 * r.NormFloat64())
		}
	}
	const slots, chunk = 3, 7
	prompts := []string{"", "hello", "func main() { return 1 }", "a prompt of thirty-one bytes ok",
		"a much longer prompt that is longer than the context of the model", "x"}
	mkJobs := func() []*job {
		var jobs []*job
		for i, p := range prompts {
			j := &job{ctx: context.Background(), prompt: bytesToIDs(p), maxTokens: 40, topP: 1,
				seed: int64(i + 1), logprobs: true, out: newMailbox(), queued: time.Now()}
			if i%3 == 1 {
				j.temperature, j.topK = 0.9, 20
			}
			jobs = append(jobs, j)
		}
		return jobs
	}
	want := schedule(t, m, slots, chunk, mkJobs())
	start := time.Now()
	dev, err := openDevice(context.Background(), m, Options{Slots: slots, PrefillChunk: chunk, Device: "cuda-emulated"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	t.Logf("generated and compiled in %v", time.Since(start))
	got := scheduleOn(t, m, dev, slots, chunk, mkJobs())
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("job %d: %d tokens, the CPU %d", i, len(got[i]), len(want[i]))
		}
		for k, w := range want[i] {
			g := got[i][k]
			if g.tok != w.tok {
				t.Fatalf("job %d token %d: %d, the CPU %d", i, k, g.tok, w.tok)
			}
			if d := math.Abs(g.logprob - w.logprob); d > 1e-4*max(1, math.Abs(w.logprob)) {
				t.Fatalf("job %d token %d: log-probability %g, the CPU %g", i, k, g.logprob, w.logprob)
			}
		}
	}
}
