package fused

import (
	"math"
	"math/rand/v2"
	"testing"
)

// update64 is package optim's original update, in float64 per element: the formulation
// the float32 kernel must follow to float32 rounding.
func update64(w, g, m, v []float32, scale, lr, b1, b2, eps, decay float64, step int64) {
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	for j := range w {
		gj := float64(g[j]) * scale
		mj := b1*float64(m[j]) + (1-b1)*gj
		vj := b2*float64(v[j]) + (1-b2)*gj*gj
		m[j], v[j] = float32(mj), float32(vj)
		x := float64(w[j])
		x -= lr * decay * x
		x -= lr * (mj / bc1) / (math.Sqrt(vj/bc2) + eps)
		w[j] = float32(x)
	}
}

func randState(r *rand.Rand, n int) (w, m, v []float32) {
	w, m, v = make([]float32, n), make([]float32, n), make([]float32, n)
	for j := range w {
		w[j] = float32(r.NormFloat64())
	}
	return w, m, v
}

// TestUpdate runs several steps three ways on the same gradients: Update (the vector
// kernel where there is one), UpdateGo, and the float64 formulation started each step from
// the float32 state. Update and UpdateGo must agree bit for bit; one float32 step must stay
// within a few roundings of the float64 step, measured against the size of the terms added.
func TestUpdate(t *testing.T) {
	t.Logf("vector kernel: %v", Available())
	r := rand.New(rand.NewPCG(7, 8))
	const n = 1003 // a tail after the eight-lane blocks
	wv, mv, vv := randState(r, n)
	wg, mg, vg := append([]float32(nil), wv...), make([]float32, n), make([]float32, n)
	g := make([]float32, n)
	const lr, b1, b2, eps, decay = 1e-2, 0.9, 0.95, 1e-8, 0.1
	const rel = 4e-7 // about three float32 roundings (2⁻²⁴ ≈ 6e-8 each) with room
	for step := int64(1); step <= 6; step++ {
		for j := range g {
			g[j] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(7)-5))) // 1e-5 to 10
		}
		g[0], g[1] = 0, 3e-20 // a zero gradient, and one whose square is below float32's normals
		scale := 0.5 / float64(step)
		w6, m6, v6 := append([]float32(nil), wg...), append([]float32(nil), mg...), append([]float32(nil), vg...)
		m0 := append([]float32(nil), mg...)
		c := NewCoeffs(scale, lr, b1, b2, eps, decay, step)
		Update(wv, g, mv, vv, c)
		UpdateGo(wg, g, mg, vg, c)
		update64(w6, g, m6, v6, scale, lr, b1, b2, eps, decay, step)
		bc1, bc2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
		for j := range wv {
			if math.Float32bits(wv[j]) != math.Float32bits(wg[j]) || mv[j] != mg[j] || vv[j] != vg[j] {
				t.Fatalf("step %d [%d]: kernel w %v m %v v %v, Go loop w %v m %v v %v", step, j, wv[j], mv[j], vv[j], wg[j], mg[j], vg[j])
			}
			gs := float64(g[j]) * scale
			mTerms := b1*math.Abs(float64(m0[j])) + (1-b1)*math.Abs(gs)
			if d := math.Abs(float64(mg[j] - m6[j])); d > rel*mTerms {
				t.Fatalf("step %d [%d]: float32 m %v, float64 %v", step, j, mg[j], m6[j])
			}
			if d := math.Abs(float64(vg[j] - v6[j])); d > rel*float64(v6[j])+1e-44 {
				t.Fatalf("step %d [%d]: float32 v %v, float64 %v", step, j, vg[j], v6[j])
			}
			// The weight's own rounding, plus the update's rounding, plus what m's
			// rounding does to the update.
			denom := math.Sqrt(float64(v6[j])/bc2) + eps
			tol := rel * (math.Abs(float64(w6[j])) + lr*mTerms/bc1/denom)
			if d := math.Abs(float64(wg[j] - w6[j])); d > tol {
				t.Fatalf("step %d [%d]: float32 w %v, float64 %v (diff %g > %g)", step, j, wg[j], w6[j], d, tol)
			}
		}
	}
}

func TestUpdateLengths(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("slices of different lengths accepted")
		}
	}()
	Update(make([]float32, 3), make([]float32, 2), make([]float32, 3), make([]float32, 3), Coeffs{})
}

// BenchmarkUpdate updates 1M parameters, one core: the kernel's own speed, which the
// memory traffic (7 floats read or written per parameter) bounds.
func BenchmarkUpdate(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	w, m, v := randState(r, 1<<20)
	g := make([]float32, len(w))
	for j := range g {
		g[j] = float32(r.NormFloat64() * 1e-3)
	}
	c := NewCoeffs(1, 1e-3, 0.9, 0.999, 1e-8, 0.1, 10)
	b.SetBytes(int64(len(w)) * 4 * 7)
	for i := 0; i < b.N; i++ {
		Update(w, g, m, v, c)
	}
}

func BenchmarkUpdateGo(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	w, m, v := randState(r, 1<<20)
	g := make([]float32, len(w))
	for j := range g {
		g[j] = float32(r.NormFloat64() * 1e-3)
	}
	c := NewCoeffs(1, 1e-3, 0.9, 0.999, 1e-8, 0.1, 10)
	b.SetBytes(int64(len(w)) * 4 * 7)
	for i := 0; i < b.N; i++ {
		UpdateGo(w, g, m, v, c)
	}
}
