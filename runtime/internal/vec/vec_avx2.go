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

// exp8 is e^x for eight lanes by runtime/nn's exp32 algorithm (x = k·ln2 + r, degree-6
// Taylor polynomial for e^r), with 2^k applied as 2^(k/2)·2^(k−k/2) so that every k of
// float32's range stays a normal number. It saturates to 0 below −87.33 and to +Inf above
// 88.72 as exp32 does, and keeps NaN.
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
	__m256 t = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.72f));
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
	__m256i ki = _mm256_cvtps_epi32(k);
	__m256i k1 = _mm256_srai_epi32(ki, 1);
	__m256i k2 = _mm256_sub_epi32(ki, k1);
	__m256i bias = _mm256_set1_epi32(127);
	__m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
	__m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
	__m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
	y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-87.33f), _CMP_LT_OQ));
	y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, _mm256_set1_ps(88.72f), _CMP_GT_OQ));
	return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// tailmask has lanes [0, n) set, for the last n < 8 elements of a row: every element goes
// through exp8, so a value never depends on where its row starts or ends.
__attribute__((target("avx2,fma"))) static inline __m256i tailmask(long n) {
	__m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

// hsum4d adds the four lanes of a double accumulator.
__attribute__((target("avx2,fma"))) static inline double hsum4d(__m256d a) {
	__m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
	return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

__attribute__((target("avx2,fma"))) static float rowmax(const float *x, long n) {
	__m256 m = _mm256_set1_ps(-__builtin_inff());
	long i = 0;
	for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
	__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	h = _mm_max_ps(h, _mm_movehl_ps(h, h));
	h = _mm_max_ss(h, _mm_movehdup_ps(h));
	float mx = _mm_cvtss_f32(h);
	for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
	return mx;
}

// expsum returns Σ e^(x[i]−mx) in double; store: x[i] = e^(x[i]−mx) as well.
__attribute__((target("avx2,fma"))) static double expsum(float *x, long n, float mx, int store) {
	__m256 m = _mm256_set1_ps(mx);
	__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
		if (store) _mm256_storeu_ps(x + i, e);
		s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	if (i < n) {
		__m256i mask = tailmask(n - i);
		__m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), m));
		e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
		if (store) _mm256_maskstore_ps(x + i, mask, e);
		s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	return hsum4d(_mm256_add_pd(s0, s1));
}

__attribute__((target("avx2,fma"))) static void scale(float *x, long n, float f) {
	__m256 v = _mm256_set1_ps(f);
	long i = 0;
	for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
	for (; i < n; i++) x[i] *= f;
}

// exp1 is exp8 for one value (the sink logit).
__attribute__((target("avx2,fma"))) static float exp1(float x) {
	float out[8];
	_mm256_storeu_ps(out, exp8(_mm256_set1_ps(x)));
	return out[0];
}

// moec_exp sets x[i] = e^x[i] for i < n.
__attribute__((target("avx2,fma"))) static void moec_exp(float *x, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
	if (i < n) {
		__m256i mask = tailmask(n - i);
		_mm256_maskstore_ps(x + i, mask, exp8(_mm256_maskload_ps(x + i, mask)));
	}
}

// softmax1 overwrites x[0:n] with its softmax; with a sink, one more logit joins the
// denominator and its probability is dropped. The sum is taken in double, as the Go
// loop does.
__attribute__((target("avx2,fma"))) static void softmax1(float *x, long n, int has_sink, float sink) {
	float mx = rowmax(x, n);
	double s = 0;
	if (has_sink) {
		mx = sink > mx ? sink : mx;
		s = exp1(sink - mx);
	}
	s += expsum(x, n, mx, 1);
	scale(x, n, (float)(1 / s));
}

// moec_softmax_rows applies softmax1 to rows of width n (stride ld). causal: row i covers
// the keys [lo, i+1) of a causal attention row (lo = i−window+1 when window > 0) and the
// rest of the row, [0, n), is zeroed.
__attribute__((target("avx2,fma"))) static void moec_softmax_rows(float *x, long rows, long n, long ld,
		int causal, long window, int has_sink, float sink) {
	for (long i = 0; i < rows; i++) {
		float *row = x + i * ld;
		long lo = 0, hi = n;
		if (causal) {
			hi = i + 1;
			if (window > 0 && i - window + 1 > 0) lo = i - window + 1;
		}
		softmax1(row + lo, hi - lo, has_sink, sink);
		if (lo > 0) memset(row, 0, lo * sizeof(float));
		if (hi < n) memset(row + hi, 0, (n - hi) * sizeof(float));
	}
}

// moec_expsum_rows sets mx[i] = max of row i and sum[i] = Σ e^(x−mx[i]) over it, for
// rows of width n (stride ld), leaving x unchanged: the log-sum-exp of a cross-entropy.
__attribute__((target("avx2,fma"))) static void moec_expsum_rows(float *x, long rows, long n, long ld,
		float *mx, double *sum) {
	for (long i = 0; i < rows; i++) {
		mx[i] = rowmax(x + i * ld, n);
		sum[i] = expsum(x + i * ld, n, mx[i], 0);
	}
}

// moec_weighted_rows sets y[0:n] = Σ_j p[j]·v[j·ldv : j·ldv+n] for j < rows: attention's
// weighted sum of values for one query (generation), with y kept in registers 64, 32 or
// 8 columns at a time.
__attribute__((target("avx2,fma"))) static void moec_weighted_rows(float *y, const float *p, const float *v,
		long rows, long n, long ldv) {
	long c = 0;
	for (; c + 64 <= n; c += 64) {
		__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
		__m256 a4 = _mm256_setzero_ps(), a5 = _mm256_setzero_ps(), a6 = _mm256_setzero_ps(), a7 = _mm256_setzero_ps();
		for (long j = 0; j < rows; j++) {
			const float *vr = v + j * ldv + c;
			__m256 w = _mm256_set1_ps(p[j]);
			a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), a0);
			a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), a1);
			a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), a2);
			a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), a3);
			a4 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 32), a4);
			a5 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 40), a5);
			a6 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 48), a6);
			a7 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 56), a7);
		}
		_mm256_storeu_ps(y + c, a0); _mm256_storeu_ps(y + c + 8, a1);
		_mm256_storeu_ps(y + c + 16, a2); _mm256_storeu_ps(y + c + 24, a3);
		_mm256_storeu_ps(y + c + 32, a4); _mm256_storeu_ps(y + c + 40, a5);
		_mm256_storeu_ps(y + c + 48, a6); _mm256_storeu_ps(y + c + 56, a7);
	}
	// 32 columns (a head of 32, or what is left of a wider one) in four registers: each
	// column's sum is the same chain of fused multiply-adds as eight at a time, but the four
	// chains overlap instead of waiting on each other across all the rows.
	for (; c + 32 <= n; c += 32) {
		__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
		for (long j = 0; j < rows; j++) {
			const float *vr = v + j * ldv + c;
			__m256 w = _mm256_set1_ps(p[j]);
			a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), a0);
			a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), a1);
			a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), a2);
			a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), a3);
		}
		_mm256_storeu_ps(y + c, a0); _mm256_storeu_ps(y + c + 8, a1);
		_mm256_storeu_ps(y + c + 16, a2); _mm256_storeu_ps(y + c + 24, a3);
	}
	for (; c + 8 <= n; c += 8) {
		__m256 a = _mm256_setzero_ps();
		for (long j = 0; j < rows; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + j * ldv + c), a);
		_mm256_storeu_ps(y + c, a);
	}
	for (; c < n; c++) {
		float a = 0;
		for (long j = 0; j < rows; j++) a += p[j] * v[j * ldv + c];
		y[c] = a;
	}
}

// moec_weighted_rows_heads is moec_weighted_rows for each of heads heads in one call:
// head h writes y + h·ystride from the weights p + h·pstride over the rows of
// v + (h/per_kv)·vstep (per_kv heads share a group of keys and values).
// Heads of 32 go two at a time: each column's sum is still one chain of fused
// multiply-adds down the rows, but eight chains overlap instead of four, which is what
// bounds a head this narrow.
__attribute__((target("avx2,fma"))) static void moec_weighted_rows_heads(float *y, const float *p, const float *v,
		long heads, long per_kv, long rows, long n, long ldv, long ystride, long pstride, long vstep) {
	long h = 0;
	for (; n == 32 && h + 2 <= heads; h += 2) {
		const float *pa = p + h * pstride, *pb = pa + pstride;
		const float *va = v + (h / per_kv) * vstep, *vb = v + ((h + 1) / per_kv) * vstep;
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
		for (long j = 0; j < rows; j++) {
			const float *ra = va + j * ldv, *rb = vb + j * ldv;
			__m256 wa = _mm256_set1_ps(pa[j]), wb = _mm256_set1_ps(pb[j]);
			a0 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(ra), a0);
			a1 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(ra + 8), a1);
			a2 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(ra + 16), a2);
			a3 = _mm256_fmadd_ps(wa, _mm256_loadu_ps(ra + 24), a3);
			b0 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(rb), b0);
			b1 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(rb + 8), b1);
			b2 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(rb + 16), b2);
			b3 = _mm256_fmadd_ps(wb, _mm256_loadu_ps(rb + 24), b3);
		}
		float *ya = y + h * ystride, *yb = ya + ystride;
		_mm256_storeu_ps(ya, a0); _mm256_storeu_ps(ya + 8, a1); _mm256_storeu_ps(ya + 16, a2); _mm256_storeu_ps(ya + 24, a3);
		_mm256_storeu_ps(yb, b0); _mm256_storeu_ps(yb + 8, b1); _mm256_storeu_ps(yb + 16, b2); _mm256_storeu_ps(yb + 24, b3);
	}
	for (; h < heads; h++)
		moec_weighted_rows(y + h * ystride, p + h * pstride, v + (h / per_kv) * vstep, rows, n, ldv);
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

// Exp sets x[i] = e^x[i] (0 below −87.33, +Inf above 88.72, as runtime/nn's exp32) and
// reports whether it did.
func Exp(x []float32) bool {
	if !have || len(x) == 0 {
		return false
	}
	C.moec_exp((*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
	return true
}

// SoftmaxRows overwrites each of rows rows of width n (stride ld) with its softmax; with a
// sink, one more logit (sink) joins every denominator and its probability is dropped.
// causal: row i is a causal attention row and covers only [lo, i+1), lo = i−window+1 when
// window > 0 (else 0); the rest of [0, n) is zeroed. It reports whether it did.
func SoftmaxRows(x []float32, rows, n, ld int, causal bool, window int, hasSink bool, sink float32) bool {
	if !have || rows <= 0 || n <= 0 || (causal && rows > n) {
		return false
	}
	_ = x[(rows-1)*ld+n-1]
	C.moec_softmax_rows((*C.float)(unsafe.Pointer(&x[0])), C.long(rows), C.long(n), C.long(ld),
		cbool(causal), C.long(window), cbool(hasSink), C.float(sink))
	return true
}

// ExpSumRows sets mx[i] to the largest of row i (rows of width n, stride ld) and sum[i] to
// Σ_j e^(x[i·ld+j] − mx[i]), summed in float64, and reports whether it did. x is read only.
func ExpSumRows(x []float32, rows, n, ld int, mx []float32, sum []float64) bool {
	if !have || rows <= 0 || n <= 0 {
		return false
	}
	_, _, _ = x[(rows-1)*ld+n-1], mx[rows-1], sum[rows-1]
	C.moec_expsum_rows((*C.float)(unsafe.Pointer(&x[0])), C.long(rows), C.long(n), C.long(ld),
		(*C.float)(unsafe.Pointer(&mx[0])), (*C.double)(unsafe.Pointer(&sum[0])))
	return true
}

// WeightedRows sets y[0:n] = Σ_j p[j]·v[j·ldv : j·ldv+n] for j < len(p) and reports whether
// it did.
func WeightedRows(y, p, v []float32, n, ldv int) bool {
	rows := len(p)
	if !have || rows == 0 || n <= 0 {
		return false
	}
	_, _ = y[n-1], v[(rows-1)*ldv+n-1]
	C.moec_weighted_rows((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&p[0])),
		(*C.float)(unsafe.Pointer(&v[0])), C.long(rows), C.long(n), C.long(ldv))
	return true
}

// WeightedRowsHeads is WeightedRows for heads heads in one call: head h sets
// y[h·ystride : h·ystride+n] = Σ_j p[h·pstride+j]·v[(h/perKV)·vstep + j·ldv : ... + n] for
// j < rows, the same sums as WeightedRows head by head, bit for bit. It reports whether it
// did.
func WeightedRowsHeads(y, p, v []float32, heads, perKV, rows, n, ldv, ystride, pstride, vstep int) bool {
	if !have || heads <= 0 || rows <= 0 || n <= 0 || perKV <= 0 {
		return false
	}
	_, _ = y[(heads-1)*ystride+n-1], p[(heads-1)*pstride+rows-1]
	_ = v[((heads-1)/perKV)*vstep+(rows-1)*ldv+n-1]
	C.moec_weighted_rows_heads((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&p[0])),
		(*C.float)(unsafe.Pointer(&v[0])), C.long(heads), C.long(perKV), C.long(rows), C.long(n), C.long(ldv),
		C.long(ystride), C.long(pstride), C.long(vstep))
	return true
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
