package exec

// The activation kernels in float32: GELU through an erf approximation and SiLU through a
// polynomial exp, written so the vector kernels (kernels_act_avx2.go) and these loops
// compute the same function. The vector kernels take the length rounded down to eight
// lanes; these loops take the rest, or everything where the build or CPU has no kernels.

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// Abramowitz and Stegun 7.1.26: erf(z) = 1 − t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·e^−z²
// with t = 1/(1 + p·z) for z ≥ 0, absolute error below 1.5e-7 — float32's rounding.
const (
	erfP  = 0.3275911
	erfA1 = 0.254829592
	erfA2 = -0.284496736
	erfA3 = 1.421413741
	erfA4 = -1.453152027
	erfA5 = 1.061405429

	invSqrt2   = 0.70710678118654752440
	invSqrt2Pi = 0.39894228040143267794
)

// exp32 is e^x for float32: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its degree-7 Taylor
// polynomial (truncation below 1e-8 relative), 2^k in the exponent bits. x is clamped to
// [−87.33, 88], where the result is still a normal float32.
func exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693145751953125
		ln2lo = 1.42860682030941723212e-6
	)
	x = min(max(x, -87.33), 88)
	k := float32(math.Floor(float64(x*log2e) + 0.5))
	r := x - k*ln2hi - k*ln2lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return p * math.Float32frombits(uint32(int32(k)+127)<<23)
}

// normalCDF is Φ(x) and the standard normal density φ(x), from one exp.
func normalCDF(x float32) (cdf, pdf float32) {
	e := exp32(-0.5 * x * x) // e^−z² for z = x/√2
	z := x * invSqrt2
	if z < 0 {
		z = -z
	}
	t := 1 / (1 + erfP*z)
	tail := 0.5 * t * (erfA1 + t*(erfA2+t*(erfA3+t*(erfA4+t*erfA5)))) * e // (1 − erf|z|)/2
	cdf = tail
	if x >= 0 {
		cdf = 1 - tail
	}
	return cdf, e * invSqrt2Pi
}

// actFwd32 sets h = act(a) (u nil) or act(a)·u over the whole slice.
func actFwd32(act program.Activation, h, a, u []float32) {
	h = h[:len(a)]
	if u != nil {
		u = u[:len(a)]
	}
	for i, x := range a {
		var f float32
		switch act {
		case program.ReLU:
			f = max(x, 0)
		case program.GELU, program.GeGLU:
			cdf, _ := normalCDF(x)
			f = x * cdf
		default: // SiLU, SwiGLU
			f = x / (1 + exp32(-x))
		}
		if u != nil {
			f *= u[i]
		}
		h[i] = f
	}
}

// actBwd32 writes da (+)= dh·u·act'(a) and, gated, du (+)= dh·act(a); outputs may alias
// their inputs (each element is read before it is written).
func actBwd32(act program.Activation, da, du, dh, a, u []float32, accA, accU bool) {
	dh, da = dh[:len(a)], da[:len(a)]
	for i, x := range a {
		var f, df float32
		switch act {
		case program.ReLU:
			if x > 0 {
				f, df = x, 1
			}
		case program.GELU, program.GeGLU:
			cdf, pdf := normalCDF(x)
			f, df = x*cdf, cdf+x*pdf
		default:
			sg := 1 / (1 + exp32(-x))
			f, df = x*sg, sg*(1+x*(1-sg))
		}
		g := dh[i]
		if u != nil {
			ui := u[i]
			if accU {
				du[i] += g * f
			} else {
				du[i] = g * f
			}
			g *= ui
		}
		if accA {
			da[i] += g * df
		} else {
			da[i] = g * df
		}
	}
}

// actKind is the vector kernels' number for an activation, -1 for none (ReLU stays in Go:
// it is a compare, already cheap).
func actKind(act program.Activation) int {
	switch act {
	case program.GELU, program.GeGLU:
		return vec.ActGELU
	case program.SiLU, program.SwiGLU:
		return vec.ActSiLU
	}
	return -1
}

// actForward is actFwd32 on vector lanes where it can.
func actForward(act program.Activation, h, a, u []float32) {
	n := 0
	if k := actKind(act); k >= 0 {
		n = actFwdVec(k, h, a, u)
	}
	var ut []float32
	if u != nil {
		ut = u[n:]
	}
	actFwd32(act, h[n:], a[n:], ut)
}

// actBackward is actBwd32 on vector lanes where it can.
func actBackward(act program.Activation, da, du, dh, a, u []float32, accA, accU bool) {
	n := 0
	if k := actKind(act); k >= 0 {
		n = actBwdVec(k, da, du, dh, a, u, accA, accU)
	}
	var ut, dut []float32
	if u != nil {
		ut, dut = u[n:], du[n:]
	}
	actBwd32(act, da[n:], dut, dh[n:], a[n:], ut, accA, accU)
}
