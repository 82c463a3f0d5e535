//go:build cgo && amd64 && !noopenblas

package quant

/*
#cgo CFLAGS: -O2
#include <immintrin.h>
#include <stdint.h>

enum { ISA_GO = 0, ISA_AVX2 = 1, ISA_VNNI = 2 };

static int moec_quant_isa(void) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return ISA_GO;
	if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) return ISA_VNNI;
	return ISA_AVX2;
}

// The integer dot product of 32 int8 activations x with 32 int8 weights w, as eight int32
// partial sums. Both hold values in [-127, 127], so |x| fits a u8 and w·sign(x) an s8:
// the unsigned-by-signed multiplies of vpmaddubsw / vpdpbusd see |x| and w·sign(x).
__attribute__((target("avx2,fma"))) static inline __m256i dot32_avx2(__m256i x, __m256i w) {
	__m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,avx512vnni,avx512vl"))) static inline __m256i dot32_vnni(__m256i x, __m256i w) {
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
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

// Output rows [o0, o1) of y ([n, out]) from the quantised activations qx ([n, nb·32]) and
// sx ([n, nb]) and the weights w (bits 8: [out, in] int8; bits 4: [out, in/2] packed) with
// scales sw ([out, in/group]). Columns past the last full block (int8 only) are summed in
// scalar code.
#define MOEC_QUANT_KERNEL(NAME, TARGET, DOT)                                                      \
TARGET static void NAME(int bits, const int8_t *qx, const float *sx, long n, long nb, long in,     \
		const uint8_t *w, const float *sw, long group, float *y, long out, long o0, long o1, int acc) { \
	long full = in / 32, gpr = in / group;                                                         \
	long rowBytes = bits == 8 ? in : in / 2;                                                       \
	for (long o = o0; o < o1; o++) {                                                               \
		const uint8_t *wr = w + o * rowBytes;                                                      \
		const float *swr = sw + o * gpr;                                                           \
		for (long i = 0; i < n; i++) {                                                             \
			const int8_t *xr = qx + i * nb * 32;                                                   \
			const float *sxr = sx + i * nb;                                                        \
			__m256 sum = _mm256_setzero_ps();                                                      \
			for (long b = 0; b < full; b++) {                                                      \
				__m256i xv = _mm256_loadu_si256((const __m256i *)(xr + b * 32));                   \
				__m256i wv = bits == 8 ? _mm256_loadu_si256((const __m256i *)(wr + b * 32))        \
				                       : unpack4(wr + b * 16);                                     \
				__m256 s = _mm256_set1_ps(sxr[b] * swr[b * 32 / group]);                           \
				sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(xv, wv)), s, sum);                    \
			}                                                                                      \
			float t = hsum8(sum);                                                                  \
			if (full < nb) {                                                                       \
				int32_t isum = 0;                                                                  \
				for (long k = full * 32; k < in; k++) isum += (int32_t)(int8_t)wr[k] * xr[k];      \
				t += (float)isum * (sxr[full] * swr[full * 32 / group]);                           \
			}                                                                                      \
			y[i * out + o] = acc ? y[i * out + o] + t : t;                                         \
		}                                                                                          \
	}                                                                                              \
}

MOEC_QUANT_KERNEL(moec_quant_avx2, __attribute__((target("avx2,fma"))), dot32_avx2)
MOEC_QUANT_KERNEL(moec_quant_vnni, __attribute__((target("avx2,fma,avx512vnni,avx512vl"))), dot32_vnni)
*/
import "C"

import "unsafe"

// The kernels, best last.
const (
	isaGo   = C.ISA_GO
	isaAVX2 = C.ISA_AVX2
	isaVNNI = C.ISA_VNNI
)

// bestISA is fixed at start-up by the CPU (cpuid): VNNI, else AVX2, else Go.
var bestISA = int(C.moec_quant_isa())

// ISA names the kernel MulT uses on this CPU: "avx512vnni", "avx2" or "go".
func ISA() string { return isaName(bestISA) }

func isaName(isa int) string {
	switch isa {
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
	if isa == isaVNNI {
		C.moec_quant_vnni(args())
	} else {
		C.moec_quant_avx2(args())
	}
}
