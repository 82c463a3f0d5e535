//go:build cgo && amd64 && !noopenblas

package nn

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// y[i·out + o] (+)= Σ_p x[i·in + p]·w[o·in + p] for rows i < n and outputs o in [o0, o1).
// Each weight row is read from memory once and reused from L1 for the n inputs, which is
// what generation (one to a few rows per product) needs: sgemm would pack the whole
// weight matrix on every call, moving it through memory twice.
__attribute__((target("avx2,fma"))) static void moec_rows_dot(float *y, const float *x, const float *w,
		long n, long out, long in, long o0, long o1, int accumulate) {
	for (long o = o0; o < o1; o++) {
		const float *wr = w + o * in;
		for (long i = 0; i < n; i++) {
			const float *xr = x + i * in;
			__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
			__m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
			long p = 0;
			for (; p + 32 <= in; p += 32) {
				a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + p), _mm256_loadu_ps(xr + p), a0);
				a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + p + 8), _mm256_loadu_ps(xr + p + 8), a1);
				a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + p + 16), _mm256_loadu_ps(xr + p + 16), a2);
				a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + p + 24), _mm256_loadu_ps(xr + p + 24), a3);
			}
			for (; p + 8 <= in; p += 8) {
				a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + p), _mm256_loadu_ps(xr + p), a0);
			}
			__m256 s8 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
			__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
			s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
			s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
			float s = _mm_cvtss_f32(s4);
			for (; p < in; p++) {
				s += wr[p] * xr[p];
			}
			float *yo = y + i * out + o;
			*yo = accumulate ? *yo + s : s;
		}
	}
}
*/
import "C"

import (
	"sync"
	"unsafe"
)

// smallRows is the most rows linearSmall takes; beyond it sgemm's packing pays for itself.
const smallRows = 4

// smallSplitWork is the n·out·in above which the outputs are split over two goroutines.
const smallSplitWork = 1 << 15

// linearSmall computes y = x·Wᵀ (accumulate: y += x·Wᵀ) for n ≤ smallRows rows of float32
// with the AVX2 kernel above, and reports whether it did; callers fall back to sgemm.
func linearSmall[F Float](y, x []F, n int, w *tensor[F], accumulate bool) bool {
	if n > smallRows || n < 1 || !haveAVX2 {
		return false
	}
	y32, ok := any(y).([]float32)
	if !ok {
		return false
	}
	x32, w32 := any(x).([]float32), any(w.w).([]float32)
	out, in := w.shape[0], w.shape[1]
	_, _, _ = y32[n*out-1], x32[n*in-1], w32[out*in-1] // bounds, as sgemm's checks would
	acc := C.int(0)
	if accumulate {
		acc = 1
	}
	call := func(o0, o1 int) {
		C.moec_rows_dot((*C.float)(unsafe.Pointer(&y32[0])), (*C.float)(unsafe.Pointer(&x32[0])),
			(*C.float)(unsafe.Pointer(&w32[0])), C.long(n), C.long(out), C.long(in), C.long(o0), C.long(o1), acc)
	}
	if n*out*in < smallSplitWork || out < 16 {
		call(0, out)
		return true
	}
	// Two halves of the outputs: the product is bound by reading W, which two cores read
	// faster than one.
	half := out / 2
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		call(half, out)
	}()
	call(0, half)
	wg.Wait()
	return true
}
