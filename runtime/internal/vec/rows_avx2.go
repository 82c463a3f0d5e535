//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// runtime/exec's expert combine, its backward, the permutation's backward and the causal softmax's
// backward on vector lanes, over tokens (rows) [t0, t1). An assignment a = t·K + j of token
// t reads slot row (idx[a]·C + slot[a])·D of an expert-major buffer (C = 0: packed, the
// slot is the row), or none when slot[a] < 0. Products are rounded as the Go loops round
// them (no fused multiply-adds) and row sums are in the same order; the dot products
// (a gate's gradient, the softmax's Σ p·dp) add their float products in double, on lanes,
// rounding once: more accurate than the Go loops' float sums, so they differ from them in
// the last bits.

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

static inline long moec_slot_row(const int *idx, const int *slot, long a, long C, long D) {
	return slot[a] < 0 ? -1 : ((long)idx[a] * C + slot[a]) * D;
}

__attribute__((target("avx2"))) static double moec_hsum4d(__m256d v) {
	double t[4];
	_mm256_storeu_pd(t, v);
	return (t[0] + t[1]) + (t[2] + t[3]);
}

// y[t] = Σ_j gates[a]·back[row(a)] over the token's admitted assignments, in order.
__attribute__((target("avx2"))) static void moec_exec_combine(const float *back, const int *idx, const int *slot, const float *gates, float *y,
		long t0, long t1, long K, long C, long D) {
	for (long t = t0; t < t1; t++) {
		float *dst = y + t * D;
		for (long i = 0; i < D; i++) {
			dst[i] = 0;
		}
		for (long j = 0; j < K; j++) {
			long a = t * K + j, row = moec_slot_row(idx, slot, a, C, D);
			if (row < 0) {
				continue;
			}
			const float *src = back + row;
			float g = gates[a];
			__m256 gv = _mm256_set1_ps(g);
			long i = 0;
			for (; i + 8 <= D; i += 8) {
				_mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_mul_ps(gv, _mm256_loadu_ps(src + i))));
			}
			for (; i < D; i++) {
				float p = g * src[i];
				dst[i] += p;
			}
		}
	}
}

// dback[row(a)] = gates[a]·dy[t]; dgates[a] (+)= dy[t]·back[row(a)] (0 for a dropped one).
__attribute__((target("avx2"))) static void moec_exec_combine_bwd(const float *dy, const float *back, const int *idx, const int *slot, const float *gates,
		float *dback, float *dgates, long t0, long t1, long K, long C, long D, int acc) {
	for (long t = t0; t < t1; t++) {
		const float *g = dy + t * D;
		for (long j = 0; j < K; j++) {
			long a = t * K + j, row = moec_slot_row(idx, slot, a, C, D);
			float dg = 0;
			if (row >= 0) {
				const float *o = back + row;
				float *db = dback + row;
				__m256 gv = _mm256_set1_ps(gates[a]);
				__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
				long i = 0;
				for (; i + 8 <= D; i += 8) {
					__m256 v = _mm256_loadu_ps(g + i), p = _mm256_mul_ps(v, _mm256_loadu_ps(o + i));
					s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
					s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
					_mm256_storeu_ps(db + i, _mm256_mul_ps(gv, v));
				}
				double d = moec_hsum4d(_mm256_add_pd(s0, s1));
				for (; i < D; i++) {
					float p = g[i] * o[i];
					d += p;
					db[i] = gates[a] * g[i];
				}
				dg = (float)d;
			}
			dgates[a] = acc ? dgates[a] + dg : dg;
		}
	}
}

// dh[t] += Σ_j ds[row(a)] over the token's admitted assignments, in order.
__attribute__((target("avx2"))) static void moec_exec_permute_bwd(const float *ds, const int *idx, const int *slot, float *dh,
		long t0, long t1, long K, long C, long D) {
	for (long t = t0; t < t1; t++) {
		float *dst = dh + t * D;
		for (long j = 0; j < K; j++) {
			long a = t * K + j, row = moec_slot_row(idx, slot, a, C, D);
			if (row < 0) {
				continue;
			}
			const float *src = ds + row;
			long i = 0;
			for (; i + 8 <= D; i += 8) {
				_mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
			}
			for (; i < D; i++) {
				dst[i] += src[i];
			}
		}
	}
}

// Rows [r0, r1) of the causal softmax's backward: row r (position i = r mod T) over its
// first i+1 columns, ds (+)= p·(dp − Σ p·dp), the rest of the row cleared when written.
__attribute__((target("avx2"))) static void moec_exec_softmax_bwd(const float *dp, const float *p, float *ds, long T, long r0, long r1, int acc) {
	for (long r = r0; r < r1; r++) {
		long n = r % T + 1;
		const float *pr = p + r * T, *gr = dp + r * T;
		float *dr = ds + r * T;
		__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
		long j = 0;
		for (; j + 8 <= n; j += 8) {
			__m256 q = _mm256_mul_ps(_mm256_loadu_ps(pr + j), _mm256_loadu_ps(gr + j));
			s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(q)));
			s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(q, 1)));
		}
		double sd = moec_hsum4d(_mm256_add_pd(s0, s1));
		for (; j < n; j++) {
			float q = pr[j] * gr[j];
			sd += q;
		}
		float s = (float)sd;
		__m256 s8 = _mm256_set1_ps(s);
		for (j = 0; j + 8 <= n; j += 8) {
			__m256 v = _mm256_mul_ps(_mm256_loadu_ps(pr + j), _mm256_sub_ps(_mm256_loadu_ps(gr + j), s8));
			if (acc) {
				v = _mm256_add_ps(_mm256_loadu_ps(dr + j), v);
			}
			_mm256_storeu_ps(dr + j, v);
		}
		for (; j < n; j++) {
			float v = pr[j] * (gr[j] - s);
			dr[j] = acc ? dr[j] + v : v;
		}
		if (!acc) {
			for (j = n; j < T; j++) {
				dr[j] = 0;
			}
		}
	}
}

#pragma GCC pop_options
*/
import "C"

import "unsafe"

func f32p(x []float32) *C.float {
	if len(x) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&x[0]))
}

func i32p(x []int32) *C.int {
	if len(x) == 0 {
		return nil
	}
	return (*C.int)(unsafe.Pointer(&x[0]))
}

// rowsVec reports whether the row kernels below run (a vector CPU and rows of at least
// eight lanes).
func rowsVec(D int) bool { return have && D >= 8 }

// Combine sets y[t] = Σ_j gates[t·K+j]·back[slot row of assignment t·K+j] for tokens
// [t0, t1) (rows of width D; slots per expert, 0: packed) and reports whether it did.
func Combine(back []float32, idx, slot []int32, gates, y []float32, t0, t1, K, slots, D int) bool {
	if !rowsVec(D) {
		return false
	}
	if t0 >= t1 {
		return true
	}
	_, _, _, _ = idx[t1*K-1], slot[t1*K-1], gates[t1*K-1], y[t1*D-1]
	C.moec_exec_combine(f32p(back), i32p(idx), i32p(slot), f32p(gates), f32p(y), C.long(t0), C.long(t1), C.long(K), C.long(slots), C.long(D))
	return true
}

// CombineBackward is Combine's per-assignment backward over tokens [t0, t1): the slot
// rows' gradients into dback and the gates' into dgates (acc: added to them).
func CombineBackward(dy, back []float32, idx, slot []int32, gates, dback, dgates []float32, t0, t1, K, slots, D int, acc bool) bool {
	if !rowsVec(D) {
		return false
	}
	if t0 >= t1 {
		return true
	}
	_, _, _, _, _ = idx[t1*K-1], slot[t1*K-1], gates[t1*K-1], dgates[t1*K-1], dy[t1*D-1]
	C.moec_exec_combine_bwd(f32p(dy), f32p(back), i32p(idx), i32p(slot), f32p(gates), f32p(dback), f32p(dgates),
		C.long(t0), C.long(t1), C.long(K), C.long(slots), C.long(D), cbool(acc))
	return true
}

// PermuteBackward adds the slots' gradients of tokens [t0, t1) to their rows of dh.
func PermuteBackward(ds []float32, idx, slot []int32, dh []float32, t0, t1, K, slots, D int) bool {
	if !rowsVec(D) {
		return false
	}
	if t0 >= t1 {
		return true
	}
	_, _, _ = idx[t1*K-1], slot[t1*K-1], dh[t1*D-1]
	C.moec_exec_permute_bwd(f32p(ds), i32p(idx), i32p(slot), f32p(dh), C.long(t0), C.long(t1), C.long(K), C.long(slots), C.long(D))
	return true
}

// SoftmaxCausalBackward is the causal softmax's backward over rows [r0, r1) of [·, T]:
// ds (+)= p·(dp − Σ p·dp), the dot product in double.
func SoftmaxCausalBackward(dp, p, ds []float32, T int, acc bool, r0, r1 int) bool {
	if !have {
		return false
	}
	if r0 >= r1 {
		return true
	}
	_, _, _ = dp[r1*T-1], p[r1*T-1], ds[r1*T-1]
	C.moec_exec_softmax_bwd(f32p(dp), f32p(p), f32p(ds), C.long(T), C.long(r0), C.long(r1), cbool(acc))
	return true
}
