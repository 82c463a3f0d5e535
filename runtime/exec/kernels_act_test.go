package exec

import (
	"math"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// activationRef is the activation and its derivative in float64 from their definitions.
func activationRef(act program.Activation, x float64) (f, df float64) {
	switch act {
	case program.ReLU:
		if x > 0 {
			return x, 1
		}
		return 0, 0
	case program.GELU, program.GeGLU:
		cdf := 0.5 * (1 + math.Erf(x/math.Sqrt2))
		return x * cdf, cdf + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
	default:
		sg := 1 / (1 + math.Exp(-x))
		return x * sg, sg * (1 + x*(1-sg))
	}
}

// TestActivationKernels holds the float32 activations (vector lanes and the Go loop that
// takes the tail) to their float64 definitions, forward and backward, gated or not,
// overwriting or accumulating, on a length that is not a multiple of the lanes.
func TestActivationKernels(t *testing.T) {
	const n = 1003
	a, u, dh := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range a {
		a[i] = float32(-12 + 24*float64(i)/n)
		u[i] = float32(math.Sin(float64(i)))
		dh[i] = float32(math.Cos(0.7 * float64(i)))
	}
	near := func(got float32, want float64) bool {
		return math.Abs(float64(got)-want) <= 1e-6*(1+math.Abs(want))
	}
	for _, act := range []program.Activation{program.ReLU, program.GELU, program.GeGLU, program.SiLU, program.SwiGLU} {
		var ug []float32
		if act.Gated() {
			ug = u
		}
		h := make([]float32, n)
		actForward(act, h, a, ug)
		for _, acc := range []bool{false, true} {
			da, du := make([]float32, n), make([]float32, n)
			if acc {
				for i := range da {
					da[i], du[i] = 0.5, -0.25
				}
			}
			var dug []float32
			if ug != nil {
				dug = du
			}
			actBackward(act, da, dug, dh, a, ug, acc, acc)
			for i, x := range a {
				f, df := activationRef(act, float64(x))
				g := float64(dh[i])
				wantH, wantDA, wantDU := f, g*df, g*f
				if ug != nil {
					wantH *= float64(u[i])
					wantDA *= float64(u[i])
				}
				if acc {
					wantDA += 0.5
					wantDU -= 0.25
				}
				if !near(h[i], wantH) {
					t.Fatalf("%s(%v)·u = %v, want %v", act, x, h[i], wantH)
				}
				if !near(da[i], wantDA) {
					t.Fatalf("%s backward at %v (accumulate %v): da = %v, want %v", act, x, acc, da[i], wantDA)
				}
				if ug != nil && !near(du[i], wantDU) {
					t.Fatalf("%s backward at %v (accumulate %v): du = %v, want %v", act, x, acc, du[i], wantDU)
				}
			}
		}
	}
}

// TestExpKernels holds the softmax and the exponential sums (vector lanes where the build
// has them) to float64.
func TestExpKernels(t *testing.T) {
	const T = 45
	s := make([]float32, 3*T*T)
	for i := range s {
		s[i] = float32(8 * math.Sin(1.3*float64(i)))
	}
	p := make([]float32, len(s))
	for i := range p {
		p[i] = 7 // overwritten, the masked part with zero
	}
	if !softmaxCausalVec(s, p, T, 0, 3*T) {
		softmaxRows(s, p, T, 0, 3*T)
	}
	for r := 0; r < 3*T; r++ {
		i := r % T
		row := s[r*T : (r+1)*T]
		mx := math.Inf(-1)
		for _, v := range row[:i+1] {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range row[:i+1] {
			sum += math.Exp(float64(v) - mx)
		}
		for j := 0; j < T; j++ {
			want := 0.0
			if j <= i {
				want = math.Exp(float64(row[j])-mx) / sum
			}
			if got := float64(p[r*T+j]); math.Abs(got-want) > 1e-6*want+1e-12 {
				t.Fatalf("softmax row %d column %d: %v, want %v", r, j, got, want)
			}
		}
	}
	x := s[:301]
	out := make([]float32, len(x))
	got := expSum(x, 3, 0.5, out)
	var want float64
	for j, v := range x {
		e := math.Exp(float64(v) - 3)
		want += e
		if math.Abs(float64(out[j])-0.5*e) > 1e-6*0.5*e {
			t.Fatalf("expSum out[%d] = %v, want %v", j, out[j], 0.5*e)
		}
	}
	if math.Abs(got-want) > 1e-6*want {
		t.Fatalf("expSum = %v, want %v", got, want)
	}
}
