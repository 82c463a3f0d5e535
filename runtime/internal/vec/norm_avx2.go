//go:build cgo && amd64 && !noopenblas

package vec

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// The norm kernels of runtime/exec's kernels.go (Norm, NormBwd) and sumSquares, and runtime/nn's
// normRows, on vector lanes, with the Go loops' arithmetic: sums in double, every product and sum the Go code rounds to
// float rounded here too, and no fused multiply-adds (the Go code has none), so an
// element differs from the Go loop's only through the order of a row's double sums.

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// Σ (x[j] − mean)² of one row of d floats, in double.
__attribute__((target("avx2"))) static double moec_row_ss(const float *x, long d, double mean) {
	__m256d m = _mm256_set1_pd(mean), a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
	long j = 0;
	for (; j + 8 <= d; j += 8) {
		__m256 v = _mm256_loadu_ps(x + j);
		__m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
		__m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m);
		a0 = _mm256_add_pd(a0, _mm256_mul_pd(lo, lo));
		a1 = _mm256_add_pd(a1, _mm256_mul_pd(hi, hi));
	}
	double t[4];
	_mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
	double s = (t[0] + t[1]) + (t[2] + t[3]);
	for (; j < d; j++) {
		double c = (double)x[j] - mean;
		s += c * c;
	}
	return s;
}

// Σ x[j] of one row, in double.
__attribute__((target("avx2"))) static double moec_row_sum(const float *x, long d) {
	__m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
	long j = 0;
	for (; j + 8 <= d; j += 8) {
		__m256 v = _mm256_loadu_ps(x + j);
		a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
		a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
	}
	double t[4];
	_mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
	double s = (t[0] + t[1]) + (t[2] + t[3]);
	for (; j < d; j++) {
		s += (double)x[j];
	}
	return s;
}

// float((x − mean)·r) for eight floats.
__attribute__((target("avx2"))) static inline __m256 moec_xhat8(__m256 v, __m256d m, __m256d r) {
	__m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m), r));
	__m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), m), r));
	return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

// Rows [r0, r1) of Norm: xhat = float((x − mean)·r) (xhat may be NULL: not stored),
// h = xhat·w (+ b), rstd = float(r). h may alias x.
__attribute__((target("avx2"))) static void moec_norm_fwd(const float *x, const float *w, const float *b, float *h, float *xhat,
		float *rstd, long r0, long r1, long d, double eps, int layer) {
	for (long i = r0; i < r1; i++) {
		const float *xi = x + i * d;
		float *hi = h + i * d, *xhi = xhat ? xhat + i * d : 0;
		double mean = layer ? moec_row_sum(xi, d) / (double)d : 0;
		double r = 1 / _mm_cvtsd_f64(_mm_sqrt_pd(_mm_set1_pd(moec_row_ss(xi, d, mean) / (double)d + eps)));
		rstd[i] = (float)r;
		__m256d m = _mm256_set1_pd(mean), rv = _mm256_set1_pd(r);
		long j = 0;
		for (; j + 8 <= d; j += 8) {
			__m256 xh = moec_xhat8(_mm256_loadu_ps(xi + j), m, rv);
			if (xhi) {
				_mm256_storeu_ps(xhi + j, xh);
			}
			__m256 y = _mm256_mul_ps(xh, _mm256_loadu_ps(w + j));
			if (b) {
				y = _mm256_add_ps(y, _mm256_loadu_ps(b + j));
			}
			_mm256_storeu_ps(hi + j, y);
		}
		for (; j < d; j++) {
			float xh = (float)(((double)xi[j] - mean) * r);
			if (xhi) {
				xhi[j] = xh;
			}
			float y = xh * w[j];
			if (b) {
				y += b[j];
			}
			hi[j] = y;
		}
	}
}

// Rows [r0, r1) of NormBwd's input gradient: dx (+)= float(r·(gh − meanG − xh·meanGX)),
// gh = double(dh·w), xh = double(float((x − mean)·r)).
__attribute__((target("avx2"))) static void moec_exec_norm_bwd_dx(const float *dh, const float *x, const float *w, const float *rstd, float *dx,
		long r0, long r1, long d, int layer, int acc) {
	for (long i = r0; i < r1; i++) {
		const float *xi = x + i * d, *gi = dh + i * d;
		float *dxi = dx + i * d;
		double mean = layer ? moec_row_sum(xi, d) / (double)d : 0, r = (double)rstd[i];
		__m256d m = _mm256_set1_pd(mean), rv = _mm256_set1_pd(r);
		__m256d sg0 = _mm256_setzero_pd(), sg1 = _mm256_setzero_pd(), sx0 = _mm256_setzero_pd(), sx1 = _mm256_setzero_pd();
		long j = 0;
		for (; j + 8 <= d; j += 8) {
			__m256 g = _mm256_mul_ps(_mm256_loadu_ps(gi + j), _mm256_loadu_ps(w + j));
			__m256 xh = moec_xhat8(_mm256_loadu_ps(xi + j), m, rv);
			__m256d glo = _mm256_cvtps_pd(_mm256_castps256_ps128(g)), ghi = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
			sg0 = _mm256_add_pd(sg0, glo);
			sg1 = _mm256_add_pd(sg1, ghi);
			sx0 = _mm256_add_pd(sx0, _mm256_mul_pd(glo, _mm256_cvtps_pd(_mm256_castps256_ps128(xh))));
			sx1 = _mm256_add_pd(sx1, _mm256_mul_pd(ghi, _mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1))));
		}
		double t[4], u[4];
		_mm256_storeu_pd(t, _mm256_add_pd(sg0, sg1));
		_mm256_storeu_pd(u, _mm256_add_pd(sx0, sx1));
		double sumG = (t[0] + t[1]) + (t[2] + t[3]), sumGX = (u[0] + u[1]) + (u[2] + u[3]);
		for (long k = j; k < d; k++) {
			double gh = (double)(gi[k] * w[k]);
			sumG += gh;
			sumGX += gh * (double)(float)(((double)xi[k] - mean) * r);
		}
		double meanG = layer ? sumG / (double)d : 0, meanGX = sumGX / (double)d;
		__m256d mg = _mm256_set1_pd(meanG), mgx = _mm256_set1_pd(meanGX);
		for (j = 0; j + 8 <= d; j += 8) {
			__m256 g = _mm256_mul_ps(_mm256_loadu_ps(gi + j), _mm256_loadu_ps(w + j));
			__m256 xh = moec_xhat8(_mm256_loadu_ps(xi + j), m, rv);
			__m256d glo = _mm256_cvtps_pd(_mm256_castps256_ps128(g)), ghi = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
			__m256d xlo = _mm256_cvtps_pd(_mm256_castps256_ps128(xh)), xhi = _mm256_cvtps_pd(_mm256_extractf128_ps(xh, 1));
			__m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(rv, _mm256_sub_pd(_mm256_sub_pd(glo, mg), _mm256_mul_pd(xlo, mgx))));
			__m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(rv, _mm256_sub_pd(_mm256_sub_pd(ghi, mg), _mm256_mul_pd(xhi, mgx))));
			__m256 v = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
			if (acc) {
				v = _mm256_add_ps(_mm256_loadu_ps(dxi + j), v);
			}
			_mm256_storeu_ps(dxi + j, v);
		}
		for (; j < d; j++) {
			double gh = (double)(gi[j] * w[j]);
			double xh = (double)(float)(((double)xi[j] - mean) * r);
			float v = (float)(r * ((gh - meanG) - xh * meanGX));
			dxi[j] = acc ? dxi[j] + v : v;
		}
	}
}

// NormBwd's scale (and bias) gradients over columns [j0, j1), every row in order:
// dw[j] += dh·float((x − mean)·r), db[j] += dh. means is NULL for RMSNorm.
__attribute__((target("avx2"))) static void moec_exec_norm_bwd_dw(const float *dh, const float *x, const float *rstd, const double *means,
		float *dw, float *db, long n, long d, long j0, long j1) {
	for (long i = 0; i < n; i++) {
		const float *xi = x + i * d, *gi = dh + i * d;
		double mean = means ? means[i] : 0, r = (double)rstd[i];
		__m256d m = _mm256_set1_pd(mean), rv = _mm256_set1_pd(r);
		long j = j0;
		for (; j + 8 <= j1; j += 8) {
			__m256 g = _mm256_loadu_ps(gi + j);
			__m256 p = _mm256_mul_ps(g, moec_xhat8(_mm256_loadu_ps(xi + j), m, rv));
			_mm256_storeu_ps(dw + j, _mm256_add_ps(_mm256_loadu_ps(dw + j), p));
			if (db) {
				_mm256_storeu_ps(db + j, _mm256_add_ps(_mm256_loadu_ps(db + j), g));
			}
		}
		for (; j < j1; j++) {
			float p = gi[j] * (float)(((double)xi[j] - mean) * r);
			dw[j] += p;
			if (db) {
				db[j] += gi[j];
			}
		}
	}
}

// Σ x[j]² in double.
__attribute__((target("avx2"))) static double moec_exec_sum_squares(const float *x, long n) {
	return moec_row_ss(x, n, 0);
}

#pragma GCC pop_options
*/
import "C"

import "unsafe"

func f64p(x []float64) *C.double {
	if len(x) == 0 {
		return nil
	}
	return (*C.double)(unsafe.Pointer(&x[0]))
}

// NormRows normalises rows rows of x (width d) into y, as runtime/nn's and runtime/exec's
// float64 loops do: the mean (layer only) and the mean square in double,
// rstd[i] = 1/√(ms + eps), xhat = float32((x − mean)·rstd) (xhat may be nil: not kept)
// and y = xhat·w (+ b; b may be nil). The sums run on four double lanes, so they may
// round differently from the Go loops' left-to-right sums in their last bits (far below
// float32's). y may alias x. It reports whether it did.
func NormRows(y, xhat, rstd, x []float32, rows, d int, w, b []float32, layer bool, eps float64) bool {
	if !have || rows <= 0 || d <= 0 {
		return false
	}
	_, _, _, _ = y[rows*d-1], rstd[rows-1], x[rows*d-1], w[d-1]
	if xhat != nil {
		_ = xhat[rows*d-1]
	}
	if b != nil {
		_ = b[d-1]
	}
	C.moec_norm_fwd(f32p(x), f32p(w), f32p(b), f32p(y), f32p(xhat), f32p(rstd), 0, C.long(rows), C.long(d), C.double(eps), cbool(layer))
	return true
}

// NormBackwardInput is the norm's input gradient of rows [r0, r1) (width len(w)):
// dx (+)= float(r·(gh − meanG − xh·meanGX)), gh = double(dh·w), xh = double(float((x − mean)·r)),
// meanG only for a layer norm. It reports whether it did.
func NormBackwardInput(dh, x, w, rstd, dx []float32, r0, r1 int, layer, acc bool) bool {
	d := len(w)
	if !have || d == 0 {
		return false
	}
	if r0 >= r1 {
		return true
	}
	_, _, _, _ = dh[r1*d-1], x[r1*d-1], dx[r1*d-1], rstd[r1-1]
	C.moec_exec_norm_bwd_dx(f32p(dh), f32p(x), f32p(w), f32p(rstd), f32p(dx), C.long(r0), C.long(r1), C.long(d), cbool(layer), cbool(acc))
	return true
}

// NormBackwardParams adds the norm's scale (and bias, db not nil) gradients over the
// columns [j0, j1) of n rows of width len(dw), every row in order: dw[j] += dh·xhat,
// db[j] += dh. means is nil for RMSNorm. It reports whether it did.
func NormBackwardParams(dh, x, rstd []float32, means []float64, dw, db []float32, n, j0, j1 int) bool {
	d := len(dw)
	if !have || d == 0 {
		return false
	}
	if n == 0 || j0 >= j1 {
		return true
	}
	_, _, _, _ = dh[n*d-1], x[n*d-1], rstd[n-1], dw[j1-1]
	if means != nil {
		_ = means[n-1]
	}
	if db != nil {
		_ = db[d-1]
	}
	C.moec_exec_norm_bwd_dw(f32p(dh), f32p(x), f32p(rstd), f64p(means), f32p(dw), f32p(db), C.long(n), C.long(d), C.long(j0), C.long(j1))
	return true
}

// SumSquares is Σ v² in double on vector lanes; ok is false where there are no kernels.
func SumSquares(x []float32) (float64, bool) {
	if !have {
		return 0, false
	}
	return float64(C.moec_exec_sum_squares(f32p(x), C.long(len(x)))), true
}
