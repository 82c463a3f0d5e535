//go:build cgo && amd64 && !noopenblas

package quant

/*
#cgo CFLAGS: -O3
// -O3: GCC keeps the 512-bit kernel's eight row sums (t[8], a[8]) in registers, about a
// third faster at the tiny HunYuan's shapes than -O2. The scalar tails read the weights
// through int8_t pointers: GCC 12 at -O3 turns a loop of (int8_t)u8 · s8 products into
// vpdpbusd, which multiplies the weight bytes as unsigned (TestMulTAgainstDequantised,
// width 31).
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

enum { ISA_GO = 0, ISA_AVX2 = 1, ISA_VNNI = 2, ISA_VNNI512 = 3 };

static int moec_quant_isa(void) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return ISA_GO;
	if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vl")) return ISA_AVX2;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) return ISA_VNNI512;
	return ISA_VNNI;
}

// The integer dot product of 32 int8 activations x with 32 int8 weights w, as eight int32
// partial sums, given ax = |x| and sw = w·sign(x). Both x and w hold values in [-127, 127]
// (int4: [-8, 7]), so |x| fits a u8 and w·sign(x) an s8: the unsigned-by-signed multiplies
// of vpmaddubsw / vpdpbusd see them. (Pairs of vpmaddubsw products stay below 2·127·127,
// inside int16.)
__attribute__((target("avx2,fma"))) static inline __m256i dot32_avx2(__m256i ax, __m256i sw) {
	return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,avx512vnni,avx512vl"))) static inline __m256i dot32_vnni(__m256i ax, __m256i sw) {
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw);
}

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// A block of 32 int4 weights unpacked in a register: 16 bytes, low nibbles columns 0..15,
// high nibbles 16..31, each q+8.
__attribute__((target("avx2,fma"))) static inline __m256i unpack4(const uint8_t *p) {
	__m128i v = _mm_loadu_si128((const __m128i *)p);
	__m256i w = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
	return _mm256_sub_epi8(_mm256_and_si256(w, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

// Rows of x ([n, in] float32) quantised to int8 in blocks of 32 columns: qx [n, nb·32]
// (zero past in), sx [n, nb] with s = max|x|/127 and q = round-to-even(x·(1/s)), the
// float32 arithmetic of QuantizeRows in Go, so both give the same values.
__attribute__((target("avx2,fma"))) static void moec_quant_rows(const float *x, long n, long in, long nb, int8_t *qx, float *sx) {
	const __m256 signbit = _mm256_set1_ps(-0.0f);
	for (long i = 0; i < n; i++) {
		const float *xr = x + i * in;
		for (long b = 0; b < nb; b++) {
			long lo = b * 32, len = in - lo < 32 ? in - lo : 32;
			int8_t *q = qx + (i * nb + b) * 32;
			float mx = 0;
			if (len == 32) {
				__m256 m = _mm256_setzero_ps();
				for (long k = 0; k < 32; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(signbit, _mm256_loadu_ps(xr + lo + k)));
				__m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
				h = _mm_max_ps(h, _mm_movehl_ps(h, h));
				h = _mm_max_ss(h, _mm_movehdup_ps(h));
				mx = _mm_cvtss_f32(h);
			} else {
				for (long k = 0; k < len; k++) { float a = xr[lo + k] < 0 ? -xr[lo + k] : xr[lo + k]; if (a > mx) mx = a; }
			}
			float s = mx / 127;
			sx[i * nb + b] = s;
			if (s == 0) { memset(q, 0, 32); continue; }
			float inv = 1 / s;
			if (len == 32) {
				__m256 v = _mm256_set1_ps(inv);
				__m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + lo), v));
				__m256i b1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + lo + 8), v));
				__m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + lo + 16), v));
				__m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + lo + 24), v));
				__m256i ab = _mm256_packs_epi32(a, b1), cd = _mm256_packs_epi32(c, d);
				__m256i abcd = _mm256_packs_epi16(ab, cd);
				// The packs work within 128-bit lanes: put the eight 4-byte groups back in order.
				abcd = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
				abcd = _mm256_max_epi8(abcd, _mm256_set1_epi8(-127));
				_mm256_storeu_si256((__m256i *)q, abcd);
			} else {
				for (long k = 0; k < len; k++) q[k] = (int8_t)nearbyintf(xr[lo + k] * inv);
				memset(q + len, 0, 32 - len);
			}
		}
	}
}

// Four horizontal sums at once.
__attribute__((target("avx2,fma"))) static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
	__m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
	__m256 abcd = _mm256_hadd_ps(ab, cd);
	return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Output rows [o0, o1) of y ([n, out]) from the quantised activations qx ([n, nb·32]) and
// sx ([n, nb]) and the weights w (bits 8: [out, in] int8; bits 4: [out, in/2] packed) with
// scales sw ([out, in/group]). Four output rows at a time share each block of x: its
// load, its absolute value and its scale. A block's integer sums are scaled by the
// activation's block scale into a float sum per group, which the weight's group scale
// multiplies when the group ends. Columns past the last full block (int8 only) are summed
// in scalar code.
#define MOEC_QUANT_KERNEL(NAME, TARGET, DOT)                                                      \
TARGET static void NAME(int bits, const int8_t *qx, const float *sx, long n, long nb, long in,     \
		const uint8_t *w, const float *sw, long group, float *y, long out, long o0, long o1, int acc) { \
	long full = in / 32, gpr = in / group, bpg = group / 32;                                       \
	long rowBytes = bits == 8 ? in : in / 2, blkBytes = bits == 8 ? 32 : 16;                       \
	if (bpg == 0) bpg = full + 1;                                                                                  \
	long o = o0;                                                                                   \
	for (; o + 4 <= o1; o += 4) {                                                                  \
		const uint8_t *w0 = w + o * rowBytes, *w1 = w0 + rowBytes, *w2 = w1 + rowBytes, *w3 = w2 + rowBytes; \
		const float *s0 = sw + o * gpr, *s1 = s0 + gpr, *s2 = s1 + gpr, *s3 = s2 + gpr;              \
		for (long i = 0; i < n; i++) {                                                             \
			const int8_t *xr = qx + i * nb * 32;                                                   \
			const float *sxr = sx + i * nb;                                                        \
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                             \
			for (long g0 = 0; g0 < full; g0 += bpg) {                                              \
				long g1 = g0 + bpg < full ? g0 + bpg : full;                                       \
				__m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0;                         \
				for (long b = g0; b < g1; b++) {                                                   \
					__m256i xv = _mm256_loadu_si256((const __m256i *)(xr + b * 32));               \
					__m256i ax = _mm256_sign_epi8(xv, xv);                                         \
					__m256 s = _mm256_set1_ps(sxr[b]);                                             \
					t0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(ax, _mm256_sign_epi8(LOADW(w0 + b * blkBytes), xv))), s, t0); \
					t1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(ax, _mm256_sign_epi8(LOADW(w1 + b * blkBytes), xv))), s, t1); \
					t2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(ax, _mm256_sign_epi8(LOADW(w2 + b * blkBytes), xv))), s, t2); \
					t3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(ax, _mm256_sign_epi8(LOADW(w3 + b * blkBytes), xv))), s, t3); \
				}                                                                                  \
				long g = g0 * 32 / group;                                                          \
				a0 = _mm256_fmadd_ps(t0, _mm256_set1_ps(s0[g]), a0);                                \
				a1 = _mm256_fmadd_ps(t1, _mm256_set1_ps(s1[g]), a1);                                \
				a2 = _mm256_fmadd_ps(t2, _mm256_set1_ps(s2[g]), a2);                                \
				a3 = _mm256_fmadd_ps(t3, _mm256_set1_ps(s3[g]), a3);                                \
			}                                                                                      \
			float t[4];                                                                            \
			_mm_storeu_ps(t, hsum4(a0, a1, a2, a3));                                               \
			if (full < nb) {                                                                       \
				const int8_t *ws[4] = {(const int8_t *)w0, (const int8_t *)w1, (const int8_t *)w2, (const int8_t *)w3}; \
				const float *ss[4] = {s0, s1, s2, s3};                                             \
				for (int r = 0; r < 4; r++) {                                                      \
					int32_t isum = 0;                                                              \
					for (long k = full * 32; k < in; k++) isum += (int32_t)ws[r][k] * xr[k];       \
					t[r] += (float)isum * (sxr[full] * ss[r][full * 32 / group]);                  \
				}                                                                                  \
			}                                                                                      \
			float *yr = y + i * out + o;                                                           \
			for (int r = 0; r < 4; r++) yr[r] = acc ? yr[r] + t[r] : t[r];                         \
		}                                                                                          \
	}                                                                                              \
	for (; o < o1; o++) {                                                                          \
		const uint8_t *wr = w + o * rowBytes;                                                      \
		const float *swr = sw + o * gpr;                                                           \
		for (long i = 0; i < n; i++) {                                                             \
			const int8_t *xr = qx + i * nb * 32;                                                   \
			const float *sxr = sx + i * nb;                                                        \
			__m256 sum = _mm256_setzero_ps();                                                      \
			for (long b = 0; b < full; b++) {                                                      \
				__m256i xv = _mm256_loadu_si256((const __m256i *)(xr + b * 32));                   \
				__m256i wv = _mm256_sign_epi8(LOADW(wr + b * blkBytes), xv);                       \
				__m256 s = _mm256_set1_ps(sxr[b] * swr[b * 32 / group]);                           \
				sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(_mm256_sign_epi8(xv, xv), wv)), s, sum); \
			}                                                                                      \
			float t = hsum8(sum);                                                                  \
			if (full < nb) {                                                                       \
				int32_t isum = 0;                                                                  \
				const int8_t *ws = (const int8_t *)wr;                                             \
				for (long k = full * 32; k < in; k++) isum += (int32_t)ws[k] * xr[k];              \
				t += (float)isum * (sxr[full] * swr[full * 32 / group]);                           \
			}                                                                                      \
			y[i * out + o] = acc ? y[i * out + o] + t : t;                                         \
		}                                                                                          \
	}                                                                                              \
}

// LOADW is one block of 32 weights as int8: a plain load, or an int4 block unpacked.
#define LOADW(p) (bits == 8 ? _mm256_loadu_si256((const __m256i *)(p)) : unpack4(p))

MOEC_QUANT_KERNEL(moec_quant_avx2, __attribute__((target("avx2,fma"))), dot32_avx2)
MOEC_QUANT_KERNEL(moec_quant_vnni, __attribute__((target("avx2,fma,avx512vnni,avx512vl"))), dot32_vnni)

#define VNNI512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

// 64 weights of two blocks as unsigned bytes: int8 as w+128 (w xor 0x80), int4 as its
// stored q+8, unpacked to [block 0 columns 0..31, block 1 columns 0..31].
VNNI512 static inline __m512i load_pair_u8(int bits, const uint8_t *p) {
	if (bits == 8) return _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_set1_epi8((char)0x80));
	__m256i v = _mm256_loadu_si256((const __m256i *)p);
	__m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
	a = _mm512_shuffle_i64x2(a, a, _MM_SHUFFLE(3, 1, 2, 0));
	return _mm512_and_si512(a, _mm512_set1_epi8(0x0F));
}

// Eight horizontal sums of 16 lanes at once.
VNNI512 static inline __m256 hsum8x8(const __m512 *a) {
	__m256 h[8];
	for (int r = 0; r < 8; r++) h[r] = _mm256_add_ps(_mm512_castps512_ps256(a[r]), _mm512_extractf32x8_ps(a[r], 1));
	__m256 s01 = _mm256_hadd_ps(h[0], h[1]), s23 = _mm256_hadd_ps(h[2], h[3]);
	__m256 s45 = _mm256_hadd_ps(h[4], h[5]), s67 = _mm256_hadd_ps(h[6], h[7]);
	__m256 s0 = _mm256_hadd_ps(s01, s23), s1 = _mm256_hadd_ps(s45, s67);
	return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

// The kernel on 512-bit vectors for widths and groups that are multiples of 64: a vector
// holds two blocks, and the weights are the unsigned operand of vpdpbusd, offset by k
// (128 for int8, 8 for int4's stored q+8). The offset's share, k·Σx over each lane's four
// columns, depends on x alone: it is computed once per block pair and starts every row's
// integer sum negated, so each lane holds the exact signed dot product of the 256-bit
// kernels without touching the weights' signs. Eight output rows share each pair of x.
VNNI512 static void moec_quant_vnni512(int bits, const int8_t *qx, const float *sx, long n, long nb, long in,
		const uint8_t *w, const float *sw, long group, float *y, long out, long o0, long o1, int acc) {
	long gpr = in / group, ppg = group / 64;
	long rowBytes = bits == 8 ? in : in / 2, pairBytes = bits == 8 ? 64 : 32;
	const __m512i off = _mm512_set1_epi8(bits == 8 ? (char)128 : 8);
	const __m512i zero = _mm512_setzero_si512();
	long o = o0;
	// One scale per row (int8 per channel, or a group as wide as the row): the row's sum is
	// scaled once after the horizontal sums, eight rows' scales in one vector.
	for (; gpr == 1 && o + 8 <= o1; o += 8) {
		const uint8_t *wr = w + o * rowBytes;
		for (long i = 0; i < n; i++) {
			const int8_t *xr = qx + i * nb * 32;
			const float *sxr = sx + i * nb;
			__m512 t[8];
			for (long p = 0; p < ppg; p++) {
				__m512i xv = _mm512_loadu_si512(xr + p * 64);
				__m512i c = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, xv));
				__m512 s = _mm512_insertf32x8(_mm512_set1_ps(sxr[2 * p]), _mm256_set1_ps(sxr[2 * p + 1]), 1);
#pragma GCC unroll 8
				for (int r = 0; r < 8; r++) {
					__m512 d = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, load_pair_u8(bits, wr + r * rowBytes + p * pairBytes), xv));
					t[r] = p == 0 ? _mm512_mul_ps(d, s) : _mm512_fmadd_ps(d, s, t[r]);
				}
			}
			__m256 res = _mm256_mul_ps(hsum8x8(t), _mm256_loadu_ps(sw + o));
			float *yr = y + i * out + o;
			if (acc) res = _mm256_add_ps(_mm256_loadu_ps(yr), res);
			_mm256_storeu_ps(yr, res);
		}
	}
	for (; o + 8 <= o1; o += 8) {
		const uint8_t *wr = w + o * rowBytes;
		const float *swr = sw + o * gpr;
		for (long i = 0; i < n; i++) {
			const int8_t *xr = qx + i * nb * 32;
			const float *sxr = sx + i * nb;
			__m512 a[8];
#pragma GCC unroll 8
			for (int r = 0; r < 8; r++) a[r] = _mm512_setzero_ps();
			for (long g = 0; g < gpr; g++) {
				__m512 t[8];
#pragma GCC unroll 8
				for (int r = 0; r < 8; r++) t[r] = _mm512_setzero_ps();
				for (long p = g * ppg; p < (g + 1) * ppg; p++) {
					__m512i xv = _mm512_loadu_si512(xr + p * 64);
					__m512i c = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, xv));
					__m512 s = _mm512_insertf32x8(_mm512_set1_ps(sxr[2 * p]), _mm256_set1_ps(sxr[2 * p + 1]), 1);
#pragma GCC unroll 8
					for (int r = 0; r < 8; r++) {
						__m512i d = _mm512_dpbusd_epi32(c, load_pair_u8(bits, wr + r * rowBytes + p * pairBytes), xv);
						t[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, t[r]);
					}
				}
#pragma GCC unroll 8
				for (int r = 0; r < 8; r++) a[r] = _mm512_fmadd_ps(t[r], _mm512_set1_ps(swr[r * gpr + g]), a[r]);
			}
			__m256 res = hsum8x8(a);
			float *yr = y + i * out + o;
			if (acc) res = _mm256_add_ps(_mm256_loadu_ps(yr), res);
			_mm256_storeu_ps(yr, res);
		}
	}
	for (; o < o1; o++) {
		const uint8_t *wr = w + o * rowBytes;
		const float *swr = sw + o * gpr;
		for (long i = 0; i < n; i++) {
			const int8_t *xr = qx + i * nb * 32;
			const float *sxr = sx + i * nb;
			__m512 a = _mm512_setzero_ps();
			for (long g = 0; g < gpr; g++) {
				__m512 t = _mm512_setzero_ps();
				for (long p = g * ppg; p < (g + 1) * ppg; p++) {
					__m512i xv = _mm512_loadu_si512(xr + p * 64);
					__m512i c = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, xv));
					__m512 s = _mm512_insertf32x8(_mm512_set1_ps(sxr[2 * p]), _mm256_set1_ps(sxr[2 * p + 1]), 1);
					__m512i d = _mm512_dpbusd_epi32(c, load_pair_u8(bits, wr + p * pairBytes), xv);
					t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, t);
				}
				a = _mm512_fmadd_ps(t, _mm512_set1_ps(swr[g]), a);
			}
			float v = _mm512_reduce_add_ps(a);
			y[i * out + o] = acc ? y[i * out + o] + v : v;
		}
	}
}

// moec_quant_mul quantises the rows of x into qx, sx and multiplies them into all of y's
// outputs with the kernel of isa: one call from Go for a product run on one core.
static void moec_quant_mul(int isa, const float *x, int8_t *qx, float *sx, long n, long nb, long in,
		int bits, const uint8_t *w, const float *sw, long group, float *y, long out, int acc) {
	moec_quant_rows(x, n, in, nb, qx, sx);
	if (isa == ISA_VNNI512 && in % 64 == 0 && group % 64 == 0) moec_quant_vnni512(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
	else if (isa >= ISA_VNNI) moec_quant_vnni(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
	else moec_quant_avx2(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
}

// moec_quant_mul_kernel is one matrix's product from activations already quantised.
static void moec_quant_mul_kernel(int isa, const int8_t *qx, const float *sx, long n, long nb, long in,
		int bits, const uint8_t *w, const float *sw, long group, float *y, long out, int acc) {
	if (isa == ISA_VNNI512 && in % 64 == 0 && group % 64 == 0) moec_quant_vnni512(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
	else if (isa >= ISA_VNNI) moec_quant_vnni(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
	else moec_quant_avx2(bits, qx, sx, n, nb, in, w, sw, group, y, out, 0, out, acc);
}

// moec_quant_mul_shared quantises the rows of x once and multiplies them by two or three
// matrices of the same width (w2 NULL: two): one call from Go for the queries, keys and
// values of a token, or an FFN's gate and up projections.
static void moec_quant_mul_shared(int isa, const float *x, int8_t *qx, float *sx, long n, long nb, long in, int acc,
		int bits0, const uint8_t *w0, const float *sw0, long group0, float *y0, long out0,
		int bits1, const uint8_t *w1, const float *sw1, long group1, float *y1, long out1,
		int bits2, const uint8_t *w2, const float *sw2, long group2, float *y2, long out2) {
	moec_quant_rows(x, n, in, nb, qx, sx);
	moec_quant_mul_kernel(isa, qx, sx, n, nb, in, bits0, w0, sw0, group0, y0, out0, acc);
	moec_quant_mul_kernel(isa, qx, sx, n, nb, in, bits1, w1, sw1, group1, y1, out1, acc);
	if (w2) moec_quant_mul_kernel(isa, qx, sx, n, nb, in, bits2, w2, sw2, group2, y2, out2, acc);
}
*/
import "C"

import "unsafe"

// The kernels, best last.
const (
	isaGo   = C.ISA_GO
	isaAVX2 = C.ISA_AVX2
	isaVNNI = C.ISA_VNNI
	// isaVNNI512 is isaVNNI with 512-bit vectors (AVX-512 F, BW, DQ) for the widths and
	// groups that are multiples of 64; other matrices take isaVNNI's kernel.
	isaVNNI512 = C.ISA_VNNI512
)

// bestISA is fixed at start-up by the CPU (cpuid): VNNI on 512 bits, VNNI, else AVX2, else Go.
var bestISA = int(C.moec_quant_isa())

// ISA names the kernel MulT uses on this CPU: "avx512vnni-512", "avx512vnni", "avx2" or "go".
func ISA() string { return isaName(bestISA) }

func isaName(isa int) string {
	switch isa {
	case isaVNNI512:
		return "avx512vnni-512"
	case isaVNNI:
		return "avx512vnni"
	case isaAVX2:
		return "avx2"
	}
	return "go"
}

// isas lists the kernels this build and CPU can run (tests compare each with Go).
func isas() []int {
	out := []int{isaGo}
	for isa := isaAVX2; isa <= bestISA; isa++ {
		out = append(out, isa)
	}
	return out
}

func (m *Matrix) kernel(isa int, a *Activations, y []float32, n, o0, o1 int, accumulate bool) {
	if isa == isaGo || o0 >= o1 {
		m.mulGo(a, y, n, o0, o1, accumulate)
		return
	}
	acc := C.int(0)
	if accumulate {
		acc = 1
	}
	args := func() (C.int, *C.int8_t, *C.float, C.long, C.long, C.long, *C.uint8_t, *C.float, C.long, *C.float, C.long, C.long, C.long, C.int) {
		return C.int(m.Bits), (*C.int8_t)(unsafe.Pointer(&a.Q[0])), (*C.float)(unsafe.Pointer(&a.Scales[0])), C.long(n), C.long(a.Blocks),
			C.long(m.In), (*C.uint8_t)(unsafe.Pointer(&m.Data[0])), (*C.float)(unsafe.Pointer(&m.Scales[0])), C.long(m.Group),
			(*C.float)(unsafe.Pointer(&y[0])), C.long(m.Out), C.long(o0), C.long(o1), acc
	}
	switch {
	case isa == isaVNNI512 && m.wide512():
		C.moec_quant_vnni512(args())
	case isa >= isaVNNI:
		C.moec_quant_vnni(args())
	default:
		C.moec_quant_avx2(args())
	}
}

// wide512 says whether the 512-bit kernel takes the matrix: its width and group are
// multiples of 64 (two blocks to a vector).
func (m *Matrix) wide512() bool { return m.In%64 == 0 && m.Group%64 == 0 }

// mulOne is MulT on one core with the kernel of isa: the activations' quantisation and the
// product in one call into C.
func (m *Matrix) mulOne(isa int, a *Activations, y, x []float32, n int, accumulate bool) {
	if isa == isaGo {
		QuantizeRows(a, x, n, m.In)
		m.mulGo(a, y, n, 0, m.Out, accumulate)
		return
	}
	a.size(n, m.In)
	acc := C.int(0)
	if accumulate {
		acc = 1
	}
	C.moec_quant_mul(C.int(isa), (*C.float)(unsafe.Pointer(&x[0])), (*C.int8_t)(unsafe.Pointer(&a.Q[0])), (*C.float)(unsafe.Pointer(&a.Scales[0])),
		C.long(n), C.long(a.Blocks), C.long(m.In), C.int(m.Bits), (*C.uint8_t)(unsafe.Pointer(&m.Data[0])), (*C.float)(unsafe.Pointer(&m.Scales[0])),
		C.long(m.Group), (*C.float)(unsafe.Pointer(&y[0])), C.long(m.Out), acc)
}

// quantizeRows is QuantizeRows, in C when isa has a kernel.
func quantizeRows(isa int, a *Activations, x []float32, n, in int) {
	if isa == isaGo {
		QuantizeRows(a, x, n, in)
		return
	}
	a.size(n, in)
	C.moec_quant_rows((*C.float)(unsafe.Pointer(&x[0])), C.long(n), C.long(in), C.long(a.Blocks),
		(*C.int8_t)(unsafe.Pointer(&a.Q[0])), (*C.float)(unsafe.Pointer(&a.Scales[0])))
}

// mulShared is MulTShared on one core with the kernel of isa: ms[2] may be nil. Every
// matrix has rows and columns, and n > 0.
func mulShared(isa int, a *Activations, x []float32, n int, ms [3]*Matrix, ys [3][]float32, accumulate bool) {
	in := ms[0].In
	if isa == isaGo {
		QuantizeRows(a, x, n, in)
		for j, m := range ms {
			if m != nil {
				m.mulGo(a, ys[j], n, 0, m.Out, accumulate)
			}
		}
		return
	}
	a.size(n, in)
	acc := C.int(0)
	if accumulate {
		acc = 1
	}
	type operand struct {
		bits  C.int
		w     *C.uint8_t
		sw    *C.float
		group C.long
		y     *C.float
		out   C.long
	}
	var op [3]operand
	for j, m := range ms {
		if m != nil {
			op[j] = operand{C.int(m.Bits), (*C.uint8_t)(unsafe.Pointer(&m.Data[0])), (*C.float)(unsafe.Pointer(&m.Scales[0])),
				C.long(m.Group), (*C.float)(unsafe.Pointer(&ys[j][0])), C.long(m.Out)}
		}
	}
	C.moec_quant_mul_shared(C.int(isa), (*C.float)(unsafe.Pointer(&x[0])), (*C.int8_t)(unsafe.Pointer(&a.Q[0])), (*C.float)(unsafe.Pointer(&a.Scales[0])),
		C.long(n), C.long(a.Blocks), C.long(in), acc,
		op[0].bits, op[0].w, op[0].sw, op[0].group, op[0].y, op[0].out,
		op[1].bits, op[1].w, op[1].sw, op[1].group, op[1].y, op[1].out,
		op[2].bits, op[2].w, op[2].sw, op[2].group, op[2].y, op[2].out)
}
