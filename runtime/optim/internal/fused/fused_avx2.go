//go:build cgo && amd64 && !noopenblas

package fused

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// The same operations as UpdateGo, in the same order, eight lanes at a time. No FMA: the
// pragmas (cgo does not accept -ffp-contract=off as a flag) and a target without "fma"
// keep every product rounded on its own, even under CGO_CFLAGS=-march=native, so the
// results equal the Go loop's bit for bit (sqrt and division are correctly rounded in
// both).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static int moec_adamw_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
}

typedef struct {
	float scale, b1, c1, b2, c2, inv_bc2, eps, decay, lr_bc1;
} moec_adamw_coeffs;

__attribute__((target("avx2"))) static inline float moec_adamw1(float *w, float g, float *m, float *v, const moec_adamw_coeffs *c) {
	float gj = g * c->scale;
	float mj = c->b1 * *m + c->c1 * gj;
	float vj = c->b2 * *v + c->c2 * (gj * gj);
	*m = mj;
	*v = vj;
	// The sqrtss instruction, not sqrtf: libm's sqrtf sets errno and needs -lm.
	float d = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(vj * c->inv_bc2))) + c->eps;
	float wj = *w - c->decay * *w;
	return wj - (c->lr_bc1 * mj) / d;
}

__attribute__((target("avx2"))) static void moec_adamw(float *w, const float *g, float *m, float *v, long n,
		const moec_adamw_coeffs *c) {
	const __m256 scale = _mm256_set1_ps(c->scale), b1 = _mm256_set1_ps(c->b1), c1 = _mm256_set1_ps(c->c1);
	const __m256 b2 = _mm256_set1_ps(c->b2), c2 = _mm256_set1_ps(c->c2), ibc2 = _mm256_set1_ps(c->inv_bc2);
	const __m256 eps = _mm256_set1_ps(c->eps), decay = _mm256_set1_ps(c->decay), lr = _mm256_set1_ps(c->lr_bc1);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 gj = _mm256_mul_ps(_mm256_loadu_ps(g + i), scale);
		__m256 mj = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(c1, gj));
		__m256 vj = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(c2, _mm256_mul_ps(gj, gj)));
		_mm256_storeu_ps(m + i, mj);
		_mm256_storeu_ps(v + i, vj);
		__m256 d = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vj, ibc2)), eps);
		__m256 wj = _mm256_loadu_ps(w + i);
		wj = _mm256_sub_ps(wj, _mm256_mul_ps(decay, wj));
		wj = _mm256_sub_ps(wj, _mm256_div_ps(_mm256_mul_ps(lr, mj), d));
		_mm256_storeu_ps(w + i, wj);
	}
	for (; i < n; i++) {
		w[i] = moec_adamw1(w + i, g[i], m + i, v + i, c);
	}
}
*/
import "C"

import "unsafe"

// have is fixed at start-up by the CPU.
var have = C.moec_adamw_have_avx2() != 0

// Available reports whether this build and CPU run the vector kernel.
func Available() bool { return have }

// updateVec runs the AVX2 kernel and reports whether it did; the caller has checked the
// lengths and that they are not zero.
func updateVec(w, g, m, v []float32, c Coeffs) bool {
	if !have {
		return false
	}
	cc := C.moec_adamw_coeffs{scale: C.float(c.Scale), b1: C.float(c.B1), c1: C.float(c.C1), b2: C.float(c.B2),
		c2: C.float(c.C2), inv_bc2: C.float(c.InvBC2), eps: C.float(c.Eps), decay: C.float(c.Decay), lr_bc1: C.float(c.LRBC1)}
	C.moec_adamw((*C.float)(unsafe.Pointer(&w[0])), (*C.float)(unsafe.Pointer(&g[0])), (*C.float)(unsafe.Pointer(&m[0])),
		(*C.float)(unsafe.Pointer(&v[0])), C.long(len(w)), &cc)
	return true
}
