package nn

import (
	"sync"

	"github.com/moec-dev/moec/runtime/internal/vec"
)

// smallRows is the most rows linearSmall takes; beyond it sgemm's packing pays for itself.
const smallRows = 4

// smallSplitWork is the n·out·in above which the outputs are split over two goroutines:
// below it (every product of the tiny HunYuan's generation, 512×128 included) waking a
// second goroutine costs more than it saves, most of all on a loaded machine.
const smallSplitWork = 1 << 18

// linearSmall computes y = x·Wᵀ (accumulate: y += x·Wᵀ) for n ≤ smallRows rows of float32
// with vec.RowsDot, which reads each weight row once (generation multiplies one to a few
// rows by every weight matrix; sgemm would pack the whole matrix first). It reports
// whether it did; callers fall back to sgemm.
func linearSmall[F Float](y, x []F, n int, w *tensor[F], accumulate bool) bool {
	if n > smallRows || n < 1 || !vec.Available() {
		return false
	}
	y32, ok := any(y).([]float32)
	if !ok {
		return false
	}
	x32, w32 := any(x).([]float32), any(w.w).([]float32)
	out, in := w.shape[0], w.shape[1]
	if n*out*in < smallSplitWork || out < 16 {
		return vec.RowsDot(y32, x32, w32, n, out, in, 0, out, accumulate)
	}
	// Two halves of the outputs: the product is bound by reading W, which two cores read
	// faster than one.
	half := out / 2
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		vec.RowsDot(y32, x32, w32, n, out, in, half, out, accumulate)
	}()
	vec.RowsDot(y32, x32, w32, n, out, in, 0, half, accumulate)
	wg.Wait()
	return true
}
