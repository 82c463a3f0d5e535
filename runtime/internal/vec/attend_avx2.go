//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// hsum8 is runtime/blas's horizontal sum of eight lanes (moec_hsum), in the same order.
__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// pairsum is the first step of hsum8 for two vectors at once: [a's lanes k + k+4 | b's].
__attribute__((target("avx2,fma"))) static inline __m256 pairsum(__m256 a, __m256 b) {
	return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// quadsum is hsum8's second step for two pairsums: lanes 0+2 and 1+3 of each half.
__attribute__((target("avx2,fma"))) static inline __m256 quadsum(__m256 a, __m256 b) {
	return _mm256_add_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}

// hsum8x8 is hsum8 of eight vectors at once, each sum added in hsum8's order: the
// halves first (lane k + lane k+4), then lanes 0+2 and 1+3, then those two.
__attribute__((target("avx2,fma"))) static inline __m256 hsum8x8(__m256 t0, __m256 t1, __m256 t2, __m256 t3,
		__m256 t4, __m256 t5, __m256 t6, __m256 t7) {
	__m256 q0 = quadsum(pairsum(t0, t1), pairsum(t2, t3)), q1 = quadsum(pairsum(t4, t5), pairsum(t6, t7));
	// [t0, t2, t4, t6 | t1, t3, t5, t7] back in order.
	return _mm256_permutevar8x32_ps(_mm256_hadd_ps(q0, q1), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// moec_scores_heads sets s[h·span + j] = scale·(q_h·k_j) for heads h < heads and keys
// j < span, where q_h = q + h·dh and k_j = k + (h/per_kv)·dh + j·ldk: every head's
// attention scores of one query over its group's cached keys, dh a multiple of 8. Each
// score is summed as runtime/blas's kernel for few rows sums a row of A against a row of
// B (eight lanes of fused multiply-adds along dh, the same horizontal sum, then the
// scale), so the scores are bit for bit those of one sgemm call per head; eight keys at
// a time keep eight independent sums in flight and share their horizontal sums.
__attribute__((target("avx2,fma"))) static void moec_scores_heads(float *s, const float *q, const float *k,
		long heads, long per_kv, long span, long dh, long ldk, float scale) {
	for (long h = 0; h < heads; h++) {
		const float *qh = q + h * dh, *kg = k + (h / per_kv) * dh;
		float *sh = s + h * span;
		long j = 0;
		for (; j + 8 <= span; j += 8) {
			const float *k0 = kg + j * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
			const float *k4 = k3 + ldk, *k5 = k4 + ldk, *k6 = k5 + ldk, *k7 = k6 + ldk;
			__m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
			for (long p = 0; p < dh; p += 8) {
				__m256 x = _mm256_loadu_ps(qh + p);
				t0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + p), x, t0);
				t1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + p), x, t1);
				t2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + p), x, t2);
				t3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + p), x, t3);
				t4 = _mm256_fmadd_ps(_mm256_loadu_ps(k4 + p), x, t4);
				t5 = _mm256_fmadd_ps(_mm256_loadu_ps(k5 + p), x, t5);
				t6 = _mm256_fmadd_ps(_mm256_loadu_ps(k6 + p), x, t6);
				t7 = _mm256_fmadd_ps(_mm256_loadu_ps(k7 + p), x, t7);
			}
			_mm256_storeu_ps(sh + j, _mm256_mul_ps(_mm256_set1_ps(scale), hsum8x8(t0, t1, t2, t3, t4, t5, t6, t7)));
		}
		for (; j + 4 <= span; j += 4) {
			const float *k0 = kg + j * ldk, *k1 = k0 + ldk, *k2 = k1 + ldk, *k3 = k2 + ldk;
			__m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
			for (long p = 0; p < dh; p += 8) {
				__m256 x = _mm256_loadu_ps(qh + p);
				t0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + p), x, t0);
				t1 = _mm256_fmadd_ps(_mm256_loadu_ps(k1 + p), x, t1);
				t2 = _mm256_fmadd_ps(_mm256_loadu_ps(k2 + p), x, t2);
				t3 = _mm256_fmadd_ps(_mm256_loadu_ps(k3 + p), x, t3);
			}
			sh[j] = scale * hsum8(t0);
			sh[j + 1] = scale * hsum8(t1);
			sh[j + 2] = scale * hsum8(t2);
			sh[j + 3] = scale * hsum8(t3);
		}
		for (; j < span; j++) {
			const float *k0 = kg + j * ldk;
			__m256 t0 = _mm256_setzero_ps();
			for (long p = 0; p < dh; p += 8) t0 = _mm256_fmadd_ps(_mm256_loadu_ps(k0 + p), _mm256_loadu_ps(qh + p), t0);
			sh[j] = scale * hsum8(t0);
		}
	}
}
*/
import "C"

import "unsafe"

// ScoresHeads sets s[h·span+j] = scale·Σ_p q[h·dh+p]·k[(h/perKV)·dh + j·ldk + p] for every
// head h < heads and key j < span, and reports whether it did: a decoding step's attention
// scores of one query against the cached keys, all heads in one call, bit for bit what
// runtime/blas.Gemm gives head by head (one row against span keys). It declines a head
// size that is not a multiple of 8 (blas sums the last columns in scalar code, whose
// rounding this kernel does not promise to repeat).
func ScoresHeads(s, q, k []float32, heads, perKV, span, dh, ldk int, scale float32) bool {
	if !have || heads <= 0 || span <= 0 || dh <= 0 || dh%8 != 0 || perKV <= 0 {
		return false
	}
	_, _ = s[heads*span-1], q[heads*dh-1]
	_ = k[((heads-1)/perKV)*dh+(span-1)*ldk+dh-1]
	C.moec_scores_heads((*C.float)(unsafe.Pointer(&s[0])), (*C.float)(unsafe.Pointer(&q[0])),
		(*C.float)(unsafe.Pointer(&k[0])), C.long(heads), C.long(perKV), C.long(span), C.long(dh), C.long(ldk),
		C.float(scale))
	return true
}
