package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/step"
)

// TestDistillLossVocabParallel: the four passes over tp slices of the vocabulary, their
// rows reduced as the program's all-reduces do (max, sum, sum), write the fused op's loss
// and, slice by slice, its gradient.
func TestDistillLossVocabParallel(t *testing.T) {
	k := distillKernels(t)
	d := step.Distill{Temperature: 2, SoftWeight: 0.6, HardWeight: 0.4}
	c := newDistillCase(6, 60, d, 3)
	want, wantGrad := c.run(k, c.Student)
	for _, tp := range []int{2, 3, 5} {
		Vl, n := c.V/tp, c.N
		slice := func(x []float32, r int) []float32 {
			out := make([]float32, n*Vl)
			for i := 0; i < n; i++ {
				copy(out[i*Vl:(i+1)*Vl], x[i*c.V+r*Vl:i*c.V+(r+1)*Vl])
			}
			return out
		}
		students, teachers := make([][]float32, tp), make([][]float32, tp)
		for r := range tp {
			students[r], teachers[r] = slice(c.Student, r), slice(c.Teacher, r)
		}
		// reduce runs one pass on every rank and reduces its rows over the ranks.
		reduce := func(width int, max bool, pass func(r int, out []float32)) []float32 {
			all := make([]float32, n*width)
			for r := range tp {
				out := make([]float32, n*width)
				pass(r, out)
				for i, v := range out {
					switch {
					case r == 0:
						all[i] = v
					case max:
						all[i] = float32(math.Max(float64(all[i]), float64(v)))
					default:
						all[i] += v
					}
				}
			}
			return all
		}
		mx := reduce(2, true, func(r int, out []float32) { DistillLossMax(students[r], teachers[r], out, Vl) })
		st := reduce(4, false, func(r int, out []float32) {
			DistillLossSum(students[r], c.Targets, teachers[r], mx, out, Vl, r*Vl, d)
		})
		cross := reduce(1, false, func(r int, out []float32) { DistillLossCross(students[r], teachers[r], mx, st, out, Vl, d) })
		var got float64
		for r := range tp {
			k.BeginStep(1, 0)
			loss, dl := make([]float32, 1), make([]float32, n*Vl)
			k.DistillLossParallel(students[r], c.Targets, teachers[r], mx, st, cross, loss, dl, Vl, r*Vl, d)
			s := k.Stats()
			if r == 0 {
				got = c.Hard*s.CE + c.Soft*s.Distill
			} else if l := c.Hard*s.CE + c.Soft*s.Distill; l != got {
				t.Errorf("tp %d: rank %d's loss %v, rank 0's %v", tp, r, l, got)
			}
			if e := relErr(dl, slice(wantGrad, r)); e > 1e-6 {
				t.Errorf("tp %d: rank %d's gradient differs from the fused op's slice by %.2g (relative)", tp, r, e)
			}
		}
		if math.Abs(got-want) > 1e-6*math.Abs(want) {
			t.Errorf("tp %d: loss %.9g, the fused op's %.9g", tp, got, want)
		}
	}
}
