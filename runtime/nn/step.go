package nn

import (
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/rng"
)

// Batch is B rows of T+1 tokens: inputs row[:T], targets row[1:].
type Batch struct {
	B, T   int
	Tokens []int32
}

// StepOptions say which step this is and how to run it.
type StepOptions struct {
	Seed, Step int64
	Train      bool
	// AttnShare applies stochastic attention-weight sharing outside training (evaluation
	// that wants the training-time computation). Training always applies it, as the model
	// declares; generation (Decoder) never does.
	AttnShare bool
	// Assignments asks Stats to carry every token's chosen experts (routing-stability
	// measurements); off in training, where the copy would only cost time.
	Assignments bool
}

// Stats are the loss terms and routing counts of one forward.
type Stats struct {
	Loss         float64 // CE + balance_loss·Balance + z_loss·ZLoss
	CE           float64 // mean cross-entropy over B·T tokens
	Balance      float64 // Σ over MoE layers of E·Σ_e f_e·P_e (unscaled)
	ZLoss        float64 // Σ over MoE layers of mean (logsumexp router logits)² (unscaled)
	Tokens       int     // B·T
	ExpertTokens [][]int // per MoE layer, per expert: assignments the expert processed
	Dropped      int     // token-expert assignments dropped by capacity, all layers
	SharedLayers int     // layers that reused the previous layer's attention weights
	// Assignments, only when StepOptions.Assignments is set: per MoE layer, the top_k
	// experts each of the B·T tokens chose, best first ([B·T·top_k], before capacity).
	Assignments [][]int32
}

// layerWS is one layer's activations.
type layerWS[F Float] struct {
	xhat1, rstd1, h1 []F
	attn             attnWS[F]
	xhat2, rstd2, h2 []F
	xhatPA, rstdPA   []F // post/sandwich norms of the sublayer outputs
	xhatPF, rstdPF   []F
	ffn              *ffnWS[F]
	moe              *moeWS[F]
}

// workspace holds every buffer of a step for one (B, T), so steps allocate almost nothing.
type workspace[F Float] struct {
	B, T             int
	tok              []int32 // [N] inputs
	x                []F     // [N, D] residual stream
	layers           []*layerWS[F]
	xhatF, rstdF, hF []F
	logits           []F // [N, V]
	dx, dh           []F // [N, D]
	tmp              []F // [N, D] sandwich outputs, then post-norm gradients
	grads            attnGrads[F]
	scratch          [][]F // per worker: two [H, T, T] buffers
	thG              [][]F // per worker: talking-heads gradients [2·H·H]
	rope             *ropeTable[F]
	recompute        []bool
	owner            []int
}

func (c *core[F]) workspaceFor(B, T int) *workspace[F] {
	// The per-worker buffers are sized by GOMAXPROCS, so a change of it renews them too.
	if w := c.ws; w != nil && w.B == B && w.T == T && len(w.scratch) >= runtime.GOMAXPROCS(0) {
		return w
	}
	d := c.d
	n := B * T
	bhtt := B * d.H * T * T
	w := &workspace[F]{B: B, T: T, tok: make([]int32, n), x: make([]F, n*d.D),
		xhatF: make([]F, n*d.D), rstdF: make([]F, n), hF: make([]F, n*d.D),
		logits: make([]F, n*d.V), dx: make([]F, n*d.D), dh: make([]F, n*d.D), tmp: make([]F, n*d.D),
		recompute: make([]bool, d.L), owner: make([]int, d.L)}
	w.grads = attnGrads[F]{do: make([]F, n*d.qDim), dq: make([]F, n*d.qDim), dk: make([]F, n*d.kvDim), dv: make([]F, n*d.kvDim)}
	if c.cfg.Attention.QKNorm {
		w.grads.dqPre, w.grads.dkPre = make([]F, n*d.qDim), make([]F, n*d.kvDim)
	}
	sharing := c.cfg.Attention.ShareWeights > 0 && c.cfg.Attention.ShareWeights < 1
	for _, l := range c.layers {
		lw := &layerWS[F]{xhat1: make([]F, n*d.D), rstd1: make([]F, n), h1: make([]F, n*d.D),
			xhat2: make([]F, n*d.D), rstd2: make([]F, n), h2: make([]F, n*d.D)}
		if l.postA != nil {
			lw.xhatPA, lw.rstdPA = make([]F, n*d.D), make([]F, n)
		}
		if l.postF != nil {
			lw.xhatPF, lw.rstdPF = make([]F, n*d.D), make([]F, n)
		}
		a := &lw.attn
		a.q, a.o = make([]F, n*d.qDim), make([]F, n*d.qDim)
		if li := len(w.layers); l.kvOwner == li {
			a.k, a.v = make([]F, n*d.kvDim), make([]F, n*d.kvDim)
			if d.ShareKV > 1 {
				a.dkAcc, a.dvAcc = make([]F, n*d.kvDim), make([]F, n*d.kvDim)
			}
		} else { // a later layer of a cross-layer group reads its owner's keys and values
			a.k, a.v = w.layers[l.kvOwner].attn.k, w.layers[l.kvOwner].attn.v
		}
		if l.attn.qNorm != nil {
			a.qhat, a.qrstd = make([]F, n*d.qDim), make([]F, n*d.H)
		}
		if l.attn.kNorm != nil {
			a.khat, a.krstd = make([]F, n*d.kvDim), make([]F, n*d.KV)
		}
		a.p = make([]F, bhtt)
		a.a = a.p
		if l.attn.thPre != nil {
			a.sRaw, a.a = make([]F, bhtt), make([]F, bhtt)
		}
		if sharing {
			a.dAacc = make([]F, bhtt)
		}
		if l.moe != nil {
			lw.moe = newMoEWS(d, l.moe, n)
		}
		if l.dense != nil {
			lw.ffn = newFFNWS(l.dense, n)
		}
		w.layers = append(w.layers, lw)
	}
	for range runtime.GOMAXPROCS(0) {
		w.scratch = append(w.scratch, make([]F, 2*d.H*T*T))
		w.thG = append(w.thG, make([]F, 2*d.H*d.H+d.H))
	}
	if c.cfg.Position == program.Rotary {
		base := c.cfg.RopeBase
		if base == 0 {
			base = 10000
		}
		w.rope = newRope[F](T, d.Dh, base)
	}
	c.ws = w
	return w
}

// shareDice decides, for each layer, whether it recomputes its attention weights this step.
func shareDice(p float64, layers int, seed, step int64, apply bool) []bool {
	out := make([]bool, layers)
	for l := range out {
		out[l] = l == 0 || !apply || p >= 1 || p <= 0 ||
			rng.New(rng.Key(seed, step, l, rng.PurposeAttnShare)).Bernoulli(p)
	}
	return out
}

func (c *core[F]) checkBatch(b Batch) error {
	if b.B <= 0 || b.T <= 0 {
		return fmt.Errorf("nn: batch %dx%d must be positive", b.B, b.T)
	}
	if len(b.Tokens) != b.B*(b.T+1) {
		return fmt.Errorf("nn: batch %dx%d needs %d tokens (rows of T+1), got %d", b.B, b.T, b.B*(b.T+1), len(b.Tokens))
	}
	if c.d.MaxPos > 0 && b.T > c.d.MaxPos {
		return fmt.Errorf("nn: sequence length %d exceeds the %d learned positions", b.T, c.d.MaxPos)
	}
	for i, t := range b.Tokens {
		if t < 0 || int64(t) >= c.cfg.Vocab {
			return fmt.Errorf("nn: token %d at index %d is outside the vocabulary [0, %d)", t, i, c.cfg.Vocab)
		}
	}
	return nil
}

// forward runs the model on b and returns the loss terms; the activations stay in the
// workspace for backward.
func (c *core[F]) forward(b Batch, o StepOptions) (Stats, *workspace[F], error) {
	if err := c.checkBatch(b); err != nil {
		return Stats{}, nil, err
	}
	d := c.d
	B, T := b.B, b.T
	n := B * T
	w := c.workspaceFor(B, T)
	for r := 0; r < B; r++ {
		copy(w.tok[r*T:(r+1)*T], b.Tokens[r*(T+1):r*(T+1)+T])
	}
	for t, id := range w.tok {
		copy(w.x[t*d.D:(t+1)*d.D], c.embed.w[int(id)*d.D:(int(id)+1)*d.D])
		if c.pos != nil {
			axpy(w.x[t*d.D:(t+1)*d.D], 1, c.pos.w[(t%T)*d.D:(t%T+1)*d.D])
		}
	}
	rec := shareDice(c.cfg.Attention.ShareWeights, d.L, o.Seed, o.Step, o.Train || o.AttnShare)
	copy(w.recompute, rec)
	st := Stats{Tokens: n}
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	eps := c.cfg.NormEps
	if eps == 0 {
		eps = 1e-6
	}
	for li, l := range c.layers {
		lw := w.layers[li]
		sublayerIn(lw.h1, lw.xhat1, lw.rstd1, w.x, n, d.D, l.norm1, l.norm1b, ln, eps)
		a := &lw.attn
		w.owner[li] = li
		if !w.recompute[li] {
			w.owner[li] = w.owner[li-1]
			st.SharedLayers++
		}
		// Queries when this layer computes its weights; keys and values in the layer that
		// owns them, keys also when only later layers of its group will use them.
		doQ := w.recompute[li]
		doKV := l.kvOwner == li
		doK := doKV && (doQ || d.ShareKV > 1)
		if doQ {
			linear(a.q, lw.h1, n, l.attn.q, l.attn.qb, false)
			if l.attn.qNorm != nil {
				// Each head's vector is one row of the norm: [N·H, Dh].
				normFwd(a.q, a.qhat, a.qrstd, a.q, n*d.H, d.Dh, l.attn.qNorm, nil, false, eps)
			}
		}
		if doK {
			linear(a.k, lw.h1, n, l.attn.k, l.attn.kb, false)
			if l.attn.kNorm != nil {
				normFwd(a.k, a.khat, a.krstd, a.k, n*d.KV, d.Dh, l.attn.kNorm, nil, false, eps)
			}
		}
		if w.rope != nil && (doQ || doK) {
			parallel(n, func(_, lo, hi int) {
				for t := lo; t < hi; t++ {
					if doQ {
						w.rope.rotate(a.q[t*d.qDim:(t+1)*d.qDim], d.H, t%T, false)
					}
					if doK {
						w.rope.rotate(a.k[t*d.kvDim:(t+1)*d.kvDim], d.KV, t%T, false)
					}
				}
			})
		}
		if doKV {
			linear(a.v, lw.h1, n, l.attn.v, l.attn.vb, false)
		}
		weights := w.layers[w.owner[li]].attn.a
		recompute := w.recompute[li]
		parallel(B, func(_, b0, b1 int) {
			if recompute {
				c.attnScores(l, a, B, T, b0, b1)
			}
			c.attnApply(weights, a, T, b0, b1)
		})
		target := sublayerTarget(sandwich, l.postA, w.x, w.tmp)
		linear(target, a.o, n, l.attn.o, l.attn.ob, true)
		sublayerOut(sandwich, w.x, w.tmp, lw.xhatPA, lw.rstdPA, n, d.D, l.postA, l.postAb, ln, eps)
		sublayerIn(lw.h2, lw.xhat2, lw.rstd2, w.x, n, d.D, l.norm2, l.norm2b, ln, eps)
		target = sublayerTarget(sandwich, l.postF, w.x, w.tmp)
		if l.moe != nil {
			c.moeForward(l.moe, lw.moe, lw.h2, w.tok, target, n, routeOptions{})
			st.Balance += lw.moe.balance
			st.ZLoss += lw.moe.zloss
			st.Dropped += lw.moe.dropped
			st.ExpertTokens = append(st.ExpertTokens, append([]int(nil), lw.moe.kept...))
			if o.Assignments {
				st.Assignments = append(st.Assignments, append([]int32(nil), lw.moe.idx...))
			}
		}
		if l.dense != nil {
			ffnForward(l.dense, lw.ffn, lw.h2, target, n)
		}
		sublayerOut(sandwich, w.x, w.tmp, lw.xhatPF, lw.rstdPF, n, d.D, l.postF, l.postFb, ln, eps)
	}
	hF := w.x
	if c.normF != nil {
		normFwd(w.hF, w.xhatF, w.rstdF, w.x, n, d.D, c.normF, c.normFb, ln, eps)
		hF = w.hF
	}
	head := c.head
	if head == nil {
		head = c.embed
	}
	linear(w.logits, hF, n, head, nil, false)
	// Cross-entropy per token; the logits become dLoss/dlogits in place during backward,
	// so the loss is taken here while they are intact.
	var ce float64
	for r := 0; r < B; r++ {
		for t := 0; t < T; t++ {
			i := r*T + t
			target := int(b.Tokens[r*(T+1)+t+1])
			row := w.logits[i*d.V : (i+1)*d.V]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			ce += mx + math.Log(s) - float64(row[target])
		}
	}
	st.CE = ce / float64(n)
	st.Loss = st.CE
	if m := c.cfg.MoE; m != nil {
		st.Loss += m.BalanceLoss*st.Balance + m.ZLoss*st.ZLoss
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		return st, w, errors.New("nn: the loss is not finite")
	}
	return st, w, nil
}

// backward accumulates dLoss/dW for the forward that just ran on b.
func (c *core[F]) backward(b Batch, w *workspace[F]) {
	d := c.d
	B, T := b.B, b.T
	n := B * T
	// dlogits = (softmax − onehot) / N, in place.
	parallel(n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			row := w.logits[i*d.V : (i+1)*d.V]
			target := int(b.Tokens[(i/T)*(T+1)+i%T+1])
			softmaxRow(row, 0, d.V)
			row[target]--
			for j := range row {
				row[j] /= F(n)
			}
		}
	})
	head := c.head
	if head == nil {
		head = c.embed
	}
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	hF := w.x
	if c.normF != nil {
		hF = w.hF
	}
	if c.normF != nil {
		linearBack(w.dh, w.logits, hF, n, head, nil, false)
		clear(w.dx)
		normBack(w.dx, w.dh, w.xhatF, w.rstdF, n, d.D, c.normF, c.normFb, ln)
	} else {
		linearBack(w.dx, w.logits, hF, n, head, nil, false)
	}
	var balanceCoef, zCoef float64
	if m := c.cfg.MoE; m != nil {
		balanceCoef, zCoef = m.BalanceLoss, m.ZLoss
	}
	for li := range c.layers {
		a := &w.layers[li].attn
		clear(a.dAacc)
		clear(a.dkAcc)
		clear(a.dvAcc)
	}
	g := &w.grads
	for li := len(c.layers) - 1; li >= 0; li-- {
		l, lw := c.layers[li], w.layers[li]
		dy := sublayerGradOut(sandwich, w.dx, w.tmp, lw.xhatPF, lw.rstdPF, n, d.D, l.postF, l.postFb, ln)
		if l.moe != nil {
			c.moeBackward(l.moe, lw.moe, lw.h2, w.tok, dy, w.dh, n, balanceCoef, zCoef)
		}
		if l.dense != nil {
			ffnBackward(l.dense, lw.ffn, lw.h2, dy, w.dh, n, l.moe != nil)
		}
		sublayerGradIn(w.dx, w.dh, lw.xhat2, lw.rstd2, n, d.D, l.norm2, l.norm2b, ln)

		a := &lw.attn
		dy = sublayerGradOut(sandwich, w.dx, w.tmp, lw.xhatPA, lw.rstdPA, n, d.D, l.postA, l.postAb, ln)
		linearBack(g.do, dy, a.o, n, l.attn.o, l.attn.ob, false)
		owner := w.owner[li]
		reused := owner != li
		weights := w.layers[owner].attn.a
		ownerAcc := w.layers[owner].attn.dAacc
		for _, t := range w.thG {
			clear(t)
		}
		parallel(B, func(worker, b0, b1 int) {
			s := w.scratch[worker]
			c.attnBackward(l, a, g, weights, reused, ownerAcc, T, b0, b1, s[:len(s)/2], s[len(s)/2:], w.thG[worker])
		})
		if !reused {
			for _, t := range w.thG {
				if l.attn.thPre != nil {
					axpy(l.attn.thPre.g, 1, t[:d.H*d.H])
					axpy(l.attn.thPost.g, 1, t[d.H*d.H:2*d.H*d.H])
				}
				if l.attn.sinks != nil {
					axpy(l.attn.sinks.g, 1, t[2*d.H*d.H:])
				}
			}
		}
		// Keys and values used by later layers of a cross-layer group add their gradients
		// into the owner, which back-propagates the sum through its projections.
		owns := l.kvOwner == li
		if !owns {
			own := &w.layers[l.kvOwner].attn
			axpy(own.dvAcc, 1, g.dv)
			if !reused {
				axpy(own.dkAcc, 1, g.dk)
			}
		} else if d.ShareKV > 1 {
			axpy(g.dv, 1, a.dvAcc)
			if reused {
				clear(g.dk)
			}
			axpy(g.dk, 1, a.dkAcc)
		}
		doQ := !reused
		doK := owns && (doQ || d.ShareKV > 1)
		if owns {
			linearBack(w.dh, g.dv, lw.h1, n, l.attn.v, l.attn.vb, false)
		} else {
			clear(w.dh)
		}
		if w.rope != nil && (doQ || doK) {
			parallel(n, func(_, lo, hi int) {
				for t := lo; t < hi; t++ {
					if doQ {
						w.rope.rotate(g.dq[t*d.qDim:(t+1)*d.qDim], d.H, t%T, true)
					}
					if doK {
						w.rope.rotate(g.dk[t*d.kvDim:(t+1)*d.kvDim], d.KV, t%T, true)
					}
				}
			})
		}
		if doQ {
			dq := g.dq
			if l.attn.qNorm != nil {
				dq = g.dqPre
				clear(dq)
				normBack(dq, g.dq, a.qhat, a.qrstd, n*d.H, d.Dh, l.attn.qNorm, nil, false)
			}
			linearBack(w.dh, dq, lw.h1, n, l.attn.q, l.attn.qb, true)
		}
		if doK {
			dk := g.dk
			if l.attn.kNorm != nil {
				dk = g.dkPre
				clear(dk)
				normBack(dk, g.dk, a.khat, a.krstd, n*d.KV, d.Dh, l.attn.kNorm, nil, false)
			}
			linearBack(w.dh, dk, lw.h1, n, l.attn.k, l.attn.kb, true)
		}
		sublayerGradIn(w.dx, w.dh, lw.xhat1, lw.rstd1, n, d.D, l.norm1, l.norm1b, ln)
	}
	for t, id := range w.tok {
		axpy(c.embed.g[int(id)*d.D:(int(id)+1)*d.D], 1, w.dx[t*d.D:(t+1)*d.D])
		if c.pos != nil {
			axpy(c.pos.g[(t%T)*d.D:(t%T+1)*d.D], 1, w.dx[t*d.D:(t+1)*d.D])
		}
	}
}

// ForwardBackward runs a step and accumulates dLoss/dW into every Param.G, where Loss is
// the mean cross-entropy over B·T tokens plus balance_loss·ΣBalance plus z_loss·ΣZLoss.
func (m *Model) ForwardBackward(b Batch, o StepOptions) (Stats, error) {
	st, w, err := m.c.forward(b, o)
	if err != nil {
		return st, err
	}
	m.c.backward(b, w)
	return st, nil
}

// Forward runs the model and returns the loss terms without computing gradients.
func (m *Model) Forward(b Batch, o StepOptions) (Stats, error) {
	st, _, err := m.c.forward(b, o)
	return st, err
}

// Logits returns a copy of the B·T·vocab logits (vocab after padding) of a forward.
func (m *Model) Logits(b Batch, o StepOptions) ([]float32, error) {
	_, w, err := m.c.forward(b, o)
	if w == nil {
		return nil, err
	}
	return append([]float32(nil), w.logits...), err
}
