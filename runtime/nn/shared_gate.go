package nn

import (
	"math"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// sharedGateName is the tensor, under an MoE layer's prefix (block_sparse_moe.), of the
// shared-expert gate: Qwen1.5/Qwen2-MoE's shared_expert_gate, a Linear(d_model, 1) without
// bias, stored as its [1, D] weight.
const sharedGateName = params.SharedGateName

// hasSharedGate reports whether m's MoE layers gate their shared experts. A gate with no
// shared expert to scale is no parameter at all (the checker refuses writing one).
func hasSharedGate(m *program.Model) bool {
	return m.MoE != nil && m.MoE.SharedGate && m.MoE.SharedExperts > 0
}

// sharedGateWS holds what the gated shared path keeps between forward and backward.
type sharedGateWS[F Float] struct {
	out  []F // [n, D] the shared experts' summed output, before the gate
	sig  []F // [n] the gate, sigmoid(x·g), per token
	ds   []F // [n] gradient of the gate's logit
	dout []F // [n, D] gradient of out
}

// sharedGateFor returns w's gated-path buffers for n tokens, made on first use: only
// models with a shared gate need them, and the workspace never grows past its n.
func sharedGateFor[F Float](w *moeWS[F], n, d int) *sharedGateWS[F] {
	if g := w.gated; g != nil && len(g.sig) >= n {
		return g
	}
	w.gated = &sharedGateWS[F]{out: make([]F, n*d), sig: make([]F, n), ds: make([]F, n), dout: make([]F, n*d)}
	return w.gated
}

// sharedForward adds the shared experts' output for n tokens of x to y. With a shared
// gate (Qwen2-MoE) each token's summed shared output is scaled by sigmoid(x_t·g) first.
func (c *core[F]) sharedForward(mp *moeParams[F], w *moeWS[F], x, y []F, n int) {
	if mp.sharedGate == nil {
		for i, sp := range mp.shared {
			ffnForward(sp, w.shared[i], x, y, n)
		}
		return
	}
	d := c.d.D
	g := sharedGateFor(w, n, d)
	out := g.out[:n*d]
	clear(out)
	for i, sp := range mp.shared {
		ffnForward(sp, w.shared[i], x, out, n)
	}
	linear(g.sig[:n], x, n, mp.sharedGate, nil, false) // gate logits [n, 1]
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			s := F(1 / (1 + math.Exp(-float64(g.sig[t]))))
			g.sig[t] = s
			axpy(y[t*d:(t+1)*d], s, out[t*d:(t+1)*d])
		}
	})
}

// sharedBackward adds the gradient of x through the shared experts (and their gate) to dx,
// given dy, the gradient of the MoE layer's output, and accumulates their weight gradients.
// It reads what sharedForward kept for the same n tokens.
func (c *core[F]) sharedBackward(mp *moeParams[F], w *moeWS[F], x, dy, dx []F, n int) {
	if mp.sharedGate == nil {
		for i, sp := range mp.shared {
			ffnBackward(sp, w.shared[i], x, dy, dx, n, true)
		}
		return
	}
	d := c.d.D
	g := w.gated
	// y_t += s_t·out_t: out_t gets s_t·dy_t; the logit gets s_t(1−s_t)·(dy_t·out_t).
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			s, dyt := g.sig[t], dy[t*d:(t+1)*d]
			g.ds[t] = s * (1 - s) * dot(dyt, g.out[t*d:(t+1)*d])
			do := g.dout[t*d : (t+1)*d]
			for i, v := range dyt {
				do[i] = s * v
			}
		}
	})
	linearBack(dx, g.ds[:n], x, n, mp.sharedGate, nil, true)
	for i, sp := range mp.shared {
		ffnBackward(sp, w.shared[i], x, g.dout[:n*d], dx, n, true)
	}
}
