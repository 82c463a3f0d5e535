//go:build cgo && amd64 && !noopenblas

package nn

/*
#cgo CFLAGS: -O2
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// The same algorithm as silu32.go (e^t = 2^k·p(r), degree-6 Taylor p), eight lanes at a
// time. Each block loads before it stores, so da may alias a and du may alias u.

static int moec_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// sigmoid8 returns σ(x) = 1/(1+e^−x) for eight lanes.
__attribute__((target("avx2,fma"))) static inline __m256 sigmoid8(__m256 x) {
	__m256 t = _mm256_sub_ps(_mm256_setzero_ps(), x);
	t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.0f));
	__m256 k = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
		_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), t);
	r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.42860682030941723212e-6f), r);
	__m256 p = _mm256_set1_ps(1.0f / 720);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
	__m256 one = _mm256_set1_ps(1.0f);
	return _mm256_div_ps(one, _mm256_fmadd_ps(p, _mm256_castsi256_ps(e), one));
}

// sigmoid1 is sigmoid8 for one element (the tail).
static inline float sigmoid1(float x) {
	float t = -x;
	t = t < -87.33f ? -87.33f : (t > 88.0f ? 88.0f : t);
	int32_t k = (int32_t)(t * 1.44269504088896341f + 128.5f) - 128;
	float r = t - (float)k * 0.693145751953125f - (float)k * 1.42860682030941723212e-6f;
	float p = 1 + r * (1 + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
	uint32_t bits = (uint32_t)(k + 127) << 23;
	float s;
	memcpy(&s, &bits, sizeof s);
	return 1 / (1 + p * s);
}

__attribute__((target("avx2,fma"))) static void moec_silu_fwd(float *h, const float *a, const float *u, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(a + i);
		__m256 v = _mm256_mul_ps(x, sigmoid8(x));
		if (u) v = _mm256_mul_ps(v, _mm256_loadu_ps(u + i));
		_mm256_storeu_ps(h + i, v);
	}
	for (; i < n; i++) {
		float v = a[i] * sigmoid1(a[i]);
		h[i] = u ? v * u[i] : v;
	}
}

__attribute__((target("avx2,fma"))) static void moec_silu_bwd(float *da, float *du, const float *dh, const float *a, const float *u, long n) {
	long i = 0;
	__m256 one = _mm256_set1_ps(1.0f);
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(a + i);
		__m256 g = _mm256_loadu_ps(dh + i);
		__m256 sg = sigmoid8(x);
		if (u) {
			__m256 ui = _mm256_loadu_ps(u + i);
			_mm256_storeu_ps(du + i, _mm256_mul_ps(_mm256_mul_ps(g, x), sg));
			g = _mm256_mul_ps(g, ui);
		}
		// da = g·σ·(1 + x·(1−σ))
		__m256 f = _mm256_fmadd_ps(x, _mm256_sub_ps(one, sg), one);
		_mm256_storeu_ps(da + i, _mm256_mul_ps(_mm256_mul_ps(g, sg), f));
	}
	for (; i < n; i++) {
		float x = a[i], g = dh[i], sg = sigmoid1(x);
		if (u) {
			float ui = u[i];
			du[i] = g * x * sg;
			g *= ui;
		}
		da[i] = g * sg * (1 + x * (1 - sg));
	}
}
*/
import "C"

import "unsafe"

// haveAVX2 is fixed at start-up by the CPU: the vector kernels need AVX2 and FMA.
var haveAVX2 = C.moec_have_avx2() != 0

// siluVecMin is the length below which the cgo call costs more than the Go loop saves.
const siluVecMin = 256

// siluForwardFast is siluForward32 on AVX2 lanes where the CPU has them.
func siluForwardFast(h, a, u []float32) {
	n := len(a)
	if !haveAVX2 || n < siluVecMin {
		siluForward32(h, a, u)
		return
	}
	h = h[:n]
	var up *C.float
	if u != nil {
		up = (*C.float)(unsafe.Pointer(&u[:n][0]))
	}
	C.moec_silu_fwd((*C.float)(unsafe.Pointer(&h[0])), (*C.float)(unsafe.Pointer(&a[0])), up, C.long(n))
}

// siluBackwardFast is siluBackward32 on AVX2 lanes where the CPU has them.
func siluBackwardFast(da, du, dh, a, u []float32) {
	n := len(a)
	if !haveAVX2 || n < siluVecMin {
		siluBackward32(da, du, dh, a, u)
		return
	}
	da, dh = da[:n], dh[:n]
	var up, dup *C.float
	if u != nil {
		up = (*C.float)(unsafe.Pointer(&u[:n][0]))
		dup = (*C.float)(unsafe.Pointer(&du[:n][0]))
	}
	C.moec_silu_bwd((*C.float)(unsafe.Pointer(&da[0])), dup, (*C.float)(unsafe.Pointer(&dh[0])),
		(*C.float)(unsafe.Pointer(&a[0])), up, C.long(n))
}
