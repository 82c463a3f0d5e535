package nn

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/program/programtest"
)

// benchModel is the speed target: d=256, 4 layers, 4 heads, 8 experts top-2 SwiGLU
// of width 512 in every layer, sequences of 128, batches of 16, a byte-sized vocabulary.
func benchModel() *program.Model {
	return programtest.MustModel("bench", `vocab = 256; vocab_pad_to = 1; d_model = 256; layers = 4; seq_len = 128
attention { heads = 4 }
ffn { hidden = 512; activation = swiglu }
moe { experts = 8; top_k = 2; normalize = true; capacity_factor = 1.25; balance_loss = 0.01 }`)
}

// BenchmarkTrainStep measures one forward and backward pass (no optimizer) of 16×128 tokens.
func BenchmarkTrainStep(b *testing.B) {
	cfg := benchModel()
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	batch := randBatch(rand.New(rand.NewPCG(1, 2)), cfg.Vocab, 16, 128)
	if _, err := m.ForwardBackward(batch, StepOptions{Train: true}); err != nil { // size the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for i := 0; b.Loop(); i++ {
		if _, err := m.ForwardBackward(batch, StepOptions{Step: int64(i), Train: true}); err != nil {
			b.Fatal(err)
		}
	}
	tokens := float64(16*128) * float64(b.N)
	b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
	// Per CPU-second as well: on a shared machine wall time measures the neighbours too.
	b.ReportMetric(tokens/(cpuSeconds()-cpu0), "tokens/cpu-s")
}

// BenchmarkForward measures the inference forward pass (forward and loss, no gradients) of
// 16×128 tokens, the workload of moebench's "inference forward" row.
func BenchmarkForward(b *testing.B) {
	cfg := benchModel()
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	batch := randBatch(rand.New(rand.NewPCG(1, 2)), cfg.Vocab, 16, 128)
	if _, err := m.Forward(batch, StepOptions{}); err != nil { // size the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuSeconds()
	for b.Loop() {
		if _, err := m.Forward(batch, StepOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	tokens := float64(16*128) * float64(b.N)
	b.ReportMetric(tokens/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(tokens/(cpuSeconds()-cpu0), "tokens/cpu-s")
}

// cpuSeconds is the user+system CPU time of this process.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkDecode measures generation: 16 sequences, 128 positions each, per iteration.
func BenchmarkDecode(b *testing.B) {
	cfg := benchModel()
	m, err := New(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	const batch, steps = 16, 128
	dec := m.NewDecoder(batch, steps)
	toks := make([]int32, batch)
	b.ReportAllocs()
	for b.Loop() {
		dec.Reset()
		for range steps {
			logits, err := dec.Step(toks)
			if err != nil {
				b.Fatal(err)
			}
			for i := range toks { // greedy, so the work depends on what the model says
				best := 0
				row := logits[i*256 : (i+1)*256]
				for v, x := range row {
					if x > row[best] {
						best = v
					}
				}
				toks[i] = int32(best)
			}
		}
	}
	b.ReportMetric(float64(batch*steps)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkTrainStepPyTorch measures the peer: the same model and step in PyTorch
// (testdata/bench.py, float32, as many threads as GOMAXPROCS), for the speed comparison.
func BenchmarkTrainStepPyTorch(b *testing.B) {
	py := peerPython(b)
	var tps, tpc float64
	for b.Loop() {
		out, err := exec.Command(py, filepath.Join("testdata", "bench.py"), strconv.Itoa(runtime.GOMAXPROCS(0)), "2").CombinedOutput()
		if err != nil {
			b.Fatalf("bench.py: %v\n%s", err, out)
		}
		var res struct {
			TokensPerS    float64 `json:"tokens_per_s"`
			TokensPerCPUS float64 `json:"tokens_per_cpu_s"`
		}
		if err := json.Unmarshal(lastLine(out), &res); err != nil {
			b.Fatalf("bench.py output: %v\n%s", err, out)
		}
		tps, tpc = res.TokensPerS, res.TokensPerCPUS
	}
	b.ReportMetric(tps, "tokens/s")
	b.ReportMetric(tpc, "tokens/cpu-s")
}
