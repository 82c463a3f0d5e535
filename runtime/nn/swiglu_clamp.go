package nn

import "math"

// swigluClamp is gpt-oss's clamped SwiGLU (GptOssExperts, moe.swiglu_limit): with the
// gate g clamped above at limit and the up projection u to [−limit, limit],
//
//	h = (u' + 1) · g' · σ(alpha · g')
//
// A clamped input passes no gradient. limit 0 is the plain SwiGLU.
type swigluClamp struct {
	limit, alpha float64
}

func (c swigluClamp) on() bool { return c.limit > 0 }

// clampForward writes h from the gate pre-activations a and the up projections u.
func clampForward[F Float](c swigluClamp, h, a, u []F) {
	for i := range h {
		g := min(float64(a[i]), c.limit)
		up := max(-c.limit, min(float64(u[i]), c.limit))
		h[i] = F((up + 1) * g / (1 + math.Exp(-c.alpha*g)))
	}
}

// clampBackward turns dh into da and du, overwriting them; da may alias a and du u.
func clampBackward[F Float](c swigluClamp, da, du, dh, a, u []F) {
	for i := range a {
		x, ux, g := float64(a[i]), float64(u[i]), float64(dh[i])
		gc := min(x, c.limit)
		up := max(-c.limit, min(ux, c.limit))
		sg := 1 / (1 + math.Exp(-c.alpha*gc))
		glu := gc * sg
		dUp := 0.0
		if ux > -c.limit && ux < c.limit {
			dUp = g * glu
		}
		dGate := 0.0
		if x < c.limit {
			dGate = g * (up + 1) * (sg + c.alpha*gc*sg*(1-sg))
		}
		du[i], da[i] = F(dUp), F(dGate)
	}
}
