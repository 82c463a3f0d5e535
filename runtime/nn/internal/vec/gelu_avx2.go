//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2

#include <immintrin.h>

static int moec_gelu_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// GELU as runtime/exec's activation kernels compute it: x·Φ(x) with Abramowitz and Stegun
// 7.1.26 for erf (absolute error below 1.5e-7) and e^−x²/2 as 2^k·p(r), p of degree 7.
__attribute__((target("avx2,fma"))) static inline __m256 moec_gelu_exp8(__m256 x) {
	x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.0f));
	__m256 k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f)));
	__m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
	r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860682030941723212e-6f), r);
	__m256 p = _mm256_set1_ps(1.0f / 5040);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) static void moec_gelu_fwd(float *h, const float *a, const float *u, long n) {
	const __m256 one = _mm256_set1_ps(1.0f);
	for (long i = 0; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(a + i);
		__m256 e = moec_gelu_exp8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x), x));
		__m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752440f)));
		__m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one));
		__m256 q = _mm256_set1_ps(1.061405429f);
		q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.453152027f));
		q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.421413741f));
		q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.284496736f));
		q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.254829592f));
		__m256 tail = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t), q), e);
		__m256 cdf = _mm256_blendv_ps(tail, _mm256_sub_ps(one, tail), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
		__m256 f = _mm256_mul_ps(x, cdf);
		if (u) f = _mm256_mul_ps(f, _mm256_loadu_ps(u + i));
		_mm256_storeu_ps(h + i, f);
	}
}
*/
import "C"

import "unsafe"

// haveGELU is fixed at start-up by the CPU: the kernel needs AVX2 and FMA.
var haveGELU = C.moec_gelu_have_avx2() != 0

// GELUForward sets h = gelu(a)·u (u nil: h = gelu(a)) over the first multiple of eight
// elements, erf by Abramowitz and Stegun 7.1.26 as runtime/exec computes it, and returns
// how many it set (0 where the build or CPU has no kernel); the caller does the rest.
func GELUForward(h, a, u []float32) int {
	n := len(a) &^ 7
	if !haveGELU || n == 0 {
		return 0
	}
	h = h[:n]
	var up *C.float
	if u != nil {
		up = (*C.float)(unsafe.Pointer(&u[:n][0]))
	}
	C.moec_gelu_fwd((*C.float)(unsafe.Pointer(&h[0])), (*C.float)(unsafe.Pointer(&a[0])), up, C.long(n))
	return n
}
