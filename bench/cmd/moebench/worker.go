package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/moec-dev/moec/bench/internal/timing"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/blas"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/quant"
)

// Shapes of the benchmark, shared with bench/peer/moe_peer.py.
const (
	benchBatch = 16
	benchSeq   = 128
	benchVocab = 256
)

// The model sizes moebench measures (moe_peer.py's --size).
const (
	sizeSmall = "small" // d_model 256, experts of 512
	sizeLarge = "large" // d_model 1024, experts of 2048: about 219M parameters
)

// benchModel is the small model both sides build.
func benchModel() *program.Model { return modelFor(sizeSmall) }

// modelFor is the model of size: the same structure at two widths, 64-wide heads.
func modelFor(size string) *program.Model {
	d, hidden := int64(256), int64(512)
	if size == sizeLarge {
		d, hidden = 1024, 2048
	}
	return &program.Model{
		Name: "moebench", Vocab: benchVocab, VocabPadTo: 1, DModel: d, Layers: 4, SeqLen: benchSeq,
		Norm: program.RMSNorm, NormEps: 1e-5, NormPlacement: program.PreNorm, FinalNorm: true,
		Position:  program.Learned,
		Attention: program.Attention{Heads: int(d / 64), KVHeads: int(d / 64), HeadDim: 64, ShareWeights: 1},
		FFN:       program.FFN{Hidden: hidden, Activation: program.SwiGLU},
		MoE: &program.MoE{Experts: 8, TopK: 2, ExpertHidden: hidden, Activation: program.SwiGLU,
			Router: program.RouteHidden, Score: program.Softmax, Normalize: true,
			BalanceLoss: 0.01, Every: 1},
	}
}

// sizeTitle heads a size's table.
func sizeTitle(size string) string {
	if size == sizeLarge {
		return "large model: d_model 1024, 16 heads, experts of 2048 (~219M parameters)"
	}
	return "small model: d_model 256, 4 heads, experts of 512"
}

// minIters is the fewest timed iterations of a measurement: one at the large size, whose
// training step takes seconds.
func minIters(size string) int {
	if size == sizeLarge {
		return 1
	}
	return 2
}

// adamConfig matches torch.optim.AdamW(lr=1e-3, weight_decay=0.1) with its default betas.
func adamConfig() optim.Config {
	return optim.Config{LR: 1e-3, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Schedule: "constant"}
}

// result is one worker's measurement, the JSON line a worker (moec or the peer) prints.
type result struct {
	Mode       string  `json:"mode"`
	TokensPerS float64 `json:"tokens_per_s,omitempty"`
	GFLOPS     float64 `json:"gflops,omitempty"`
	GBps       float64 `json:"gbps,omitempty"` // stream mode: weight bytes read per second / 1e9
	Iters      int     `json:"iters,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
	// CPUSeconds is the process's user+system time over the timed iterations: on a
	// shared machine tokens per CPU-second says what wall time cannot.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	Loss       float64 `json:"loss,omitempty"`
	FirstLoss  float64 `json:"first_loss,omitempty"`
	// The peer's own fields: its MoE formulation, torch version and product back end,
	// the tuning pass's rates per workload, and the check's first and last loss per
	// formulation.
	Impl    string               `json:"impl,omitempty"`
	Torch   string               `json:"torch,omitempty"`
	Backend string               `json:"backend,omitempty"`
	Rates   map[string]float64   `json:"rates,omitempty"`
	Impls   map[string][]float64 `json:"impls,omitempty"`
	// The loss curve's fields (curve, curve-bf16): every step's loss, the mean of the last
	// curveTail, a fingerprint of the batches trained on, and how bf16 products ran.
	Losses    []float64 `json:"losses,omitempty"`
	FinalLoss float64   `json:"final_loss,omitempty"`
	Batches   string    `json:"batches,omitempty"`
	Note      string    `json:"note,omitempty"`
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// benchTokens is the fixed batch of both training and forward workloads.
func benchTokens() nn.Batch {
	r := rand.New(rand.NewPCG(1, 2))
	toks := make([]int32, benchBatch*(benchSeq+1))
	for i := range toks {
		toks[i] = int32(r.IntN(benchVocab))
	}
	return nn.Batch{B: benchBatch, T: benchSeq, Tokens: toks}
}

// trainer is the moec training step: zero the gradients, forward + backward, AdamW.
type trainer struct {
	m     *nn.Model
	adam  *optim.AdamW
	batch nn.Batch
	step  int64
	loss  float64
}

func newTrainer(size string) (*trainer, error) {
	m, err := nn.New(modelFor(size), 1)
	if err != nil {
		return nil, fmt.Errorf("building the model: %w", err)
	}
	var ps []optim.Param
	for _, p := range m.Params() {
		ps = append(ps, optim.Param{Name: p.Name, Shape: p.Shape, W: p.W, G: p.G})
	}
	adam, err := optim.NewAdamW(adamConfig(), ps)
	if err != nil {
		return nil, fmt.Errorf("building AdamW: %w", err)
	}
	return &trainer{m: m, adam: adam, batch: benchTokens()}, nil
}

func (t *trainer) Step() error {
	t.m.ZeroGrad()
	st, err := t.m.ForwardBackward(t.batch, nn.StepOptions{Step: t.step, Train: true})
	if err != nil {
		return fmt.Errorf("step %d: %w", t.step, err)
	}
	if _, err := t.adam.Step(1); err != nil {
		return fmt.Errorf("AdamW at step %d: %w", t.step, err)
	}
	t.step++
	t.loss = st.Loss
	return nil
}

// runWorker measures one mode of moec on the model of size for about seconds (the loss
// curves: curveSteps steps) and writes a result line to w.
func runWorker(mode, size string, seconds float64, curveSteps int, w io.Writer) error {
	res := result{Mode: mode}
	iters := minIters(size)
	var err error
	switch mode {
	case "sgemm":
		res.GFLOPS = sgemmPeak(seconds, blas.Gemm[float32])
	case "bgemm":
		res.GFLOPS = sgemmPeak(seconds, blas.GemmBF16)
	case "stream":
		res.GBps = streamPeak(seconds)
	case "check":
		err = checkTraining(&res)
	case "train-nn":
		var t *trainer
		if t, err = newTrainer(size); err != nil {
			return err
		}
		err = measureTrain(&res, seconds, iters, t.Step, func() float64 { return t.loss })
	case "train", "train-bf16":
		var t *stepTrainer
		if t, err = newStepTrainer(size, mode == "train-bf16"); err != nil {
			return err
		}
		err = measureTrain(&res, seconds, iters, t.Step, func() float64 { return t.loss })
	case "curve", "curve-bf16":
		err = measureCurve(&res, size, mode == "curve-bf16", curveSteps)
	case "forward-nn":
		err = measureForward(&res, size, seconds, iters)
	case "forward":
		err = measureStepForward(&res, size, seconds, iters)
	case "gen1", "gen16", "gen1-int8", "gen16-int8":
		batch := 1
		if strings.HasPrefix(mode, "gen16") {
			batch = 16
		}
		err = measureGenerate(&res, size, batch, strings.HasSuffix(mode, "-int8"), seconds, iters)
	default:
		return fmt.Errorf("unknown worker mode %q (want train, train-bf16, curve, curve-bf16, forward, train-nn, forward-nn, gen1, gen16, gen1-int8, gen16-int8, sgemm, bgemm, stream or check)", mode)
	}
	if err != nil {
		return fmt.Errorf("moec %s: %w", mode, err)
	}
	return json.NewEncoder(w).Encode(res)
}

// measureTrain times step, the moec training step of one engine, and its CPU time.
func measureTrain(res *result, seconds float64, minIters int, step func() error, loss func() float64) error {
	c0 := cpuSeconds()
	var err error
	res.Iters, res.Seconds, err = timing.Repeat(seconds, minIters, step)
	res.CPUSeconds = cpuSeconds() - c0 // includes the warm-up step: scaled below
	res.CPUSeconds *= float64(res.Iters) / float64(res.Iters+1)
	res.TokensPerS = float64(benchBatch*benchSeq*res.Iters) / res.Seconds
	res.Loss = loss()
	return err
}

// checkSteps is how many AdamW steps the correctness check takes on one batch.
const checkSteps = 8

// checkTraining trains checkSteps steps on the fixed batch: the loss must fall, as it must for the
// peer's --check, so a speed-up that breaks the math shows up in the benchmark itself.
func checkTraining(res *result) error {
	t, err := newStepTrainer(sizeSmall, false)
	if err != nil {
		return err
	}
	if err := t.Step(); err != nil { // the loss before any update
		return err
	}
	res.FirstLoss = t.loss
	for range checkSteps {
		if err := t.Step(); err != nil {
			return err
		}
	}
	res.Loss = t.loss
	if math.IsNaN(res.Loss) || !(res.Loss < res.FirstLoss) {
		return fmt.Errorf("loss went from %.4f to %.4f in %d steps on one batch", res.FirstLoss, res.Loss, checkSteps)
	}
	return nil
}

func measureForward(res *result, size string, seconds float64, minIters int) error {
	m, err := nn.New(modelFor(size), 1)
	if err != nil {
		return err
	}
	batch := benchTokens()
	res.Iters, res.Seconds, err = timing.Repeat(seconds, minIters, func() error {
		st, err := m.Forward(batch, nn.StepOptions{})
		res.Loss = st.Loss
		return err
	})
	res.TokensPerS = float64(benchBatch*benchSeq*res.Iters) / res.Seconds
	return err
}

// measureGenerate decodes benchSeq tokens greedily for batch sequences with the KV cache.
func measureGenerate(res *result, size string, batch int, int8 bool, seconds float64, minIters int) error {
	m, err := nn.New(modelFor(size), 1)
	if err != nil {
		return err
	}
	if int8 {
		if err := quantizeInt8(m); err != nil {
			return err
		}
	}
	dec := m.NewDecoder(batch, benchSeq)
	toks := make([]int32, batch)
	res.Iters, res.Seconds, err = timing.Repeat(seconds, minIters, func() error {
		dec.Reset()
		clear(toks)
		for range benchSeq {
			logits, err := dec.Step(toks)
			if err != nil {
				return err
			}
			for i := range toks {
				toks[i] = int32(argmax(logits[i*benchVocab : (i+1)*benchVocab]))
			}
		}
		return nil
	})
	res.TokensPerS = float64(batch*benchSeq*res.Iters) / res.Seconds
	return err
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// sgemmPeak is the best GFLOP/s of gemm on a 1024³ product of float32 operands; best of
// five rounds. With blas.Gemm it is the kernel and threading every float32 moec product
// goes through; with blas.GemmBF16 the bfloat16 products of precision = bf16 (the
// operands rounded to bfloat16, float32 sums).
func sgemmPeak(seconds float64, gemm func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)) float64 {
	const n = 1024
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = float32(i%7)-3, float32(i%5)-2
	}
	best := 0.0
	for range 5 {
		iters, dt, _ := timing.Repeat(seconds/5, 3, func() error {
			gemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n)
			return nil
		})
		best = max(best, 2*n*n*n*float64(iters)/dt/1e9)
	}
	return best
}

// Stream mode's weight matrix, as the peer's (STREAM_ROWS, STREAM_COLS): 512 MiB of
// float32, many times any L3 cache these machines have.
const streamRows, streamCols = 8192, 16384

// streamPeak is the best GB/s of weight bytes moec's batch-1 product reads: one row times
// the transpose of a streamRows×streamCols matrix (nn.Linear's layout, as decoding
// multiplies), through the product path every decoding step takes; best of five rounds.
// It bounds any batch-1 decoding step that streams its weights from memory.
func streamPeak(seconds float64) float64 {
	w, x, y := make([]float32, streamRows*streamCols), make([]float32, streamCols), make([]float32, streamRows)
	for i := range w {
		w[i] = float32(i%7) - 3
	}
	for i := range x {
		x[i] = float32(i%5) - 2
	}
	best := 0.0
	for range 5 {
		iters, dt, _ := timing.Repeat(seconds/5, 3, func() error {
			blas.Gemm[float32](false, true, 1, streamRows, streamCols, 1, x, streamCols, w, streamCols, 0, y, streamRows)
			return nil
		})
		best = max(best, 4*float64(len(w))*float64(iters)/dt/1e9)
	}
	return best
}

// quantizeInt8 turns every matrix `moec compress --quantize 8` quantises (attention, experts,
// embedding, head; routers and norms stay float32) into int8 with one scale per output
// channel, in memory: the model then multiplies through runtime/quant's integer kernels, as
// a compressed checkpoint does in `moec generate`.
func quantizeInt8(m *nn.Model) error {
	qs := map[string]*quant.Matrix{}
	for _, p := range m.Params() {
		if params.QuantKind(p.ID) == "" || len(p.Shape) != 2 {
			continue
		}
		q, err := quant.Quantize(p.W, p.Shape[0], p.Shape[1], 8, 0)
		if err != nil {
			return fmt.Errorf("int8 %s: %w", p.Name, err)
		}
		qs[p.Name] = q
	}
	return m.SetQuantized(qs)
}
