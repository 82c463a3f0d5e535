package fused

import "math"

// Coeffs are one step's constants, rounded to float32 once per step.
type Coeffs struct {
	Scale  float32 // gradient multiplier: 1/micro-batches times the clipping factor
	B1, C1 float32 // β1 and 1−β1
	B2, C2 float32 // β2 and 1−β2
	InvBC2 float32 // 1/(1−β2^t), the second moment's bias correction
	Eps    float32
	Decay  float32 // lr·weight_decay (0 for tensors without decay)
	LRBC1  float32 // lr/(1−β1^t), the learning rate with the first moment's correction
}

// NewCoeffs computes the constants of update number step (1-based) in float64 and rounds
// each to float32.
func NewCoeffs(scale, lr, beta1, beta2, eps, decay float64, step int64) Coeffs {
	bc1 := 1 - math.Pow(beta1, float64(step))
	bc2 := 1 - math.Pow(beta2, float64(step))
	return Coeffs{
		Scale: float32(scale),
		B1:    float32(beta1), C1: float32(1 - beta1),
		B2: float32(beta2), C2: float32(1 - beta2),
		InvBC2: float32(1 / bc2),
		Eps:    float32(eps),
		Decay:  float32(lr * decay),
		LRBC1:  float32(lr / bc1),
	}
}

// Update applies one AdamW update to w with gradients g and moments m, v (all the same
// length):
//
//	g' = g·Scale
//	m  = B1·m + C1·g'
//	v  = B2·v + C2·(g'·g')
//	w  = w − Decay·w
//	w  = w − (LRBC1·m) / (√(v·InvBC2) + Eps)
func Update(w, g, m, v []float32, c Coeffs) {
	n := len(w)
	if len(g) != n || len(m) != n || len(v) != n {
		panic("fused: slices of different lengths") // a bug in package optim, never a user's
	}
	if n == 0 {
		return
	}
	if !updateVec(w, g, m, v, c) {
		UpdateGo(w, g, m, v, c)
	}
}

// UpdateGo is Update as a Go loop: the fallback, and the reference the vector kernel is
// tested against bit for bit. Every product and sum is converted to float32 explicitly so
// the compiler cannot fuse a multiply and an add into one rounding (the Go spec allows
// that fusion otherwise, and GOAMD64=v3 builds would do it).
func UpdateGo(w, g, m, v []float32, c Coeffs) {
	g, m, v = g[:len(w)], m[:len(w)], v[:len(w)]
	for j, wj := range w {
		gj := float32(g[j] * c.Scale)
		mj := float32(float32(c.B1*m[j]) + float32(c.C1*gj))
		vj := float32(float32(c.B2*v[j]) + float32(c.C2*float32(gj*gj)))
		m[j], v[j] = mj, vj
		d := float32(float32(math.Sqrt(float64(float32(vj*c.InvBC2)))) + c.Eps)
		wj = float32(wj - float32(c.Decay*wj))
		w[j] = float32(wj - float32(float32(c.LRBC1*mj)/d))
	}
}
