package nn

import "math"

// The SiLU family dominates the element-wise work of a SwiGLU MoE step. These float32
// loops compute σ(x) = 1/(1+e^−x) with exp32's algorithm written out in the loop body:
// a call per element (exp32 is over the inlining budget) costs as much as the arithmetic.

const (
	log2e32 = 1.44269504088896341
	ln2hi32 = 0.693145751953125
	ln2lo32 = 1.42860682030941723212e-6
)

// siluForward32 sets h = silu(a)·u (u nil: h = silu(a)).
func siluForward32(h, a, u []float32) {
	h = h[:len(a)]
	if u != nil {
		u = u[:len(a)]
	}
	for i, x := range a {
		t := min(max(-x, -87.33), 88.0)   // σ is 0 or 1 to float32 precision beyond
		k := int32(t*log2e32+128.5) - 128 // round to nearest; the offset keeps it positive
		r := t - float32(k)*ln2hi32 - float32(k)*ln2lo32
		p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
		v := x / (1 + p*math.Float32frombits(uint32(k+127)<<23))
		if u != nil {
			v *= u[i]
		}
		h[i] = v
	}
}

// siluBackward32 turns dh into da (and du), which may alias a (and u).
func siluBackward32(da, du, dh, a, u []float32) {
	dh, da = dh[:len(a)], da[:len(a)]
	for i, x := range a {
		t := min(max(-x, -87.33), 88.0)
		k := int32(t*log2e32+128.5) - 128
		r := t - float32(k)*ln2hi32 - float32(k)*ln2lo32
		p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
		sg := 1 / (1 + p*math.Float32frombits(uint32(k+127)<<23))
		g := dh[i]
		if u != nil {
			ui := u[i]
			du[i] = g * x * sg
			g *= ui
		}
		da[i] = g * sg * (1 + x*(1-sg))
	}
}
