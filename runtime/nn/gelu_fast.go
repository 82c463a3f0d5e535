package nn

import (
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// Decoding computes GELU in float32 as runtime/exec's step programs do: Φ(x) through
// Abramowitz and Stegun 7.1.26 (erf within 1.5e-7, float32's rounding) instead of
// math.Erf in float64, which a generated token of the tiny HunYuan spent a fifth of its
// time in. Training and evaluation keep math.Erf: only workspaces marked inference (the
// Decoder's) take this path, whose forward is never differentiated.

// Abramowitz and Stegun 7.1.26: erf(z) = 1 − t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·e^−z²
// with t = 1/(1 + p·z) for z ≥ 0.
const (
	erfP  = 0.3275911
	erfA1 = 0.254829592
	erfA2 = -0.284496736
	erfA3 = 1.421413741
	erfA4 = -1.453152027
	erfA5 = 1.061405429
)

// activateInference is activate for a forward that is never differentiated: GELU and GeGLU
// in float32 go through geluApprox (vector lanes where the CPU has them), the rest through
// activate.
func activateInference[F Float](act program.Activation, h, a, u []F) {
	a32, ok := any(a).([]float32)
	if !ok || (act != program.GELU && act != program.GeGLU) {
		activate(act, h, a, u)
		return
	}
	h32 := any(h).([]float32)[:len(a32)]
	u32, _ := any(u).([]float32)
	done := vec.GELUForward(h32, a32, u32)
	var ut []float32
	if u32 != nil {
		ut = u32[done:]
	}
	geluApprox(h32[done:], a32[done:], ut)
}

// geluApprox sets h = x·Φ(x) (times u when u is not nil) for x in a.
func geluApprox(h, a, u []float32) {
	for i, x := range a {
		e := exp32(-0.5 * x * x) // e^−z² for z = x/√2
		z := x * invSqrt2
		if z < 0 {
			z = -z
		}
		t := 1 / (1 + erfP*z)
		tail := 0.5 * t * (erfA1 + t*(erfA2+t*(erfA3+t*(erfA4+t*erfA5)))) * e // (1 − erf|z|)/2
		cdf := tail
		if x >= 0 {
			cdf = 1 - tail
		}
		f := x * cdf
		if u != nil {
			f *= u[i]
		}
		h[i] = f
	}
}

// markInference marks a decoder's workspaces (either may be nil) as forward only.
func markInference[F Float](mw *moeWS[F], fw *ffnWS[F]) {
	if mw != nil {
		mw.ex.inference = true
		for _, s := range mw.shared {
			s.inference = true
		}
	}
	if fw != nil {
		fw.inference = true
	}
}
