package nn

import (
	"errors"
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/internal/vec"
)

// A Schedule is one training step taken apart into the schedule that the generated Go
// program (codegen/gogen) unrolls: the embedding, each layer's forward in order, the
// head and loss, then the head's backward, each layer's backward in reverse order and
// the embedding's backward. Running the parts in that order computes exactly what
// ForwardBackward computes (same kernels, same order of floating-point operations), so a
// generated program trains to the same losses as `moec run`.
//
// A Schedule checks the order it is driven in and returns an error for a part called out of
// turn, rather than reading activations that were never written.
type Schedule struct {
	c     *core[float32]
	b     Batch
	o     StepOptions
	w     *workspace[float32]
	st    Stats
	phase stepPhase
	next  int // the layer the next LayerForward or LayerBackward must name
	// k, when set (BeginStepWith), runs the kernels it covers in place of the Go ones.
	k  Kernels
	kx *kernelScratch
}

type stepPhase int

const (
	phaseLayersFwd stepPhase = iota
	phaseHeadBack
	phaseLayersBack
	phaseEmbedBack
	phaseDone
)

// BeginStep checks b, fills the residual stream with the token (and learned position)
// embeddings and rolls this step's attention-sharing dice. The returned Schedule uses the
// Model's workspace: a Model runs one Schedule at a time, and a new BeginStep (or a
// ForwardBackward) invalidates the previous Schedule.
func (m *Model) BeginStep(b Batch, o StepOptions) (*Schedule, error) {
	c := m.c
	if err := c.checkBatch(b); err != nil {
		return nil, err
	}
	w := c.embedForward(b, o)
	return &Schedule{c: c, b: b, o: o, w: w, st: Stats{Tokens: b.B * b.T}}, nil
}

// Layers is the number of transformer layers the schedule walks.
func (s *Schedule) Layers() int { return len(s.c.layers) }

// LayerForward runs layer l's attention and feed-forward sublayers; l must be the next
// layer in order, starting from 0.
func (s *Schedule) LayerForward(l int) error {
	if s.phase != phaseLayersFwd || l != s.next || l >= len(s.c.layers) {
		return s.outOfTurn(fmt.Sprintf("LayerForward(%d)", l))
	}
	if err := s.c.layerForward(l, s.w, s.o, &s.st, s.k); err != nil {
		s.phase = phaseDone
		return err
	}
	s.next++
	return nil
}

// HeadForward runs the final norm, the head and the cross-entropy after the last layer,
// and returns the step's loss terms.
func (s *Schedule) HeadForward() (Stats, error) {
	if s.phase != phaseLayersFwd || s.next != len(s.c.layers) {
		return s.st, s.outOfTurn("HeadForward")
	}
	if err := s.c.headForward(s.b, s.w, &s.st, s.k, s.kx); err != nil {
		s.phase = phaseDone
		return s.st, err
	}
	s.phase = phaseHeadBack
	if math.IsNaN(s.st.Loss) || math.IsInf(s.st.Loss, 0) {
		s.phase = phaseDone
		return s.st, errors.New("nn: the loss is not finite")
	}
	return s.st, nil
}

// HeadBackward starts the backward pass: the loss gradient through the head and final
// norm into the residual stream.
func (s *Schedule) HeadBackward() error {
	if s.phase != phaseHeadBack {
		return s.outOfTurn("HeadBackward")
	}
	if err := s.c.headBackward(s.b, s.w, s.k, s.kx); err != nil {
		s.phase = phaseDone
		return err
	}
	s.phase, s.next = phaseLayersBack, len(s.c.layers)-1
	return nil
}

// LayerBackward accumulates layer l's weight gradients and carries the residual gradient
// below it; l must be the next layer in reverse order, starting from the last.
func (s *Schedule) LayerBackward(l int) error {
	if s.phase != phaseLayersBack || l != s.next {
		return s.outOfTurn(fmt.Sprintf("LayerBackward(%d)", l))
	}
	if err := s.c.layerBackward(l, s.w); err != nil {
		s.phase = phaseDone
		return err
	}
	s.next--
	if s.next < 0 {
		s.phase = phaseEmbedBack
	}
	return nil
}

// EmbedBackward accumulates the embedding (and learned position) gradients and ends the
// step.
func (s *Schedule) EmbedBackward() error {
	if s.phase != phaseEmbedBack {
		return s.outOfTurn("EmbedBackward")
	}
	s.c.embedBackward(s.w)
	s.phase = phaseDone
	return nil
}

func (s *Schedule) outOfTurn(call string) error {
	want := [...]string{phaseLayersFwd: "LayerForward", phaseHeadBack: "HeadBackward",
		phaseLayersBack: "LayerBackward", phaseEmbedBack: "EmbedBackward", phaseDone: "nothing (the step is done)"}[s.phase]
	switch s.phase {
	case phaseLayersFwd:
		if s.next == len(s.c.layers) {
			want = "HeadForward"
		} else {
			want = fmt.Sprintf("LayerForward(%d)", s.next)
		}
	case phaseLayersBack:
		want = fmt.Sprintf("LayerBackward(%d)", s.next)
	}
	return fmt.Errorf("nn: step schedule: %s called out of turn; the next call must be %s", call, want)
}

// The methods below are the one implementation of a step, cut at layer boundaries:
// core.forward and core.backward (step.go) run them in order, and a Schedule lets the
// generated program run them one call at a time.

func (c *core[F]) embedForward(b Batch, o StepOptions) *workspace[F] {
	d := c.d
	B, T := b.B, b.T
	w := c.workspaceFor(B, T)
	for r := 0; r < B; r++ {
		copy(w.tok[r*T:(r+1)*T], b.Tokens[r*(T+1):r*(T+1)+T])
	}
	for t, id := range w.tok {
		c.embedRow(w.x[t*d.D:(t+1)*d.D], int(id))
		if c.pos != nil {
			axpy(w.x[t*d.D:(t+1)*d.D], 1, c.pos.w[(t%T)*d.D:(t%T+1)*d.D])
		}
	}
	if c.routerEmbed != nil {
		c.gatherRouterRows(w.rows, w.tok)
		clear(w.dRows)
	}
	rec := shareDice(c.cfg.Attention.RecomputeProbability(), d.L, o.Seed, o.Step, o.Train || o.AttnShare)
	copy(w.recompute, rec)
	return w
}

func (c *core[F]) normEps() float64 { return c.d.NormEps }

// preNorm is sublayerIn, through k when it covers the norm.
func preNorm[F Float](k Kernels, h, xhat, rstd, x []F, n, d int, w, b *tensor[F], ln bool, eps float64) error {
	if done, err := kernelNorm(k, h, xhat, rstd, x, n, d, w, b, ln); done || err != nil {
		return err
	}
	sublayerIn(h, xhat, rstd, x, n, d, w, b, ln, eps)
	return nil
}

func (c *core[F]) layerForward(li int, w *workspace[F], o StepOptions, st *Stats, k Kernels) error {
	d := c.d
	B, T := w.B, w.T
	n := B * T
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	eps := c.normEps()
	l, lw := c.layers[li], w.layers[li]
	if err := preNorm(k, lw.h1, lw.xhat1, lw.rstd1, w.x, n, d.D, l.norm1, l.norm1b, ln, eps); err != nil {
		return err
	}
	if lw.par != nil {
		// parallel_attention: the experts read the layer's input, before attention adds to it.
		if err := preNorm(k, lw.h2, lw.xhat2, lw.rstd2, w.x, n, d.D, l.norm2, l.norm2b, ln, eps); err != nil {
			return err
		}
	}
	attnOut := lw.attn.o
	if l.mla != nil { // mla.go
		w.owner[li] = li
		c.mlaForward(l, lw.mla, lw.h1, B, T)
		attnOut = lw.mla.o
	} else {
		c.attnForward(li, w, st)
	}
	target := sublayerTarget(sandwich, l.postA, w.x, w.tmp)
	linear(target, attnOut, n, l.attn.o, l.attn.ob, true)
	sublayerOut(sandwich, w.x, w.tmp, lw.xhatPA, lw.rstdPA, n, d.D, l.postA, l.postAb, ln, eps)
	denseIn := lw.h2
	if lw.par != nil {
		// The dense FFN's own norm reads the post-attention stream before the experts add to it.
		if err := preNorm(k, lw.par.h, lw.par.xhat, lw.par.rstd, w.x, n, d.D, l.normR, l.normRb, ln, eps); err != nil {
			return err
		}
		denseIn = lw.par.h
	} else if err := preNorm(k, lw.h2, lw.xhat2, lw.rstd2, w.x, n, d.D, l.norm2, l.norm2b, ln, eps); err != nil {
		return err
	}
	target = sublayerTarget(sandwich, l.postF, w.x, w.tmp)
	if l.moe != nil {
		kept, dropped := lw.moe.kept, 0
		if c.shard != nil {
			if err := c.moeForwardSharded(li, l.moe, lw.moe, lw.h2, w.tok, target, n); err != nil {
				return err
			}
			// The statistics are the whole batch's, as a single rank would report them.
			L := c.shard.layer(li, c.d)
			kept, dropped = L.keptG, L.dropped
		} else {
			c.moeForward(l.moe, lw.moe, lw.h2, w.tok, target, n, routeOptions{})
			dropped = lw.moe.dropped
		}
		st.Balance += lw.moe.balance
		st.ZLoss += lw.moe.zloss
		st.Dropped += dropped
		st.ExpertTokens = append(st.ExpertTokens, append([]int(nil), kept...))
		if o.Assignments {
			st.Assignments = append(st.Assignments, append([]int32(nil), lw.moe.idx...))
			gates := make([]float32, len(lw.moe.gate))
			for i, g := range lw.moe.gate {
				gates[i] = float32(g)
			}
			st.Gates = append(st.Gates, gates)
		}
	}
	if l.dense != nil {
		ffnForward(l.dense, lw.ffn, denseIn, target, n)
	}
	sublayerOut(sandwich, w.x, w.tmp, lw.xhatPF, lw.rstdPF, n, d.D, l.postF, l.postFb, ln, eps)
	return nil
}

func (c *core[F]) headForward(b Batch, w *workspace[F], st *Stats, k Kernels, kx *kernelScratch) error {
	d := c.d
	B, T := b.B, b.T
	n := B * T
	hF := w.x
	if c.normF != nil {
		ln := c.cfg.Norm == program.LayerNorm
		if done, err := kernelNorm(k, w.hF, w.xhatF, w.rstdF, w.x, n, d.D, c.normF, c.normFb, ln); err != nil {
			return err
		} else if !done {
			normFwd(w.hF, w.xhatF, w.rstdF, w.x, n, d.D, c.normF, c.normFb, ln, c.normEps())
		}
		hF = w.hF
	}
	head := c.head
	if head == nil {
		head = c.embed
	}
	linear(w.logits, hF, n, head, c.headB, false)
	var ce float64
	logits32, ok := any(w.logits).([]float32)
	if k != nil && ok {
		if err := k.CrossEntropy(kx.loss, kx.lse, logits32, kx.targets, n); err != nil {
			return fmt.Errorf("nn: compiled cross-entropy: %w", err)
		}
		for _, l := range kx.loss {
			ce += float64(l)
		}
	}
	if k == nil || !ok {
		ce = crossEntropy(w.logits, b.Tokens, n, T, d.V)
	}
	st.CE = ce / float64(n)
	st.Loss = st.CE
	if m := c.cfg.MoE; m != nil {
		st.Loss += m.BalanceLoss*st.Balance + m.ZLoss*st.ZLoss
	}
	return nil
}

// crossEntropy is Σ_i logsumexp(logits_i) − logits_i[target_i] over the n = B·T rows of
// logits ([n, V]), the targets read from tokens ([B, T+1], shifted by one). Rows are
// spread over the cores; each row's term is kept and the terms are summed in row order
// in float64, so the loss does not depend on how the rows were split. For float32 the
// exponentials are eight lanes at a time (vec.ExpSumRows, exp32's algorithm) with the sum
// in float64; the float64 instantiation (gradient checks) keeps math.Exp.
func crossEntropy[F Float](logits []F, tokens []int32, n, T, V int) float64 {
	terms := make([]float64, n)
	l32, is32 := any(logits).([]float32)
	parallel(n, func(_, lo, hi int) {
		var mx32 []float32
		if is32 {
			mx32 = make([]float32, hi-lo)
			if !vec.ExpSumRows(l32[lo*V:hi*V], hi-lo, V, V, mx32, terms[lo:hi]) {
				mx32 = nil
			}
		}
		for i := lo; i < hi; i++ {
			row := logits[i*V : (i+1)*V]
			target := int(tokens[(i/T)*(T+1)+i%T+1])
			if mx32 != nil {
				terms[i] = float64(mx32[i-lo]) + math.Log(terms[i]) - float64(row[target])
				continue
			}
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			terms[i] = mx + math.Log(s) - float64(row[target])
		}
	})
	var ce float64
	for _, t := range terms {
		ce += t
	}
	return ce
}

func (c *core[F]) headBackward(b Batch, w *workspace[F], k Kernels, kx *kernelScratch) error {
	d := c.d
	T := b.T
	n := b.B * T
	if logits32, ok := any(w.logits).([]float32); k != nil && ok {
		if err := k.CrossEntropyGrad(kx.dlogits, logits32, kx.lse, kx.targets, n, 1/float32(n)); err != nil {
			return fmt.Errorf("nn: compiled cross-entropy gradient: %w", err)
		}
		copy(logits32, kx.dlogits)
	} else {
		parallel(n, func(_, lo, hi int) {
			l32, is32 := any(w.logits).([]float32)
			vecDone := is32 && vec.SoftmaxRows(l32[lo*d.V:hi*d.V], hi-lo, d.V, d.V, false, 0, false, 0)
			for i := lo; i < hi; i++ {
				row := w.logits[i*d.V : (i+1)*d.V]
				target := int(b.Tokens[(i/T)*(T+1)+i%T+1])
				if !vecDone {
					softmaxRow(row, 0, d.V)
				}
				row[target]--
				for j := range row {
					row[j] /= F(n)
				}
			}
		})
	}
	head := c.head
	if head == nil {
		head = c.embed
	}
	if c.normF != nil {
		linearBack(w.dh, w.logits, w.hF, n, head, c.headB, false)
		clear(w.dx)
		normBack(w.dx, w.dh, w.xhatF, w.rstdF, n, d.D, c.normF, c.normFb, c.cfg.Norm == program.LayerNorm)
	} else {
		linearBack(w.dx, w.logits, w.x, n, head, c.headB, false)
	}
	for li := range c.layers {
		a := &w.layers[li].attn
		clear(a.dAacc)
		clear(a.dkAcc)
		clear(a.dvAcc)
	}
	return nil
}

func (c *core[F]) layerBackward(li int, w *workspace[F]) error {
	d := c.d
	B, T := w.B, w.T
	n := B * T
	ln := c.cfg.Norm == program.LayerNorm
	sandwich := isSandwich(c.cfg)
	var balanceCoef, zCoef float64
	if m := c.cfg.MoE; m != nil {
		balanceCoef, zCoef = m.BalanceLoss, m.ZLoss
	}
	l, lw := c.layers[li], w.layers[li]
	dy := sublayerGradOut(sandwich, w.dx, w.tmp, lw.xhatPF, lw.rstdPF, n, d.D, l.postF, l.postFb, ln)
	if l.moe != nil && c.shard != nil {
		if err := c.moeBackwardSharded(li, l.moe, lw.moe, lw.h2, w.tok, dy, w.dh, n, balanceCoef, zCoef); err != nil {
			return err
		}
	} else if l.moe != nil {
		c.moeBackward(l.moe, lw.moe, lw.h2, w.tok, dy, w.dh, n, balanceCoef, zCoef)
	}
	if lw.par != nil {
		// parallel_attention: the experts' input gradient belongs to the layer's input; it
		// joins w.dx once attention's is in. The dense FFN's goes through its own norm.
		clear(lw.par.dIn)
		sublayerGradIn(lw.par.dIn, w.dh, lw.xhat2, lw.rstd2, n, d.D, l.norm2, l.norm2b, ln)
		ffnBackward(l.dense, lw.ffn, lw.par.h, dy, w.dh, n, false)
		sublayerGradIn(w.dx, w.dh, lw.par.xhat, lw.par.rstd, n, d.D, l.normR, l.normRb, ln)
	} else {
		if l.dense != nil {
			ffnBackward(l.dense, lw.ffn, lw.h2, dy, w.dh, n, l.moe != nil)
		}
		sublayerGradIn(w.dx, w.dh, lw.xhat2, lw.rstd2, n, d.D, l.norm2, l.norm2b, ln)
	}

	dy = sublayerGradOut(sandwich, w.dx, w.tmp, lw.xhatPA, lw.rstdPA, n, d.D, l.postA, l.postAb, ln)
	if l.mla != nil { // mla.go
		linearBack(lw.mla.do, dy, lw.mla.o, n, l.attn.o, l.attn.ob, false)
		c.mlaBackward(l, lw.mla, lw.h1, w.dh, B, T)
	} else {
		c.attnLayerBackward(li, w, dy)
	}
	sublayerGradIn(w.dx, w.dh, lw.xhat1, lw.rstd1, n, d.D, l.norm1, l.norm1b, ln)
	if lw.par != nil {
		axpy(w.dx, 1, lw.par.dIn)
	}
	return nil
}

// attnForward computes layer li's attention output (before the output projection) into
// its workspace's attn.o: projections, norms and rotation of the queries and keys, and the
// weights, recomputed or reused from the layer below.
func (c *core[F]) attnForward(li int, w *workspace[F], st *Stats) {
	d := c.d
	B, T := w.B, w.T
	n := B * T
	eps := c.normEps()
	l, lw := c.layers[li], w.layers[li]
	a := &lw.attn
	w.owner[li] = li
	if !w.recompute[li] {
		w.owner[li] = w.owner[li-1]
		st.SharedLayers++
	}
	doQ := w.recompute[li]
	doKV := l.kvOwner == li
	doK := doKV && (doQ || d.ShareKV > 1)
	clip := c.cfg.Attention.ClipQKV
	after := c.normsAfterRope() // qknorm_rope.go
	if doQ {
		linear(a.q, lw.h1, n, l.attn.q, l.attn.qb, false)
		if l.attn.qNorm != nil && !after {
			c.qkNormFwd(a.q, a.qhat, a.qrstd, n, d.H, l.attn.qNorm, eps)
		}
		if clip > 0 {
			clipFwd(a.q, a.qRaw, clip) // clip.go
		}
	}
	if doK {
		linear(a.k, lw.h1, n, l.attn.k, l.attn.kb, false)
		if l.attn.kNorm != nil && !after {
			c.qkNormFwd(a.k, a.khat, a.krstd, n, d.KV, l.attn.kNorm, eps)
		}
		if clip > 0 {
			clipFwd(a.k, a.kRaw, clip)
		}
	}
	if w.rope != nil && l.llama.rotary && (doQ || doK) {
		parallel(n, func(_, lo, hi int) {
			for t := lo; t < hi; t++ {
				if doQ {
					w.rope.rotate(a.q[t*d.QDim:(t+1)*d.QDim], d.H, t%T, false)
				}
				if doK {
					w.rope.rotate(a.k[t*d.KVDim:(t+1)*d.KVDim], d.KV, t%T, false)
				}
			}
		})
	}
	if after {
		c.normAfterRopeFwd(l, a, n, doQ, doK, eps)
	}
	if l.llama.l2 { // llama4.go
		if doQ {
			l2NormRows(a.q, a.ql2, n, d.H, d.Dh, eps)
		}
		if doK {
			l2NormRows(a.k, a.kl2, n, d.KV, d.Dh, eps)
		}
	}
	if doQ {
		scaleQueries(l.llama, a.q, n, d.QDim, T)
	}
	if doKV {
		linear(a.v, lw.h1, n, l.attn.v, l.attn.vb, false)
		if clip > 0 {
			clipFwd(a.v, a.vRaw, clip)
		}
	}
	weights := w.layers[w.owner[li]].attn.a
	recompute := w.recompute[li]
	parallel(B, func(_, b0, b1 int) {
		if recompute {
			c.attnScores(l, a, B, T, b0, b1)
		}
		c.attnApply(weights, a, T, b0, b1)
	})
}

// attnLayerBackward takes dy, the gradient of layer li's attention output after its
// output projection, to the gradient of the attention input in w.dh (overwritten),
// accumulating the attention weights' gradients.
func (c *core[F]) attnLayerBackward(li int, w *workspace[F], dy []F) {
	d := c.d
	B, T := w.B, w.T
	n := B * T
	g := &w.grads
	l, lw := c.layers[li], w.layers[li]
	a := &lw.attn
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
	after := c.normsAfterRope()
	if after && !reused {
		// q/k norms after rotary positions: from here on the gradients are of the rotated
		// queries and keys (qknorm_rope.go).
		c.normAfterRopeBack(l, a, g, n)
	}
	// Keys and values used by later layers of a cross-layer group add their gradients into
	// the owner, which back-propagates the sum through its projections.
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
	clip := c.cfg.Attention.ClipQKV
	if owns {
		if clip > 0 {
			clipBack(g.dv, a.vRaw, clip) // clip.go
		}
		linearBack(w.dh, g.dv, lw.h1, n, l.attn.v, l.attn.vb, false)
	} else {
		clear(w.dh)
	}
	if doQ {
		scaleQueries(l.llama, g.dq, n, d.QDim, T) // llama4.go
	}
	if l.llama.l2 {
		if doQ {
			l2NormRowsBack(g.dq, a.q, a.ql2, n, d.H, d.Dh)
		}
		if doK {
			l2NormRowsBack(g.dk, a.k, a.kl2, n, d.KV, d.Dh)
		}
	}
	if w.rope != nil && l.llama.rotary && (doQ || doK) {
		parallel(n, func(_, lo, hi int) {
			for t := lo; t < hi; t++ {
				if doQ {
					w.rope.rotate(g.dq[t*d.QDim:(t+1)*d.QDim], d.H, t%T, true)
				}
				if doK {
					w.rope.rotate(g.dk[t*d.KVDim:(t+1)*d.KVDim], d.KV, t%T, true)
				}
			}
		})
	}
	if doQ {
		dq := g.dq
		if clip > 0 {
			clipBack(dq, a.qRaw, clip)
		}
		if l.attn.qNorm != nil && !after {
			dq = g.dqPre
			clear(dq)
			c.qkNormBack(dq, g.dq, a.qhat, a.qrstd, n, d.H, l.attn.qNorm)
		}
		linearBack(w.dh, dq, lw.h1, n, l.attn.q, l.attn.qb, true)
	}
	if doK {
		dk := g.dk
		if clip > 0 {
			clipBack(dk, a.kRaw, clip)
		}
		if l.attn.kNorm != nil && !after {
			dk = g.dkPre
			clear(dk)
			c.qkNormBack(dk, g.dk, a.khat, a.krstd, n, d.KV, l.attn.kNorm)
		}
		linearBack(w.dh, dk, lw.h1, n, l.attn.k, l.attn.kb, true)
	}
}

func (c *core[F]) embedBackward(w *workspace[F]) {
	d := c.d
	T := w.T
	for t, id := range w.tok {
		axpy(c.embed.g[int(id)*d.D:(int(id)+1)*d.D], 1, w.dx[t*d.D:(t+1)*d.D])
		if c.pos != nil {
			axpy(c.pos.g[(t%T)*d.D:(t%T+1)*d.D], 1, w.dx[t*d.D:(t+1)*d.D])
		}
		if c.routerEmbed != nil {
			r := d.RouterIn
			axpy(c.routerEmbed.g[int(id)*r:(int(id)+1)*r], 1, w.dRows[t*r:(t+1)*r])
		}
	}
}

// gatherRouterRows copies the router-table row of each token into rows ([len(tok),
// RouterIn]); every MoE layer's router reads them.
func (c *core[F]) gatherRouterRows(rows []F, tok []int32) {
	r := c.d.RouterIn
	for t, id := range tok {
		copy(rows[t*r:(t+1)*r], c.routerEmbed.w[int(id)*r:(int(id)+1)*r])
	}
}
