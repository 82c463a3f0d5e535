//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2
#pragma GCC optimize("fp-contract=off")
#include <immintrin.h>

// hsum4d adds the four lanes of a double vector.
__attribute__((target("avx2,fma"))) static inline double norm_hsum4d(__m256d a) {
	__m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
	return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// moec_norm_rows normalises rows of width d as runtime/nn's normRows does, in double:
// mean (layer norm only) and the mean square of x − mean summed on four double lanes,
// r = 1/√(ms + eps), then xhat = float((x − mean)·r), y = xhat·w (+ b) in float. No
// product and sum fuse into one rounding where the Go loop rounds twice (the pragma
// above). y may alias x.
__attribute__((target("avx2,fma"))) static void moec_norm_rows(float *y, float *xhat, float *rstd, const float *x,
		long rows, long d, const float *w, const float *b, int layer, double eps) {
	for (long i = 0; i < rows; i++) {
		const float *xi = x + i * d;
		float *yi = y + i * d, *hi = xhat + i * d;
		double mean = 0;
		long j;
		if (layer) {
			__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
			for (j = 0; j + 8 <= d; j += 8) {
				__m256 v = _mm256_loadu_ps(xi + j);
				s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
				s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
			}
			mean = norm_hsum4d(_mm256_add_pd(s0, s1));
			for (; j < d; j++) mean += xi[j];
			mean /= d;
		}
		__m256d m = _mm256_set1_pd(mean);
		__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
		for (j = 0; j + 8 <= d; j += 8) {
			__m256 v = _mm256_loadu_ps(xi + j);
			__m256d c0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
			__m256d c1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m);
			s0 = _mm256_add_pd(s0, _mm256_mul_pd(c0, c0));
			s1 = _mm256_add_pd(s1, _mm256_mul_pd(c1, c1));
		}
		double ss = norm_hsum4d(_mm256_add_pd(s0, s1));
		for (; j < d; j++) {
			double c = (double)xi[j] - mean;
			ss += c * c;
		}
		double r = 1 / _mm_cvtsd_f64(_mm_sqrt_sd(_mm_setzero_pd(), _mm_set_sd(ss / d + eps)));
		rstd[i] = (float)r;
		__m256d rv = _mm256_set1_pd(r);
		for (j = 0; j + 8 <= d; j += 8) {
			__m256 v = _mm256_loadu_ps(xi + j);
			__m128 h0 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m), rv));
			__m128 h1 = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m), rv));
			__m256 h = _mm256_set_m128(h1, h0);
			_mm256_storeu_ps(hi + j, h);
			__m256 o = _mm256_mul_ps(h, _mm256_loadu_ps(w + j));
			if (b) o = _mm256_add_ps(o, _mm256_loadu_ps(b + j));
			_mm256_storeu_ps(yi + j, o);
		}
		for (; j < d; j++) {
			float h = (float)(((double)xi[j] - mean) * r);
			hi[j] = h;
			float o = h * w[j];
			yi[j] = b ? o + b[j] : o;
		}
	}
}
*/
import "C"

import "unsafe"

// NormRows normalises rows rows of x (width d) into y, as runtime/nn's float64 loop
// does: the mean (layer only) and the mean square in double, rstd[i] = 1/√(ms + eps),
// xhat = float32((x − mean)·rstd) and y = xhat·w (+ b; b may be nil). The sums run on
// four double lanes, so they may round differently from the Go loop's left-to-right
// sum in their last bits (far below float32's). y may alias x. It reports whether it did.
func NormRows(y, xhat, rstd, x []float32, rows, d int, w, b []float32, layer bool, eps float64) bool {
	if !have || rows <= 0 || d <= 0 {
		return false
	}
	_, _, _, _, _ = y[rows*d-1], xhat[rows*d-1], rstd[rows-1], x[rows*d-1], w[d-1]
	var bp *C.float
	if b != nil {
		bp = (*C.float)(unsafe.Pointer(&b[:d][0]))
	}
	C.moec_norm_rows((*C.float)(unsafe.Pointer(&y[0])), (*C.float)(unsafe.Pointer(&xhat[0])),
		(*C.float)(unsafe.Pointer(&rstd[0])), (*C.float)(unsafe.Pointer(&x[0])), C.long(rows), C.long(d),
		(*C.float)(unsafe.Pointer(&w[0])), bp, cbool(layer), C.double(eps))
	return true
}
