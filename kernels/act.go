package kernels

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// Activations, as IR and as Go. GELU is the tanh approximation, with tanh written
// through exp so that every backend needs only exp (no device libm).

const geluC = 0.7978845608028654 // sqrt(2/pi)

func sigmoidE(x Expr) Expr { return div(fc(1), add(fc(1), exp(neg(x)))) }

// tanhE is 2/(1+exp(-2u)) - 1: saturates to ±1 without NaN for large |u|.
func tanhE(u Expr) Expr { return sub(div(fc(2), add(fc(1), exp(mul(fc(-2), u)))), fc(1)) }

func geluU(x Expr) Expr {
	return mul(fc(geluC), add(x, mul3(fc(0.044715), x, mul(x, x))))
}

// actE is the scalar activation a(x) (for gated kinds: of the gate projection).
func actE(a program.Activation, x Expr) Expr {
	switch a {
	case program.ReLU:
		return fmax(x, fc(0))
	case program.SiLU, program.SwiGLU:
		return mul(x, sigmoidE(x))
	default: // GELU, GeGLU
		return mul3(fc(0.5), x, add(fc(1), tanhE(geluU(x))))
	}
}

// dactE is a'(x).
func dactE(a program.Activation, x Expr) Expr {
	switch a {
	case program.ReLU:
		return sel(gt(x, fc(0)), fc(1), fc(0))
	case program.SiLU, program.SwiGLU:
		s := sigmoidE(x)
		return mul(s, add(fc(1), mul(x, sub(fc(1), s))))
	default:
		t := tanhE(geluU(x))
		du := mul(fc(geluC), add(fc(1), mul3(fc(3*0.044715), x, x)))
		return add(mul(fc(0.5), add(fc(1), t)), mul3(mul(fc(0.5), x), sub(fc(1), mul(t, t)), du))
	}
}

func sigmoid32(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

func act32(a program.Activation, x float32) float32 {
	switch a {
	case program.ReLU:
		return max(x, 0)
	case program.SiLU, program.SwiGLU:
		return x * sigmoid32(x)
	default:
		u := geluC * (float64(x) + 0.044715*float64(x)*float64(x)*float64(x))
		return float32(0.5 * float64(x) * (1 + math.Tanh(u)))
	}
}

func dact32(a program.Activation, x float32) float32 {
	switch a {
	case program.ReLU:
		if x > 0 {
			return 1
		}
		return 0
	case program.SiLU, program.SwiGLU:
		s := sigmoid32(x)
		return s * (1 + x*(1-s))
	default:
		xf := float64(x)
		t := math.Tanh(geluC * (xf + 0.044715*xf*xf*xf))
		du := geluC * (1 + 3*0.044715*xf*xf)
		return float32(0.5*(1+t) + 0.5*xf*(1-t*t)*du)
	}
}
