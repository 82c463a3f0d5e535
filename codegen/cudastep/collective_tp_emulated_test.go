package cudastep

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	moeexec "github.com/moec-dev/moec/runtime/exec"
)

// openDense compiles kernels_dense.cu under the emulation (unoptimised: the test's
// launches are small) with a launch_<kernel> entry point (mmaDriver's) for each of its
// cross-entropy kernels.
func openDense(t *testing.T) *mmaLib {
	t.Helper()
	var xent []Kernel
	for _, k := range denseKernels() {
		if strings.HasPrefix(k.Name, "dense_xent") {
			xent = append(xent, k)
		}
	}
	return &mmaLib{lib: emulatedLibrary(t, map[string]string{
		DeviceHeaderName:   deviceHeader,
		"kernels_dense.cu": denseSource,
		"driver.cpp":       "#include \"kernels_dense.cu\"\n" + mmaDriver(xent),
	}, "-O0", "-Wall", "-Werror")}
}

// TestVocabularyParallelLossMatchesExec runs the lowered launches of the vocabulary-parallel
// cross-entropy of both ranks of tp 2 (hunyuan_tiny's dense stage) on the emulated dense
// kernels, all-reducing the row maxima (max) and the rows' sums and target logits (sum) in
// between as the NCCL stand-in does (in double over the ranks in order, rounded once):
// pass 1 and 2 match runtime/exec's CrossEntropyMax and CrossEntropySum on each rank's
// slice within 1e-6, and the loss and each rank's slice of the logits' gradient match the
// whole vocabulary's cross-entropy (in float64) within 1e-5.
func TestVocabularyParallelLossMatchesExec(t *testing.T) {
	lib := openDense(t)
	m := tinyStage(t, 1, 1)
	m.Attention.TalkingHeads = false // tensor parallelism splits the heads
	const tp = 2
	progs, err := step.Lower(m, step.Batch{MicroBatch: 2, SeqLen: 8, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: tp, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	type rankState struct {
		p    *step.Program
		low  *Lowered
		ops  map[step.LossPass]int // the cross_entropy ops by pass
		bufs map[int]any
		work map[string][]float32
	}
	var ranks []*rankState
	for _, p := range progs {
		low, err := Lower(p, m)
		if err != nil {
			t.Fatalf("rank %d: %v", p.Rank, err)
		}
		rs := &rankState{p: p, low: low, ops: map[step.LossPass]int{}, bufs: map[int]any{}, work: map[string][]float32{}}
		for i, op := range p.Ops {
			if op.Kind == step.OpCrossEntropy {
				rs.ops[op.Pass] = i
			}
		}
		if len(rs.ops) != 3 {
			t.Fatalf("rank %d has cross_entropy passes %v, want max, sum and loss", p.Rank, rs.ops)
		}
		ranks = append(ranks, rs)
	}
	p0 := ranks[0].p
	whole := p0.Ops[ranks[0].ops[step.LossWhole]]
	logitsBuf, targetsBuf, mxBuf, stBuf := whole.In[0], whole.In[1], whole.In[2], whole.In[3]
	lossBuf, dlBuf := whole.Out[0], whole.Out[1]
	Vl := p0.Buffers[logitsBuf].Shape[1]
	rows := int(p0.Buffers[logitsBuf].Elements()) / Vl
	V := tp * Vl
	r := rand.New(rand.NewSource(3))
	logits := make([]float32, rows*V) // the whole vocabulary's, row by row
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	targets := make([]int32, rows)
	for i := range targets {
		targets[i] = int32(r.Intn(V))
	}
	for k, rs := range ranks {
		slice := make([]float32, rows*Vl)
		for i := 0; i < rows; i++ {
			copy(slice[i*Vl:(i+1)*Vl], logits[i*V+k*Vl:i*V+(k+1)*Vl])
		}
		rs.bufs[logitsBuf], rs.bufs[targetsBuf] = slice, append([]int32(nil), targets...)
		rs.bufs[mxBuf], rs.bufs[stBuf] = make([]float32, rows), make([]float32, 2*rows)
		rs.bufs[lossBuf], rs.bufs[dlBuf] = make([]float32, 1), make([]float32, rows*Vl)
		rs.work[termsWork], rs.work[LossWork] = make([]float32, rows), make([]float32, 2)
	}
	run := func(rs *rankState, op int) {
		for _, l := range rs.low.Ops[op].Launches {
			bufs := map[int]any{}
			for b, v := range rs.bufs {
				bufs[b] = v
			}
			for i, a := range l.Args {
				if a.Work != "" {
					w, ok := rs.work[a.Work]
					if !ok {
						t.Fatalf("%s: argument %d names workspace %s", l.Kernel, i, a.Work)
					}
					key := -1000 - i
					bufs[key] = w
					l.Args[i].Buf = key
				}
			}
			lib.run(t, l, bufs)
		}
	}
	// allReduce is the NCCL stand-in's sum (or maximum) over the ranks in order.
	allReduce := func(b int, isMax bool) {
		n := len(ranks[0].bufs[b].([]float32))
		for i := 0; i < n; i++ {
			acc := float64(ranks[0].bufs[b].([]float32)[i])
			for _, rs := range ranks[1:] {
				x := float64(rs.bufs[b].([]float32)[i])
				if isMax {
					acc = math.Max(acc, x)
				} else {
					acc += x
				}
			}
			for _, rs := range ranks {
				rs.bufs[b].([]float32)[i] = float32(acc)
			}
		}
	}
	for k, rs := range ranks {
		run(rs, rs.ops[step.LossMax])
		want := make([]float32, rows)
		moeexec.CrossEntropyMax(rs.bufs[logitsBuf].([]float32), want, Vl)
		compareF32(t, "rank "+string(rune('0'+k))+"'s row maxima", rs.bufs[mxBuf].([]float32), want, 0)
	}
	allReduce(mxBuf, true)
	for k, rs := range ranks {
		run(rs, rs.ops[step.LossSum])
		want := make([]float32, 2*rows)
		moeexec.CrossEntropySum(rs.bufs[logitsBuf].([]float32), targets, rs.bufs[mxBuf].([]float32), want, Vl, k*Vl)
		compareF32(t, "rank "+string(rune('0'+k))+"'s sums and target logits", rs.bufs[stBuf].([]float32), want, 1e-6)
	}
	allReduce(stBuf, false)
	for _, rs := range ranks {
		run(rs, rs.ops[step.LossWhole])
	}
	// The whole vocabulary's cross-entropy in float64.
	scale := ranks[0].low.LossScale / float64(rows)
	var ce float64
	for i := 0; i < rows; i++ {
		row := logits[i*V : (i+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(s)
		ce += lse - float64(row[targets[i]])
		for j, v := range row {
			g := math.Exp(float64(v)-lse) * scale
			if j == int(targets[i]) {
				g -= scale
			}
			k, jl := j/Vl, j%Vl
			got := ranks[k].bufs[dlBuf].([]float32)[i*Vl+jl]
			if math.Abs(float64(got)-g) > 1e-5*max(1, math.Abs(g)) {
				t.Fatalf("row %d, logit %d (rank %d): gradient %g, want %g", i, j, k, got, g)
			}
		}
	}
	ce /= float64(rows)
	for k, rs := range ranks {
		if got := float64(rs.bufs[lossBuf].([]float32)[0]); math.Abs(got-ce) > 1e-5*max(1, ce) {
			t.Errorf("rank %d: loss %.7f, the whole vocabulary's %.7f", k, got, ce)
		}
	}
	t.Logf("loss %.7f on both ranks (whole vocabulary: %.7f)", ranks[0].bufs[lossBuf].([]float32)[0], ce)
}

// compareF32 fails when got and want differ anywhere by more than tol relative (0: exactly).
func compareF32(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > tol*max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s: [%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}
