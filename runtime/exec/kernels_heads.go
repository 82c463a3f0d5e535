package exec

import (
	"runtime"
	"sync"
)

// causalBlock is the query rows of one product of the causal attention kernels: each
// block is multiplied by the keys (values) up to its last row only, which at 128
// positions computes 5/8 of the full square.
const causalBlock = 32

// eachHeadGroup runs f for every sequence b and head h (g: h's key/value head), spread
// over the cores by (sequence, key/value head) so the heads that add into one key/value
// head's gradient run on one goroutine, in order.
func eachHeadGroup(B, H, KV int, f func(b, h, g int)) {
	per := H / KV
	n := B * KV
	run := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			b, g := i/KV, i%KV
			for h := g * per; h < (g+1)*per; h++ {
				f(b, h, g)
			}
		}
	}
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		run(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := chunk; lo < n; lo += chunk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(lo, min(lo+chunk, n))
		}()
	}
	run(0, min(chunk, n))
	wg.Wait()
}
