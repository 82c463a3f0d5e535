package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moec-dev/moec/compiler/program"
)

// Per-op checks: each op's backward against a central difference of L = <dy, op(x)> for a
// random dy, in float64, with respect to the input and to every parameter of the op.

func randVec(r *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	return x
}

// checkOp compares analytic gradients grads[i] of L with central differences over vars[i].
func checkOp(t *testing.T, name string, loss func() float64, vars, grads [][]float64) {
	t.Helper()
	for v := range vars {
		for i := range vars[v] {
			old := vars[v][i]
			const h = 1e-6
			vars[v][i] = old + h
			lp := loss()
			vars[v][i] = old - h
			lm := loss()
			vars[v][i] = old
			num := (lp - lm) / (2 * h)
			if math.Abs(num-grads[v][i]) > 1e-7+1e-6*math.Abs(num) {
				t.Errorf("%s: var %d[%d]: backward %.10g, finite difference %.10g", name, v, i, grads[v][i], num)
			}
		}
	}
}

func TestOpNorms(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n, d = 3, 5
	for _, layerNorm := range []bool{false, true} {
		x, dy := randVec(r, n*d), randVec(r, n*d)
		w := &tensor[float64]{shape: []int{d}, w: randVec(r, d), g: make([]float64, d)}
		var b *tensor[float64]
		if layerNorm {
			b = &tensor[float64]{shape: []int{d}, w: randVec(r, d), g: make([]float64, d)}
		}
		y, xhat, rstd := make([]float64, n*d), make([]float64, n*d), make([]float64, n)
		loss := func() float64 {
			normFwd(y, xhat, rstd, x, n, d, w, b, layerNorm, 1e-5)
			return dot(y, dy)
		}
		loss()
		dx := make([]float64, n*d)
		normBack(dx, dy, xhat, rstd, n, d, w, b, layerNorm)
		vars, grads := [][]float64{x, w.w}, [][]float64{dx, w.g}
		if b != nil {
			vars, grads = append(vars, b.w), append(grads, b.g)
		}
		checkOp(t, fmt.Sprintf("norm layer=%v", layerNorm), loss, vars, grads)
	}
}

func TestOpActivations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 9
	for _, act := range []program.Activation{program.ReLU, program.GELU, program.SiLU, program.SwiGLU, program.GeGLU} {
		a, u, dh := randVec(r, n), randVec(r, n), randVec(r, n)
		if !act.Gated() {
			u = nil
		}
		h := make([]float64, n)
		loss := func() float64 {
			activate(act, h, a, u)
			return dot(h, dh)
		}
		da, du := make([]float64, n), make([]float64, n)
		if !act.Gated() {
			du = nil
		}
		activateBack(act, da, du, dh, a, u)
		vars, grads := [][]float64{a}, [][]float64{da}
		if u != nil {
			vars, grads = append(vars, u), append(grads, du)
		}
		checkOp(t, string(act), loss, vars, grads)
	}
}

func TestOpRotaryIsOrthogonal(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const heads, dh, pos = 3, 8, 5
	rope := newRope[float64](pos+1, dh, 10000)
	x, dy := randVec(r, heads*dh), randVec(r, heads*dh)
	y := make([]float64, len(x))
	loss := func() float64 {
		copy(y, x)
		rope.rotate(y, heads, pos, false)
		return dot(y, dy)
	}
	dx := append([]float64(nil), dy...)
	rope.rotate(dx, heads, pos, true)
	checkOp(t, "rope", loss, [][]float64{x}, [][]float64{dx})
	// Position 0 is the identity.
	z := append([]float64(nil), x...)
	rope.rotate(z, heads, 0, false)
	for i := range z {
		if z[i] != x[i] {
			t.Fatalf("rotation at position 0 changed element %d", i)
		}
	}
}

func TestOpLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const n, in, out = 4, 5, 3
	x, dy := randVec(r, n*in), randVec(r, n*out)
	w := &tensor[float64]{shape: []int{out, in}, w: randVec(r, out*in), g: make([]float64, out*in)}
	b := &tensor[float64]{shape: []int{out}, w: randVec(r, out), g: make([]float64, out)}
	y := make([]float64, n*out)
	loss := func() float64 {
		linear(y, x, n, w, b, false)
		return dot(y, dy)
	}
	dx := make([]float64, n*in)
	linearBack(dx, dy, x, n, w, b, false)
	checkOp(t, "linear", loss, [][]float64{x, w.w, b.w}, [][]float64{dx, w.g, b.g})
}

// Attention alone (scores, talking heads, softmax with a window, weighted values) through
// the model's own kernels, checked with respect to q, k, v and both mixing matrices.
func TestOpAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cfg := tinyDense()
	cfg.Attention.Heads, cfg.Attention.KVHeads, cfg.Attention.HeadDim = 4, 2, 3
	cfg.Attention.TalkingHeads, cfg.Attention.Window, cfg.Attention.Sinks = true, 3, true
	cfg.Position = program.NoPosition
	c, err := newCore[float64](cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 5
	w := c.workspaceFor(B, T)
	l, a := c.layers[0], &w.layers[0].attn
	d := c.d
	for _, x := range [][]float64{a.q, a.k, a.v, l.attn.thPre.w, l.attn.thPost.w, l.attn.sinks.w} {
		copy(x, randVec(r, len(x)))
	}
	dout := randVec(r, B*T*d.QDim)
	loss := func() float64 {
		c.attnScores(l, a, B, T, 0, B)
		c.attnApply(a.a, a, T, 0, B)
		return dot(a.o, dout)
	}
	loss()
	g := &attnGrads[float64]{do: dout, dq: make([]float64, len(a.q)), dk: make([]float64, len(a.k)), dv: make([]float64, len(a.v))}
	thG := make([]float64, 2*d.H*d.H+d.H)
	s := make([]float64, 2*d.H*T*T)
	c.attnBackward(l, a, g, a.a, false, nil, T, 0, B, s[:len(s)/2], s[len(s)/2:], thG)
	checkOp(t, "attention", loss, [][]float64{a.q, a.k, a.v, l.attn.thPre.w, l.attn.thPost.w, l.attn.sinks.w},
		[][]float64{g.dq, g.dk, g.dv, thG[:d.H*d.H], thG[d.H*d.H : 2*d.H*d.H], thG[2*d.H*d.H:]})
}
