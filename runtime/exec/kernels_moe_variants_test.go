package exec

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/features/featuretest"
	"github.com/moec-dev/moec/compiler/step"
)

// TestClampedSwiGLUGradient holds ActClampedBwd to central differences of ActClamped on
// values either side of both clamps: the gradient of L = Σ w·h by each gate and up
// pre-activation, zero exactly where a clamp cuts the input.
func TestClampedSwiGLUGradient(t *testing.T) {
	const limit, alpha, eps = 0.7, 1.702, 1e-3
	r := rand.New(rand.NewPCG(3, 4))
	n := 256
	a, u, w := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range a {
		a[i], u[i], w[i] = float32(r.Float64()*4-2), float32(r.Float64()*4-2), float32(r.NormFloat64())
	}
	da, du := make([]float32, n), make([]float32, n)
	ActClampedBwd(limit, alpha, w, a, u, da, du, false, false, 1, nil, nil, nil, nil)
	h := make([]float32, 1)
	at := func(ai, ui float32) float64 {
		ActClamped(limit, alpha, []float32{ai}, []float32{ui}, h, 1, nil, nil)
		return float64(h[0])
	}
	var cutGate, cutUp int
	for i := range a {
		if math.Abs(float64(a[i])-limit) < 2*eps || math.Abs(math.Abs(float64(u[i]))-limit) < 2*eps {
			continue // a kink: no derivative
		}
		numA := float64(w[i]) * (at(a[i]+eps, u[i]) - at(a[i]-eps, u[i])) / (2 * eps)
		numU := float64(w[i]) * (at(a[i], u[i]+eps) - at(a[i], u[i]-eps)) / (2 * eps)
		if math.Abs(numA-float64(da[i])) > 1e-3*math.Max(1, math.Abs(numA)) {
			t.Errorf("gate %.4f up %.4f: da %.6g, central difference %.6g", a[i], u[i], da[i], numA)
		}
		if math.Abs(numU-float64(du[i])) > 1e-3*math.Max(1, math.Abs(numU)) {
			t.Errorf("gate %.4f up %.4f: du %.6g, central difference %.6g", a[i], u[i], du[i], numU)
		}
		if a[i] > limit {
			cutGate++
			if da[i] != 0 {
				t.Errorf("gate %.4f above the limit passes gradient %g", a[i], da[i])
			}
		}
		if math.Abs(float64(u[i])) > limit {
			cutUp++
			if du[i] != 0 {
				t.Errorf("up %.4f beyond the limit passes gradient %g", u[i], du[i])
			}
		}
	}
	if cutGate == 0 || cutUp == 0 {
		t.Fatalf("the values cross the clamps %d (gate) and %d (up) times: the check would not see them", cutGate, cutUp)
	}
}

// TestGateInputGradient holds PermuteGatedBwd to central differences: the slots of a
// gated permute (each row g·x) feed L = Σ c·s²/2, a nonlinear stand-in for the experts,
// and the tokens' and gates' gradients must be L's derivatives, a dropped assignment's
// gate getting none.
func TestGateInputGradient(t *testing.T) {
	m := featuretest.Base() // four experts, top 2
	k, err := NewKernels(m, step.Batch{MicroBatch: 1, SeqLen: 3, Micro: 1}, step.Layout{DP: 1, EP: 1, TP: 1, PP: 1}, step.Coord{})
	if err != nil {
		t.Fatal(err)
	}
	const E, C, D, eps = 4, 3, 5, 1e-3
	idx := []int32{1, 2, 1, 3, 2, 0}
	slot := []int32{0, 0, 1, 0, 1, -1} // token 2's second choice dropped
	r := rand.New(rand.NewPCG(5, 6))
	x, gates, c := make([]float32, 3*D), make([]float32, len(idx)), make([]float32, E*C*D)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range gates {
		gates[i] = float32(0.2 + r.Float64())
	}
	for i := range c {
		c[i] = float32(r.NormFloat64())
	}
	send := make([]float32, E*C*D)
	loss := func() float64 {
		k.PermuteGated(x, idx, slot, gates, send, C, D, &RowFill{})
		var l float64
		for i, s := range send {
			l += float64(c[i]) * float64(s) * float64(s) / 2
		}
		return l
	}
	loss()
	ds := make([]float32, len(send))
	for i, s := range send {
		ds[i] = c[i] * s
	}
	dx, dg := make([]float32, len(x)), make([]float32, len(gates))
	k.PermuteGatedBwd(ds, idx, slot, gates, x, dx, dg, C, D, false, false)
	central := func(v *float32) float64 {
		old := *v
		*v = old + eps
		up := loss()
		*v = old - eps
		down := loss()
		*v = old
		return (up - down) / (2 * eps)
	}
	for i := range x {
		if num := central(&x[i]); math.Abs(num-float64(dx[i])) > 1e-3*math.Max(1, math.Abs(num)) {
			t.Errorf("token value %d: dx %.6g, central difference %.6g", i, dx[i], num)
		}
	}
	for a := range gates {
		if num := central(&gates[a]); math.Abs(num-float64(dg[a])) > 1e-3*math.Max(1, math.Abs(num)) {
			t.Errorf("gate %d: dg %.6g, central difference %.6g", a, dg[a], num)
		}
	}
	if dg[5] != 0 {
		t.Errorf("the dropped assignment's gate has gradient %g", dg[5])
	}
}
