//go:build cgo && amd64 && !noopenblas

package vec

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

import "unsafe"

// have is fixed at start-up by the CPU: the kernels need AVX2 and FMA.
var have = C.moec_have_avx2() != 0

// Available reports whether this build and CPU have the vector kernels.
func Available() bool { return have }

// SiLUForward sets h = silu(a)·u (u nil: h = silu(a)) and reports whether it did.
func SiLUForward(h, a, u []float32) bool {
	n := len(a)
	if !have || n == 0 {
		return false
	}
	h = h[:n]
	var up *C.float
	if u != nil {
		up = (*C.float)(unsafe.Pointer(&u[:n][0]))
	}
	C.moec_silu_fwd((*C.float)(unsafe.Pointer(&h[0])), (*C.float)(unsafe.Pointer(&a[0])), up, C.long(n))
	return true
}

// SiLUBackward turns dh into da (and du when u is not nil) for h = silu(a)·u; da may
// alias a and du may alias u. It reports whether it did.
func SiLUBackward(da, du, dh, a, u []float32) bool {
	n := len(a)
	if !have || n == 0 {
		return false
	}
	da, dh = da[:n], dh[:n]
	var up, dup *C.float
	if u != nil {
		up = (*C.float)(unsafe.Pointer(&u[:n][0]))
		dup = (*C.float)(unsafe.Pointer(&du[:n][0]))
	}
	C.moec_silu_bwd((*C.float)(unsafe.Pointer(&da[0])), dup, (*C.float)(unsafe.Pointer(&dh[0])),
		(*C.float)(unsafe.Pointer(&a[0])), up, C.long(n))
	return true
}

// RowsDot sets y[i·out+o] = x[i·in:]·w[o·in:] (accumulate: adds it) for i < n and o in
// [o0, o1), with w [out, in] row-major, and reports whether it did.
func RowsDot(y, x, w []float32, n, out, in, o0, o1 int, accumulate bool) bool {
	if !have || n <= 0 || o0 >= o1 || in <= 0 {
		return false
	}
	_, _, _ = y[n*out-1], x[n*in-1], w[out*in-1] // bounds, as sgemm's checks would
	acc := C.int(0)
	if accumulate {
		acc = 1
	}
	C.moec_rows_dot((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&x[0])),
		(*C.float)(unsafe.Pointer(&w[0])), C.long(n), C.long(out), C.long(in), C.long(o0), C.long(o1), acc)
	return true
}
