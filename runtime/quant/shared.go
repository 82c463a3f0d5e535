package quant

import "fmt"

// MulTShared computes ys[j] = x·Wⱼᵀ (accumulate: ys[j] += x·Wⱼᵀ) for two or three matrices
// ms of the same input width, n rows of x ([n, In]) into each ys[j] ([n, Outⱼ]). It
// quantises x once for all of them (a token's queries, keys and values read the same
// normed row) and, on one core, runs every product in one call into C. Each ys[j] gets
// exactly what ms[j].MulT would give it. It is safe for concurrent use.
func MulTShared(x []float32, n int, ms []*Matrix, ys [][]float32, accumulate bool) error {
	if len(ms) < 2 || len(ms) > 3 || len(ys) != len(ms) {
		return fmt.Errorf("quant: a shared product takes two or three matrices and as many outputs, got %d and %d", len(ms), len(ys))
	}
	in := ms[0].In
	var fm [3]*Matrix
	var fy [3][]float32
	split := false
	for j, m := range ms {
		if m.In != in {
			return fmt.Errorf("quant: a shared product's matrices differ in width: %d and %d", in, m.In)
		}
		if len(ys[j]) < n*m.Out || len(x) < n*in {
			return fmt.Errorf("quant: a shared product of %d rows on [%d, %d] got %d inputs and %d outputs", n, m.Out, in, len(x), len(ys[j]))
		}
		split = split || m.workers(n) > 1
		fm[j], fy[j] = m, ys[j][:n*m.Out]
	}
	if n == 0 {
		return nil
	}
	if in == 0 || split || fm[0].Out == 0 || fm[1].Out == 0 || (fm[2] != nil && fm[2].Out == 0) {
		for j, m := range ms {
			m.MulT(ys[j], x, n, accumulate)
		}
		return nil
	}
	first := fm[0]
	a, _ := first.scratch.Get().(*Activations)
	if a == nil {
		a = new(Activations)
	}
	mulShared(bestISA, a, x[:n*in], n, fm, fy, accumulate)
	first.scratch.Put(a)
	return nil
}
