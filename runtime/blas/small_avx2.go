//go:build cgo && amd64 && !noopenblas

package blas

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

static int moec_blas_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma"))) static inline float moec_hsum(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static inline void moec_store(float *c, float s, float alpha, float beta) {
	// beta = 0 never reads C, as BLAS does: C may hold NaN or garbage.
	*c = beta == 0 ? alpha * s : alpha * s + beta * *c;
}

// C[i][j] = alpha·(A[i]·B[j]) + beta·C[i][j] for i < m and j in [j0, j1): A is m×k and B
// is n×k, both row-major (C = alpha·A·Bᵀ + beta·C). Tiles of three rows of B by four rows
// of A keep twelve accumulators in registers; each row of B is read from memory once per
// call and reused from L1 for all m rows of A, where sgemm would first copy all of B into
// its packed layout — most of the cost when m is small.
__attribute__((target("avx2,fma"))) static void moec_gemm_nt_small(long m, long k, float alpha,
		const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc, long j0, long j1) {
	long j = j0;
	for (; j + 3 <= j1; j += 3) {
		const float *b0 = b + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb;
		long i = 0;
		for (; i + 4 <= m; i += 4) {
			const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
			__m256 s00 = _mm256_setzero_ps(), s01 = _mm256_setzero_ps(), s02 = _mm256_setzero_ps(), s03 = _mm256_setzero_ps();
			__m256 s10 = _mm256_setzero_ps(), s11 = _mm256_setzero_ps(), s12 = _mm256_setzero_ps(), s13 = _mm256_setzero_ps();
			__m256 s20 = _mm256_setzero_ps(), s21 = _mm256_setzero_ps(), s22 = _mm256_setzero_ps(), s23 = _mm256_setzero_ps();
			long p = 0;
			for (; p + 8 <= k; p += 8) {
				__m256 x0 = _mm256_loadu_ps(a0 + p), x1 = _mm256_loadu_ps(a1 + p);
				__m256 x2 = _mm256_loadu_ps(a2 + p), x3 = _mm256_loadu_ps(a3 + p);
				__m256 w = _mm256_loadu_ps(b0 + p);
				s00 = _mm256_fmadd_ps(w, x0, s00); s01 = _mm256_fmadd_ps(w, x1, s01);
				s02 = _mm256_fmadd_ps(w, x2, s02); s03 = _mm256_fmadd_ps(w, x3, s03);
				w = _mm256_loadu_ps(b1 + p);
				s10 = _mm256_fmadd_ps(w, x0, s10); s11 = _mm256_fmadd_ps(w, x1, s11);
				s12 = _mm256_fmadd_ps(w, x2, s12); s13 = _mm256_fmadd_ps(w, x3, s13);
				w = _mm256_loadu_ps(b2 + p);
				s20 = _mm256_fmadd_ps(w, x0, s20); s21 = _mm256_fmadd_ps(w, x1, s21);
				s22 = _mm256_fmadd_ps(w, x2, s22); s23 = _mm256_fmadd_ps(w, x3, s23);
			}
			float s[3][4] = {
				{moec_hsum(s00), moec_hsum(s01), moec_hsum(s02), moec_hsum(s03)},
				{moec_hsum(s10), moec_hsum(s11), moec_hsum(s12), moec_hsum(s13)},
				{moec_hsum(s20), moec_hsum(s21), moec_hsum(s22), moec_hsum(s23)},
			};
			for (; p < k; p++) {
				for (int ii = 0; ii < 4; ii++) {
					float x = a[(i + ii) * lda + p];
					s[0][ii] += b0[p] * x;
					s[1][ii] += b1[p] * x;
					s[2][ii] += b2[p] * x;
				}
			}
			for (int ii = 0; ii < 4; ii++) {
				for (int jj = 0; jj < 3; jj++) {
					moec_store(c + (i + ii) * ldc + j + jj, s[jj][ii], alpha, beta);
				}
			}
		}
		for (; i < m; i++) { // the last rows of A, one at a time against the three of B
			const float *a0 = a + i * lda;
			__m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps(), t2 = _mm256_setzero_ps();
			long p = 0;
			for (; p + 8 <= k; p += 8) {
				__m256 x0 = _mm256_loadu_ps(a0 + p);
				t0 = _mm256_fmadd_ps(_mm256_loadu_ps(b0 + p), x0, t0);
				t1 = _mm256_fmadd_ps(_mm256_loadu_ps(b1 + p), x0, t1);
				t2 = _mm256_fmadd_ps(_mm256_loadu_ps(b2 + p), x0, t2);
			}
			float u0 = moec_hsum(t0), u1 = moec_hsum(t1), u2 = moec_hsum(t2);
			for (; p < k; p++) {
				u0 += b0[p] * a0[p];
				u1 += b1[p] * a0[p];
				u2 += b2[p] * a0[p];
			}
			moec_store(c + i * ldc + j, u0, alpha, beta);
			moec_store(c + i * ldc + j + 1, u1, alpha, beta);
			moec_store(c + i * ldc + j + 2, u2, alpha, beta);
		}
	}
	for (; j < j1; j++) { // the last rows of B, one at a time
		const float *b0 = b + j * ldb;
		for (long i = 0; i < m; i++) {
			const float *a0 = a + i * lda;
			__m256 t0 = _mm256_setzero_ps();
			long p = 0;
			for (; p + 8 <= k; p += 8) {
				t0 = _mm256_fmadd_ps(_mm256_loadu_ps(b0 + p), _mm256_loadu_ps(a0 + p), t0);
			}
			float u0 = moec_hsum(t0);
			for (; p < k; p++) {
				u0 += b0[p] * a0[p];
			}
			moec_store(c + i * ldc + j, u0, alpha, beta);
		}
	}
}
*/
import "C"

import "unsafe"

// haveSmall is fixed at start-up by the CPU: the kernel needs AVX2 and FMA.
var haveSmall = C.moec_blas_have_avx2() != 0

// gemmSmallNT computes columns [j0, j1) of C = alpha·A·Bᵀ + beta·C for float32 A (m×k) and
// B (n×k) with the streaming kernel, and reports whether it did (false: no kernel on this
// CPU). The caller has checked the operands' lengths and that m, k > 0.
func gemmSmallNT(m, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc, j0, j1 int) bool {
	if !haveSmall {
		return false
	}
	C.moec_gemm_nt_small(C.long(m), C.long(k), C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.long(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.long(ldb), C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.long(ldc),
		C.long(j0), C.long(j1))
	return true
}
