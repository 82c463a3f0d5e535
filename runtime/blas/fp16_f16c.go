//go:build cgo && amd64 && !noopenblas

package blas

/*
#cgo CFLAGS: -O3
#include <immintrin.h>

static int moec_blas_have_f16c(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}

// moec_round_fp16 writes dst[i] = the float32 of the binary16 nearest src[i] (ties to
// even: vcvtps2ph's imm8 0), eight values an instruction pair.
__attribute__((target("avx,f16c"))) static void moec_round_fp16(float *dst, const float *src, long n) {
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
	}
	for (; i < n; i++) {
		__m128i h = _mm_cvtps_ph(_mm_set_ss(src[i]), _MM_FROUND_TO_NEAREST_INT);
		dst[i] = _mm_cvtss_f32(_mm_cvtph_ps(h));
	}
}
*/
import "C"

import "unsafe"

// haveF16C: the CPU converts float32 to and from binary16 in hardware.
var haveF16C = C.moec_blas_have_f16c() != 0

// roundFP16Row writes dst[i] = RoundFP16(src[i]) (len(dst) ≥ len(src)): one call of the
// F16C loop where the CPU has it, else the Go loop.
func roundFP16Row(dst, src []float32) {
	if len(src) == 0 {
		return
	}
	if !haveF16C {
		roundFP16Go(dst, src)
		return
	}
	C.moec_round_fp16((*C.float)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0])), C.long(len(src)))
}
