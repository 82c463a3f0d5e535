package exec

import (
	"runtime"

	"github.com/moec-dev/moec/runtime/blas"
)

// sharesPerCore is how many shares of a grouped product's work eachExpertShare cuts per
// core: the cores take the shares as each comes free, so a core slowed by a neighbour
// hands its last share to the other.
const sharesPerCore = 2

// shareMinWork is the multiply-adds below which a grouped product runs on one core (the
// threshold blas.Gemm splits a single product at).
const shareMinWork = 1 << 18

// eachExpertShare runs body over the grouped product's work cut into shares of equal
// cost, sharesPerCore per core, each share a run of (expert, units) bands in expert
// order: expert ex has size(ex) units (rows of its tokens, or output rows of its weight),
// each costing cost(ex) multiply-adds. A share's bands are one product each, on the
// share's core, so every product is as large as the balance allows and no product is
// split again (bodies call the serial product). Every expert gets at least one band,
// [0, 0) when its size is 0, so that a band can clear what the expert writes; a band
// [0, hi) is always its expert's first. Nothing is allocated.
func eachExpertShare(experts int, size, cost func(ex int) int, body func(ex, lo, hi int)) {
	total := 0
	for ex := 0; ex < experts; ex++ {
		total += size(ex) * cost(ex)
	}
	shares := 1
	if total >= shareMinWork {
		shares = sharesPerCore * runtime.GOMAXPROCS(0)
	}
	run := func(s int) {
		from, to := s*total/shares, (s+1)*total/shares
		at := 0 // the cost of the experts before ex
		for ex := 0; ex < experts; ex++ {
			n, c := size(ex), cost(ex)
			if n == 0 || c == 0 {
				// A band to clear with, in the share whose range holds the expert's place.
				if (at >= from && at < to) || (s == shares-1 && at >= to) || (s == 0 && total == 0) {
					body(ex, 0, 0)
				}
				continue
			}
			// The units whose first multiply-add falls in [from, to).
			lo := min(n, max(0, ceilDiv(from-at, c)))
			hi := min(n, max(0, ceilDiv(to-at, c)))
			if s == shares-1 {
				hi = n
			}
			if hi > lo {
				body(ex, lo, hi)
			}
			at += n * c
		}
	}
	if shares == 1 {
		run(0)
		return
	}
	eachIndex(shares, run)
}

// ceilDiv is ⌈a/b⌉ for b > 0.
func ceilDiv(a, b int) int {
	if a <= 0 {
		return -((-a) / b)
	}
	return (a + b - 1) / b
}

// serialProduct is product() on the calling goroutine only, for kernels that spread
// their products over the cores themselves.
func (k *Kernels) serialProduct() product {
	if k.bf16 {
		return blas.GemmBF16Serial
	}
	return blas.GemmSerial[float32]
}
