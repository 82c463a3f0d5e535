//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// The algorithms of runtime/exec's kernels_act.go (exp32, normalCDF, actFwd32, actBwd32),
// eight lanes at a time, and exec's softmax's and cross-entropy's exponentials with exp32's
// algorithm (degree 7; vec_avx2.go's exp8 and sigmoid8, runtime/nn's, are degree 6 and
// round differently, so they stay apart). Each block loads before it stores, so an output
// may alias its input.

__attribute__((target("avx2,fma"))) static inline __m256 moec_exp8(__m256 x) {
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

// Φ(x) into *cdf and φ(x) into *pdf.
__attribute__((target("avx2,fma"))) static inline void moec_normal8(__m256 x, __m256 *cdf, __m256 *pdf) {
	__m256 e = moec_exp8(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(-0.5f), x), x));
	__m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752440f)));
	__m256 one = _mm256_set1_ps(1.0f);
	__m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one));
	__m256 q = _mm256_set1_ps(1.061405429f);
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-1.453152027f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(1.421413741f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.284496736f));
	q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.254829592f));
	__m256 tail = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t), q), e);
	__m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
	*cdf = _mm256_blendv_ps(tail, _mm256_sub_ps(one, tail), pos);
	*pdf = _mm256_mul_ps(e, _mm256_set1_ps(0.39894228040143267794f));
}

// kind 0: GELU, 1: SiLU. f = act(x), df = act'(x) (df only when want_df).
__attribute__((target("avx2,fma"))) static inline __m256 moec_act8(int kind, __m256 x, __m256 *df, int want_df) {
	__m256 one = _mm256_set1_ps(1.0f);
	if (kind == 0) {
		__m256 cdf, pdf;
		moec_normal8(x, &cdf, &pdf);
		if (want_df) {
			*df = _mm256_fmadd_ps(x, pdf, cdf);
		}
		return _mm256_mul_ps(x, cdf);
	}
	__m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, moec_exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
	if (want_df) {
		*df = _mm256_mul_ps(sg, _mm256_fmadd_ps(x, _mm256_sub_ps(one, sg), one));
	}
	return _mm256_mul_ps(x, sg);
}

__attribute__((target("avx2,fma"))) static void moec_exec_act_fwd(int kind, long n, const float *a, const float *u, float *h) {
	for (long i = 0; i + 8 <= n; i += 8) {
		__m256 df;
		__m256 f = moec_act8(kind, _mm256_loadu_ps(a + i), &df, 0);
		if (u) {
			f = _mm256_mul_ps(f, _mm256_loadu_ps(u + i));
		}
		_mm256_storeu_ps(h + i, f);
	}
}

__attribute__((target("avx2,fma"))) static void moec_exec_act_bwd(int kind, long n, const float *dh, const float *a,
		const float *u, float *da, float *du, int acc_a, int acc_u) {
	for (long i = 0; i + 8 <= n; i += 8) {
		__m256 df;
		__m256 f = moec_act8(kind, _mm256_loadu_ps(a + i), &df, 1);
		__m256 g = _mm256_loadu_ps(dh + i);
		if (u) {
			__m256 ui = _mm256_loadu_ps(u + i);
			__m256 d = _mm256_mul_ps(g, f);
			if (acc_u) {
				d = _mm256_add_ps(_mm256_loadu_ps(du + i), d);
			}
			_mm256_storeu_ps(du + i, d);
			g = _mm256_mul_ps(g, ui);
		}
		__m256 d = _mm256_mul_ps(g, df);
		if (acc_a) {
			d = _mm256_add_ps(_mm256_loadu_ps(da + i), d);
		}
		_mm256_storeu_ps(da + i, d);
	}
}
__attribute__((target("avx2,fma"))) static inline float moec_hmax(__m256 v) {
	float l[8];
	_mm256_storeu_ps(l, v);
	float m = l[0];
	for (int i = 1; i < 8; i++) {
		m = l[i] > m ? l[i] : m;
	}
	return m;
}

__attribute__((target("avx2,fma"))) static inline double moec_hsum_d(__m256 v) {
	float l[8];
	_mm256_storeu_ps(l, v);
	double s = 0;
	for (int i = 0; i < 8; i++) {
		s += l[i];
	}
	return s;
}

// The lanes below n of a block of eight.
__attribute__((target("avx2,fma"))) static inline __m256i moec_lanes(long n) {
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// out[j] = e^(x[j]−shift)·scale for j < n (out may be NULL: no store) and the sum of
// e^(x[j]−shift), in float32 lanes then a double.
__attribute__((target("avx2,fma"))) static double moec_exec_expsum(long n, const float *x, float shift, float scale, float *out) {
	__m256 sh = _mm256_set1_ps(shift), sc = _mm256_set1_ps(scale), sum = _mm256_setzero_ps();
	long j = 0;
	for (; j + 8 <= n; j += 8) {
		__m256 e = moec_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
		sum = _mm256_add_ps(sum, e);
		if (out) {
			_mm256_storeu_ps(out + j, _mm256_mul_ps(e, sc));
		}
	}
	if (j < n) {
		__m256i m = moec_lanes(n - j);
		__m256 e = moec_exp8(_mm256_sub_ps(_mm256_maskload_ps(x + j, m), sh));
		e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
		sum = _mm256_add_ps(sum, e);
		if (out) {
			_mm256_maskstore_ps(out + j, m, _mm256_mul_ps(e, sc));
		}
	}
	return moec_hsum_d(sum);
}

// The causal softmax of rows [r0, r1) of [·, T] scores s into p: row r covers columns
// 0..r mod T, the rest of the row zero.
__attribute__((target("avx2,fma"))) static void moec_exec_softmax_causal(const float *s, float *p, long T, long r0, long r1) {
	for (long r = r0; r < r1; r++) {
		long n = r % T + 1;
		const float *src = s + r * T;
		float *dst = p + r * T;
		__m256 mx8 = _mm256_set1_ps(-__builtin_inff());
		long j = 0;
		for (; j + 8 <= n; j += 8) {
			mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(src + j));
		}
		float mx = moec_hmax(mx8);
		for (; j < n; j++) {
			mx = src[j] > mx ? src[j] : mx;
		}
		double sum = moec_exec_expsum(n, src, mx, 1.0f, dst);
		__m256 inv = _mm256_set1_ps((float)(1 / sum));
		for (j = 0; j + 8 <= n; j += 8) {
			_mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_loadu_ps(dst + j), inv));
		}
		if (j < n) {
			__m256i m = moec_lanes(n - j);
			_mm256_maskstore_ps(dst + j, m, _mm256_mul_ps(_mm256_maskload_ps(dst + j, m), inv));
		}
		for (j = n; j < T; j++) {
			dst[j] = 0;
		}
	}
}
*/
import "C"

// Activation kinds of ActForward and ActBackward.
const (
	ActGELU = 0 // x·Φ(x), erf by Abramowitz and Stegun 7.1.26
	ActSiLU = 1 // x·σ(x)
)

// ActForward sets h = act(a)·u (u nil: h = act(a)) over the first multiple of eight
// elements of a, by runtime/exec's algorithms (kind ActGELU or ActSiLU), and returns how
// many it set (0 where the build or CPU has no kernel); the caller does the rest.
func ActForward(kind int, h, a, u []float32) int {
	n := len(a) &^ 7
	if !have || n == 0 {
		return 0
	}
	_ = h[n-1]
	if u != nil {
		_ = u[n-1]
	}
	C.moec_exec_act_fwd(C.int(kind), C.long(n), f32p(a), f32p(u), f32p(h))
	return n
}

// GELUForward is ActForward(ActGELU, h, a, u).
func GELUForward(h, a, u []float32) int { return ActForward(ActGELU, h, a, u) }

// ActBackward turns dh into da (and du when u is not nil) for h = act(a)·u over the first
// multiple of eight elements (accA, accU: added to da, du) and returns how many it did.
func ActBackward(kind int, da, du, dh, a, u []float32, accA, accU bool) int {
	n := len(a) &^ 7
	if !have || n == 0 {
		return 0
	}
	_, _ = da[n-1], dh[n-1]
	if u != nil {
		_, _ = u[n-1], du[n-1]
	}
	C.moec_exec_act_bwd(C.int(kind), C.long(n), f32p(dh), f32p(a), f32p(u), f32p(da), f32p(du), cbool(accA), cbool(accU))
	return n
}

// SoftmaxCausal sets rows [r0, r1) of p to the causal softmax of the [·, T] scores s (row r
// covers columns 0..r mod T, the rest zero), sums in float32 lanes then a double, and
// reports whether it did.
func SoftmaxCausal(s, p []float32, T, r0, r1 int) bool {
	if !have || r0 >= r1 {
		return have
	}
	_, _ = s[r1*T-1], p[r1*T-1]
	C.moec_exec_softmax_causal(f32p(s), f32p(p), C.long(T), C.long(r0), C.long(r1))
	return true
}

// ExpSumScaled writes out[j] = e^(x[j]−shift)·scale (out nil: nothing) and returns
// Σ e^(x[j]−shift); ok is false where there are no kernels.
func ExpSumScaled(x []float32, shift, scale float32, out []float32) (sum float64, ok bool) {
	if !have || len(x) == 0 {
		return 0, have
	}
	if out != nil {
		_ = out[len(x)-1]
	}
	return float64(C.moec_exec_expsum(C.long(len(x)), f32p(x), C.float(shift), C.float(scale), f32p(out))), true
}
