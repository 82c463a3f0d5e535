package gpu

import (
	"context"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/internal/longtest"
	moexec "github.com/moec-dev/moec/runtime/exec"
	"github.com/moec-dev/moec/runtime/nn"
)

// TestEmulatedStepHonoursTheTable: every feature the features table's CUDA step column
// honours computes on the generated step what the executor computes: each feature's
// one-feature model (compiler/features/featuretest) with every parameter drawn from its
// name (so biases are not zero nor norms one, as at initialisation) takes one training
// step under the emulation and on the executor; the losses, gradient norms and updated
// parameters agree. A feature the column honours but the kernels compute otherwise fails
// here. Each feature compiles its own host program, so this runs only with
// MOEC_LONG_EMULATION=1 (several minutes).
func TestEmulatedStepHonoursTheTable(t *testing.T) {
	longtest.Require(t, "one compiled host program per feature: minutes; make test stays under ten minutes")
	needClang(t)
	for _, f := range features.Table() {
		m, err := featuretest.Example(f.Key)
		if err != nil {
			t.Fatal(err)
		}
		if len(features.Refusals(m, features.CUDAStep, features.Layout{})) > 0 {
			continue
		}
		t.Run(f.Key, func(t *testing.T) {
			b := step.Batch{MicroBatch: 2, SeqLen: int(m.SeqLen), Micro: 1}
			progs, err := step.Lower(m, b, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1})
			if err != nil {
				t.Fatal(err)
			}
			p := progs[0]
			net, err := nn.New(m, 7)
			if err != nil {
				t.Fatal(err)
			}
			whole := map[params.ID][]float32{}
			shapes := map[params.ID][]int{}
			for _, w := range net.Params() {
				h := fnv.New64a()
				h.Write([]byte(w.ID.String()))
				r := rand.New(rand.NewPCG(h.Sum64(), 7))
				for i := range w.W {
					w.W[i] = float32(r.NormFloat64() * 0.3)
				}
				whole[w.ID], shapes[w.ID] = w.W, w.Shape
			}
			_, cfg := hunyuanTiny(t, 1)
			ex, err := moexec.New(p, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ex.LoadParams(func(id params.ID) ([]float32, []int) { return whole[id], shapes[id] }); err != nil {
				t.Fatal(err)
			}
			if err := ex.SetOptimizer(cfg); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), p, m, Options{Mode: Emulated, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.LoadParams(ex.Param); err != nil {
				t.Fatal(err)
			}
			s.SetOptimizer(cfg)
			d, _ := m.Dims()
			micro := [][]int32{randomTokens(b.MicroBatch, b.SeqLen, d.V, 3)}
			want, err := ex.Run(micro, moexec.Options{Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Step(micro, StepOptions{Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got.Loss-want.Loss) > 1e-5*max(1, want.Loss) || math.Abs(got.GradNorm-want.GradNorm) > 1e-5*max(1, want.GradNorm) {
				t.Errorf("loss %.7f, gradient norm %.7f; the executor's %.7f, %.7f", got.Loss, got.GradNorm, want.Loss, want.GradNorm)
			}
			for id := range whole {
				g, err := s.Param(id)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(g, ex.Param(id)); e > 1e-4 {
					t.Errorf("%s after the update: relative error %.2g", id, e)
				}
			}
		})
	}
}
