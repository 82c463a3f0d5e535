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
	// Gates, with Assignments: the combine weight of each of those choices (after
	// normalize), in the same order.
	Gates [][]float32
}

// layerWS is one layer's activations.
type layerWS[F Float] struct {
	xhat1, rstd1, h1 []F
	attn             attnWS[F]
	xhat2, rstd2, h2 []F
	xhatPA, rstdPA   []F // post/sandwich norms of the sublayer outputs
	xhatPF, rstdPF   []F
	par              *parallelWS[F] // parallel_attention's buffers (parallel.go), nil without
	ffn              *ffnWS[F]
	moe              *moeWS[F]
	mla              *mlaWS[F] // latent attention's buffers (mla.go), nil without
}

// workspace holds every buffer of a step for one (B, T), so steps allocate almost nothing.
type workspace[F Float] struct {
	B, T             int
	tok              []int32 // [N] inputs
	x                []F     // [N, D] residual stream
	rows, dRows      []F     // [N, RouterIn] the tokens' router-table rows and their gradient (token-embedding routing)
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
	if c.routerEmbed != nil {
		w.rows, w.dRows = make([]F, n*d.RouterIn), make([]F, n*d.RouterIn)
	}
	w.grads = attnGrads[F]{do: make([]F, n*d.QDim), dq: make([]F, n*d.QDim), dk: make([]F, n*d.KVDim), dv: make([]F, n*d.KVDim)}
	if c.cfg.Attention.QKNorm {
		w.grads.dqPre, w.grads.dkPre = make([]F, n*d.QDim), make([]F, n*d.KVDim)
	}
	sharing := c.cfg.Attention.SharesWeights()
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
		a.q, a.o = make([]F, n*d.QDim), make([]F, n*d.QDim)
		if li := len(w.layers); l.kvOwner == li {
			a.k, a.v = make([]F, n*d.KVDim), make([]F, n*d.KVDim)
			if d.ShareKV > 1 {
				a.dkAcc, a.dvAcc = make([]F, n*d.KVDim), make([]F, n*d.KVDim)
			}
		} else { // a later layer of a cross-layer group reads its owner's keys and values
			a.k, a.v = w.layers[l.kvOwner].attn.k, w.layers[l.kvOwner].attn.v
		}
		if c.normsAfterRope() { // qknorm_rope.go: each layer norms its group's rotated keys into its own k
			if li := len(w.layers); l.kvOwner == li {
				a.kRot = make([]F, n*d.KVDim)
			} else {
				a.kRot, a.k = w.layers[l.kvOwner].attn.kRot, make([]F, n*d.KVDim)
			}
		}
		if c.cfg.Attention.ClipQKV > 0 { // clip.go
			a.qRaw = make([]F, n*d.QDim)
			if l.kvOwner == len(w.layers) {
				a.kRaw, a.vRaw = make([]F, n*d.KVDim), make([]F, n*d.KVDim)
			}
		}
		if l.attn.qNorm != nil {
			a.qhat, a.qrstd = make([]F, n*d.QDim), make([]F, n*d.H)
		}
		if l.attn.kNorm != nil {
			a.khat, a.krstd = make([]F, n*d.KVDim), make([]F, n*d.KV)
		}
		if l.llama.l2 {
			a.ql2, a.kl2 = make([]F, n*d.H), make([]F, n*d.KV)
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
			lw.moe.rows, lw.moe.dRows = w.rows, w.dRows
		}
		if l.dense != nil {
			lw.ffn = newFFNWS(l.dense, n)
		}
		if l.normR != nil {
			lw.par = newParallelWS[F](n, d.D)
		}
		if l.mla != nil {
			lw.mla = newMLAWS[F](c.cfg, d, B, T)
		}
		w.layers = append(w.layers, lw)
	}
	for range runtime.GOMAXPROCS(0) {
		w.scratch = append(w.scratch, make([]F, 2*d.H*T*T))
		w.thG = append(w.thG, make([]F, 2*d.H*d.H+d.H))
	}
	if c.cfg.Position == program.Rotary {
		w.rope = newScaledRope[F](c.cfg, T, d.Dh)
	}
	c.ws = w
	c.buffers++
	return w
}

// shareDice decides, for each layer, whether it recomputes its attention weights this step;
// p is program.Attention.RecomputeProbability (1: always).
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
// workspace for backward. It is the Schedule's parts (program.go) run in order, so the
// step and the generated program share one implementation.
func (c *core[F]) forward(b Batch, o StepOptions) (Stats, *workspace[F], error) {
	if err := c.checkBatch(b); err != nil {
		return Stats{}, nil, err
	}
	w := c.embedForward(b, o)
	st := Stats{Tokens: b.B * b.T}
	for li := range c.layers {
		if err := c.layerForward(li, w, o, &st, nil); err != nil {
			return st, w, err
		}
	}
	if err := c.headForward(b, w, &st, nil, nil); err != nil {
		return st, w, err
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		return st, w, errors.New("nn: the loss is not finite")
	}
	return st, w, nil
}

// backward accumulates dLoss/dW for the forward that just ran on b. With no compiled
// kernels the head's backward cannot fail; a sharded layer's exchange can.
func (c *core[F]) backward(b Batch, w *workspace[F]) error {
	_ = c.headBackward(b, w, nil, nil)
	for li := len(c.layers) - 1; li >= 0; li-- {
		if err := c.layerBackward(li, w); err != nil {
			return err
		}
	}
	c.embedBackward(w)
	return nil
}

// ForwardBackward runs a step and accumulates dLoss/dW into every Param.G, where Loss is
// the mean cross-entropy over B·T tokens plus balance_loss·ΣBalance plus z_loss·ΣZLoss.
func (m *Model) ForwardBackward(b Batch, o StepOptions) (Stats, error) {
	if m.c.quantized {
		return Stats{}, ErrQuantized
	}
	st, w, err := m.c.forward(b, o)
	if err != nil {
		return st, err
	}
	return st, m.c.backward(b, w)
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
