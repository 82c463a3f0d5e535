package kernels

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// SmallShapes are small shapes covering every variant the descriptions branch on, for
// tests of this package and of the backends.
func SmallShapes() map[string]Shape {
	base := Shape{DModel: 16, Experts: 6, TopK: 2, Hidden: 12, Activation: program.GELU, RouterDim: 16,
		Normalize: true, Vocab: 40, Heads: 2, HeadDim: 8, NormEps: 1e-6}
	swiglu := base
	swiglu.Activation, swiglu.Score, swiglu.RouterBias = program.SwiGLU, program.Sigmoid, true
	token := base
	token.TokenRoute, token.RouterDim, token.Activation, token.Normalize, token.TopK = true, 12, program.ReLU, false, 1
	geglu := base
	geglu.Activation, geglu.Experts, geglu.TopK = program.GeGLU, 3, 3
	silu := base
	silu.Activation, silu.Score = program.SiLU, program.Sigmoid
	return map[string]Shape{"gelu": base, "swiglu": swiglu, "token": token, "geglu": geglu, "silu": silu}
}

// Compare reports the first element of an output buffer where got and want differ by
// more than tol relative to max(1, |want|).
func Compare(k *Kernel, got, want Env, tol float64) error {
	for _, p := range k.Outputs() {
		if p.Elem == I32 {
			g, w := got.I[p.Name], want.I[p.Name]
			for i := range w {
				if g[i] != w[i] {
					return fmt.Errorf("%s.%s[%d] = %d, want %d", k.Name, p.Name, i, g[i], w[i])
				}
			}
			continue
		}
		g, w := got.F[p.Name], want.F[p.Name]
		for i := range w {
			d := math.Abs(float64(g[i]) - float64(w[i]))
			if !(d <= tol*math.Max(1, math.Abs(float64(w[i])))) {
				return fmt.Errorf("%s.%s[%d] = %g, want %g (tolerance %g)", k.Name, p.Name, i, g[i], w[i], tol)
			}
		}
	}
	return nil
}
