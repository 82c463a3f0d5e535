package nn

import (
	"math"
	"testing"
)

func TestExp32(t *testing.T) {
	var worst float64
	for x := float32(-87); x < 88.5; x += 0.00731 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("exp32 worst relative error %g", worst)
	}
	if exp32(-100) != 0 || !math.IsInf(float64(exp32(100)), 1) || exp32(0) != 1 {
		t.Errorf("exp32 limits: %g %g %g", exp32(-100), exp32(100), exp32(0))
	}
	t.Logf("worst relative error %.3g", worst)
}

func TestSiLU32MatchesFloat64(t *testing.T) {
	var a, u, dh []float32
	for x := float32(-100); x < 100; x += 0.0137 {
		a = append(a, x)
		u = append(u, 0.5-x/100)
		dh = append(dh, 1+x/200)
	}
	h, da, du := make([]float32, len(a)), make([]float32, len(a)), make([]float32, len(a))
	siluForward32(h, a, u)
	siluBackward32(da, du, dh, a, u)
	var worst float64
	for i, x32 := range a {
		x := float64(x32)
		sg := 1 / (1 + math.Exp(-x))
		want := []float64{x * sg * float64(u[i]), float64(dh[i]) * x * sg, float64(dh[i]) * float64(u[i]) * sg * (1 + x*(1-sg))}
		for j, got := range []float32{h[i], du[i], da[i]} {
			worst = math.Max(worst, math.Abs(float64(got)-want[j])/(1e-6+math.Abs(want[j])))
		}
	}
	if worst > 1e-5 {
		t.Errorf("float32 SiLU worst relative error %g", worst)
	}
}
