//go:build cgo && amd64 && !noopenblas

package blas

/*
#cgo CFLAGS: -O3
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int moec_blas_have_bf16(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// moec_bf16 rounds f to bfloat16, to nearest with ties to even (NaN stays NaN): the same
// bits as Go's roundBF16Bits.
static inline uint32_t moec_bf16(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) {
		return (u >> 16) | 0x40u;
	}
	u += 0x7fffu + ((u >> 16) & 1u);
	return u >> 16;
}

// The product's blocking. A micro-kernel computes an MR×NR tile of C in 24 zmm
// accumulators (12 rows × two vectors of 16 columns) over KC values of k at a time: the
// tile's part of packed B (KC/2 pairs × NR bf16 pairs = 16 KiB) stays in L1 while the
// micro-kernel walks the MC rows of packed A (MC×KC bf16 = 48 KiB, in L2).
enum { MR = 12, NR = 32, KC = 256, MC = 96 };

#define MOEC_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))

// moec_pairs16 rounds 16 values of each of x0 and x1 to bfloat16 (vcvtneps2bf16: to
// nearest even, as moec_bf16 for every value the kernel does not treat as zero) and
// returns the 16 words x0[j] | x1[j] << 16.
MOEC_BF16_TARGET static inline __m512i moec_pairs16(__m512 x0, __m512 x1) {
	__m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x0));
	__m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x1));
	return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// moec_row_pairs writes the cnt words of pairs (x[2p], x[2p+1]) of a row of k values
// starting at pair p0 (values past k are zero) to dst[p·stride]: consecutive values of a
// row are already the pairs' low and high halves, so 32 of them round in one instruction.
MOEC_BF16_TARGET static void moec_row_pairs(const float *x, int k, int p0, int cnt, uint32_t *dst, long stride) {
	int p = 0;
	uint32_t tmp[16] __attribute__((aligned(64)));
	for (; p + 16 <= cnt && 2 * (p0 + p + 16) <= k; p += 16) {
		const float *src = x + 2 * (p0 + p);
		__m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
		if (stride == 1) {
			_mm512_storeu_si512(dst + p, w);
		} else {
			_mm512_store_si512(tmp, w);
			for (int q = 0; q < 16; q++) {
				dst[(long)(p + q) * stride] = tmp[q];
			}
		}
	}
	for (; p < cnt; p++) {
		int kk = 2 * (p0 + p);
		uint32_t lo = kk < k ? moec_bf16(x[kk]) : 0;
		uint32_t hi = kk + 1 < k ? moec_bf16(x[kk + 1]) : 0;
		dst[(long)p * stride] = lo | hi << 16;
	}
}

// moec_interleave_pairs writes the cnt words r0[j] | r1[j] << 16 (r1 NULL: zero) for
// j < cnt to dst[j·stride].
MOEC_BF16_TARGET static void moec_interleave_pairs(const float *r0, const float *r1, int cnt, uint32_t *dst, long stride) {
	int j = 0;
	uint32_t tmp[16] __attribute__((aligned(64)));
	for (; j + 16 <= cnt; j += 16) {
		__m512 x1 = r1 ? _mm512_loadu_ps(r1 + j) : _mm512_setzero_ps();
		__m512i w = moec_pairs16(_mm512_loadu_ps(r0 + j), x1);
		if (stride == 1) {
			_mm512_storeu_si512(dst + j, w);
		} else {
			_mm512_store_si512(tmp, w);
			for (int q = 0; q < 16; q++) {
				dst[(long)(j + q) * stride] = tmp[q];
			}
		}
	}
	for (; j < cnt; j++) {
		dst[(long)j * stride] = moec_bf16(r0[j]) | (r1 ? moec_bf16(r1[j]) : 0) << 16;
	}
}

// Packed B holds, for each panel of NR columns and each pair of rows (2p, 2p+1) of op(B),
// NR 32-bit words whose low half is B[2p][j] and high half B[2p+1][j] in bf16: the operand
// layout of vdpbf16ps. Rows past k and columns past n are zero.
MOEC_BF16_TARGET static void moec_pack_b(int tb, int n, int k, const float *b, long ldb, uint32_t *bp) {
	int kp = (k + 1) / 2, np = (n + NR - 1) / NR;
	for (int q = 0; q < np; q++) {
		uint32_t *dst = bp + (long)q * kp * NR;
		int j0 = q * NR, nr = n - j0 < NR ? n - j0 : NR;
		if (nr < NR) {
			memset(dst, 0, (size_t)kp * NR * 4);
		}
		if (!tb) {
			for (int p = 0; p < kp; p++) {
				const float *r0 = b + (long)(2 * p) * ldb + j0;
				moec_interleave_pairs(r0, 2 * p + 1 < k ? r0 + ldb : NULL, nr, dst + (long)p * NR, 1);
			}
		} else {
			for (int jj = 0; jj < nr; jj++) {
				moec_row_pairs(b + (long)(j0 + jj) * ldb, k, 0, kp, dst + jj, NR);
			}
		}
	}
}

// moec_pack_a packs rows [i0, i0+mc) and pairs [p0, p0+kcp) of op(A) as MR-row
// micro-panels, row by row: row ii of a micro-panel is its kcp words (low half the even k).
// Rows past mc and values past k are zero.
MOEC_BF16_TARGET static void moec_pack_a(int ta, int mc, int k, int i0, int p0, int kcp, const float *a, long lda, uint32_t *ap) {
	int blocks = (mc + MR - 1) / MR;
	for (int blk = 0; blk < blocks; blk++) {
		uint32_t *dst = ap + (long)blk * kcp * MR;
		int r0 = blk * MR, mr = mc - r0 < MR ? mc - r0 : MR;
		if (mr < MR) {
			memset(dst, 0, (size_t)kcp * MR * 4);
		}
		if (!ta) {
			for (int ii = 0; ii < mr; ii++) {
				moec_row_pairs(a + (long)(i0 + r0 + ii) * lda, k, p0, kcp, dst + (long)ii * kcp, 1);
			}
		}
	}
	if (!ta) {
		return;
	}
	// Transposed A: each pair of k is two stored rows, contiguous over the block's rows;
	// 16 rows at a time round in one go and go to their micro-panels' rows.
	uint32_t tmp[16] __attribute__((aligned(64)));
	for (int p = 0; p < kcp; p++) {
		int kk = 2 * (p0 + p);
		const float *x0 = a + (long)kk * lda + i0;
		const float *x1 = kk + 1 < k ? x0 + lda : NULL;
		for (int i = 0; i < mc; i += 16) {
			int cnt = mc - i < 16 ? mc - i : 16;
			if (cnt == 16) {
				__m512 v1 = x1 ? _mm512_loadu_ps(x1 + i) : _mm512_setzero_ps();
				_mm512_store_si512(tmp, moec_pairs16(_mm512_loadu_ps(x0 + i), v1));
			} else {
				for (int q = 0; q < cnt; q++) {
					tmp[q] = moec_bf16(x0[i + q]) | (x1 ? moec_bf16(x1[i + q]) : 0) << 16;
				}
			}
			for (int q = 0; q < cnt; q++) {
				int r = i + q;
				ap[(long)(r / MR) * kcp * MR + (long)(r % MR) * kcp + p] = tmp[q];
			}
		}
	}
}

// moec_bf16_tile adds alpha times the product of an MR-row micro-panel of packed A and an
// NR-column panel of packed B over kcp pairs to the mr×nr tile of C at c: on the first
// block of k it replaces C by beta·C first (beta = 0 never reads C).
MOEC_BF16_TARGET static void moec_bf16_tile(int kcp, const uint32_t *ap, const uint32_t *bp, float *c, long ldc,
		int mr, int nr, float alpha, float beta, int first) {
	__m512 acc[MR][2];
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		acc[i][0] = _mm512_setzero_ps();
		acc[i][1] = _mm512_setzero_ps();
	}
	for (int p = 0; p < kcp; p++) {
		__m512bh b0 = (__m512bh)_mm512_load_si512(bp + (long)p * NR);
		__m512bh b1 = (__m512bh)_mm512_load_si512(bp + (long)p * NR + 16);
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			__m512bh x = (__m512bh)_mm512_set1_epi32((int)ap[(long)i * kcp + p]);
			acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
			acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
		}
	}
	__mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
	__mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
	for (int i = 0; i < mr; i++) {
		float *ci = c + (long)i * ldc;
		__m512 r0 = _mm512_mul_ps(acc[i][0], va), r1 = _mm512_mul_ps(acc[i][1], va);
		if (!first) {
			r0 = _mm512_add_ps(r0, _mm512_maskz_loadu_ps(m0, ci));
			r1 = _mm512_add_ps(r1, _mm512_maskz_loadu_ps(m1, ci + 16));
		} else if (beta != 0) {
			r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
			r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
		}
		_mm512_mask_storeu_ps(ci, m0, r0);
		_mm512_mask_storeu_ps(ci + 16, m1, r1);
	}
}

// moec_sgemm_bf16 computes C = alpha·bf16(op(A))·bf16(op(B)) + beta·C for row-major
// float32 operands (op(A) m×k, op(B) k×n, k > 0), rounding every value of A and B to
// bfloat16 as it packs them and accumulating in float32. It returns -1 when it cannot
// allocate its packing buffers (C untouched), else 0.
MOEC_BF16_TARGET static int moec_sgemm_bf16(int ta, int tb, int m, int n, int k, float alpha,
		const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
	int kp = (k + 1) / 2, np = (n + NR - 1) / NR, kcpMax = KC / 2;
	uint32_t *bp = aligned_alloc(64, (size_t)np * kp * NR * 4);
	uint32_t *ap = aligned_alloc(64, (size_t)MC * kcpMax * 4);
	if (bp == NULL || ap == NULL) {
		free(bp);
		free(ap);
		return -1;
	}
	moec_pack_b(tb, n, k, b, ldb, bp);
	for (int p0 = 0; p0 < kp; p0 += kcpMax) {
		int kcp = kp - p0 < kcpMax ? kp - p0 : kcpMax;
		for (int i0 = 0; i0 < m; i0 += MC) {
			int mc = m - i0 < MC ? m - i0 : MC;
			moec_pack_a(ta, mc, k, i0, p0, kcp, a, lda, ap);
			for (int q = 0; q < np; q++) {
				const uint32_t *bq = bp + ((long)q * kp + p0) * NR;
				int nr = n - q * NR < NR ? n - q * NR : NR;
				for (int r0 = 0; r0 < mc; r0 += MR) {
					int mr = mc - r0 < MR ? mc - r0 : MR;
					moec_bf16_tile(kcp, ap + (long)(r0 / MR) * kcp * MR, bq, c + (long)(i0 + r0) * ldc + q * NR, ldc,
						mr, nr, alpha, beta, p0 == 0);
				}
			}
		}
	}
	free(bp);
	free(ap);
	return 0;
}
*/
import "C"

import "unsafe"

// bf16Panel is the column width of the kernel's panels of B: a split of the columns of C
// over goroutines cuts at multiples of it.
const bf16Panel = 32

// bf16Rows is the kernel's tile height: a split of the rows of C cuts at multiples of it.
const bf16Rows = 12

// haveBF16Kernel is fixed at start-up by the CPU: the kernel needs AVX512-BF16 (vdpbf16ps)
// and the AVX-512 F, BW and VL it builds on.
var haveBF16Kernel = C.moec_blas_have_bf16() != 0

// gemmBF16Kernel runs the AVX512-BF16 kernel on one part of a product (k > 0) and reports
// whether it did (false: no kernel on this CPU, or no memory for its packing buffers).
func gemmBF16Kernel(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	if !haveBF16Kernel {
		return false
	}
	return C.moec_sgemm_bf16(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.long(lda), (*C.float)(unsafe.Pointer(&b[0])), C.long(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.long(ldc)) == 0
}

func cbool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
