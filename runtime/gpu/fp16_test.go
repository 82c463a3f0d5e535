package gpu

import (
	"context"
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
)

// TestEmulatedFP16StepMatchesExecutor: precision = fp16 on hunyuan_tiny's dense stage:
// every weight product on kernels_mma.cu's f16 kernels against the executor's half
// products (blas.GemmFP16), under a dynamic loss scale the test sets step by step as a
// scaler would. At 2⁴⁰ the scaled loss gradient overflows half in both: the step is
// skipped (no update: the weights, moments and schedule stay, Stats.Skipped); then two
// steps at 2¹⁰ train, their losses within 1e-5 (relative) of the executor's, the first
// step's gradient norm within 1e-5 and the second's within 5e-5 (2e-5 measured), every
// parameter after each update within 1e-4 relative (3.3e-5 measured, after the first
// update already: half products round their operands, so a last-bit difference upstream,
// fp32 sums in another order, flips an occasional rounding). On request
// (MOEC_LONG_EMULATION=1): the emulated f16 fragments of three steps take minutes here.
func TestEmulatedFP16StepMatchesExecutor(t *testing.T) {
	longtest.Require(t, "three steps of emulated tensor-core fragments: minutes; make test stays under ten minutes")
	needClang(t)
	m, cfg := hunyuanTiny(t, 1)
	b := step.Batch{MicroBatch: 1, SeqLen: 16, Micro: 1}
	progs, err := step.Lower(m, b, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := progs[0]
	ex, whole, _ := executorAtInit(t, p, m, cfg)
	ex.SetFP16Products(true)
	s, err := Open(context.Background(), p, m, Options{Mode: Emulated, Dir: t.TempDir(), FP16: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.LoadParams(ex.Param); err != nil {
		t.Fatal(err)
	}
	s.SetOptimizer(cfg)
	d, _ := m.Dims()
	for stepN, scale := range []float64{1 << 40, 1 << 10, 1 << 10} {
		micro := [][]int32{randomTokens(b.MicroBatch, b.SeqLen, d.V, 100*int64(stepN))}
		want, err := ex.Run(micro, moexec.Options{Seed: 5, Step: int64(stepN), LossScale: scale})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Step(micro, StepOptions{Seed: 5, Step: int64(stepN), LossScale: scale})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d at scale %g: loss %.7f (executor %.7f), gradient norm %.7f (%.7f), skipped %v (%v)",
			stepN, scale, got.Loss, want.Loss, got.GradNorm, want.GradNorm, got.Skipped, want.Skipped)
		if wantSkip := stepN == 0; got.Skipped != wantSkip || want.Skipped != wantSkip {
			t.Fatalf("step %d at scale %g: skipped %v, the executor %v; want %v", stepN, scale, got.Skipped, want.Skipped, wantSkip)
		}
		if math.Abs(got.Loss-want.Loss) > 1e-5*max(1, want.Loss) {
			t.Errorf("step %d: loss %.8f, the executor's %.8f", stepN, got.Loss, want.Loss)
		}
		normTol, paramTol := 1e-5, 1e-4
		if stepN == 2 {
			normTol = 5e-5
		}
		if !got.Skipped && math.Abs(got.GradNorm-want.GradNorm) > normTol*max(1, want.GradNorm) {
			t.Errorf("step %d: gradient norm %.8f, the executor's %.8f", stepN, got.GradNorm, want.GradNorm)
		}
		if got.Skipped {
			// Nothing moved: the weights are the initial ones, and the schedule waits.
			for id, w0 := range whole {
				w, err := s.Param(id)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(w, w0); e != 0 {
					t.Errorf("%s moved by %.2g in a skipped step", id, e)
				}
			}
			if s.Updates() != 0 {
				t.Errorf("after a skipped step: %d updates counted; want none", s.Updates())
			}
			continue
		}
		worst, worstID := 0.0, ""
		for id := range whole {
			w, err := s.Param(id)
			if err != nil {
				t.Fatal(err)
			}
			e := relErr(w, ex.Param(id))
			if e > worst {
				worst, worstID = e, id.String()
			}
			if e > paramTol {
				t.Errorf("%s after step %d: relative error %.2g", id, stepN, e)
			}
		}
		t.Logf("after step %d: largest relative error of a parameter %.2g (%s)", stepN, worst, worstID)
	}
	if s.Updates() != 2 {
		t.Errorf("%d updates counted; want 2", s.Updates())
	}
}
