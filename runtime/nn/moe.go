package nn

import (
	"math"
	"slices"

	"github.com/moec-dev/moec/compiler/program"
)

// moeWS holds one MoE layer's routing and expert activations for up to n tokens.
type moeWS[F Float] struct {
	z, s    []F     // [n, E] router logits and scores
	lse     []F     // [n] log-sum-exp of z (z-loss)
	idx     []int32 // [n, K] chosen experts, best first
	gate    []F     // [n, K] combine weights after renormalisation
	rowOf   []int32 // [n, K] row of the assignment in the expert-sorted buffers, -1 if dropped
	routed  []int   // [E] assignments before capacity
	cursor  []int   // [E] next free sorted row of each expert while dispatching
	gScore  []F     // [groups] group scores of one token (group routing)
	gIdx    []int32 // [top_k_groups] its chosen groups
	biased  []F     // [E] one token's scores plus the selection bias (aux_free_bias)
	fe      []float64
	kept    []int // [E] assignments the expert processed
	offs    []int // [E+1] first sorted row of each expert
	xs, out []F   // [n·K, D] expert inputs and outputs, sorted by expert
	ex      ffnWS[F]
	shared  []*ffnWS[F]
	ds      []F // [n, E] gradient of the scores
	dg      []F // [n, K] gradient of the gates
	dr      []F // [n, RouterIn]
	// rows and dRows are the tokens' router-table rows and the sum of every layer's
	// gradient for them (token-embedding routing): shared by the layers of one workspace
	// or decoder, set by its owner.
	rows, dRows []F

	balance, zloss float64
	dropped        int

	gated *sharedGateWS[F] // the shared gate's buffers (shared_gate.go), nil without one
}

func newMoEWS[F Float](d dims, mp *moeParams[F], n int) *moeWS[F] {
	nk := n * d.K
	w := &moeWS[F]{
		z: make([]F, n*d.E), s: make([]F, n*d.E), lse: make([]F, n), ds: make([]F, n*d.E),
		idx: make([]int32, nk), gate: make([]F, nk), rowOf: make([]int32, nk),
		dg: make([]F, nk), routed: make([]int, d.E), cursor: make([]int, d.E), fe: make([]float64, d.E), kept: make([]int, d.E), offs: make([]int, d.E+1),
		xs: make([]F, nk*d.D), out: make([]F, nk*d.D), dr: make([]F, n*d.RouterIn),
	}
	if d.Groups > 0 {
		w.gScore, w.gIdx = make([]F, d.Groups), make([]int32, d.TopKGroups)
	}
	if mp.correction != nil {
		w.biased = make([]F, d.E)
	}
	w.ex = *newFFNWS(mp.experts[0], nk)
	for _, s := range mp.shared {
		w.shared = append(w.shared, newFFNWS(s, n))
	}
	return w
}

// routeOptions fixes the discrete choices of one MoE forward.
type routeOptions struct {
	dropless bool // ignore capacity_factor (generation)
}

// moeForward routes n tokens (hidden state x, token ids tok), runs the chosen experts on
// their tokens only and adds the weighted combination, plus shared experts, to y.
func (c *core[F]) moeForward(mp *moeParams[F], w *moeWS[F], x []F, tok []int32, y []F, n int, ro routeOptions) {
	d := c.d
	c.route(mp, w, x, n)
	w.zloss /= float64(n)
	// Capacity: first choices of all tokens are placed before second choices, in token
	// order, so a token loses its less preferred experts first (GShard's priority).
	capacity := c.capacity(n, ro)
	for j := 0; j < d.K; j++ {
		for t := 0; t < n; t++ {
			e := w.idx[t*d.K+j]
			if w.kept[e] < capacity {
				w.kept[e]++
				w.rowOf[t*d.K+j] = 0
			} else {
				w.rowOf[t*d.K+j] = -1
				w.dropped++
			}
		}
	}
	s := w.s[:n*d.E]
	var bal float64
	for e := 0; e < d.E; e++ {
		var pe float64
		for t := 0; t < n; t++ {
			pe += float64(s[t*d.E+e])
		}
		bal += float64(w.routed[e]) / float64(n*d.K) * pe / float64(n)
	}
	w.balance = float64(d.E) * bal
	c.sortRows(w, x, n)
	gateInput := c.cfg.MoE.GateInput // gate_input.go
	if gateInput {
		c.gateInputs(w, n)
	}
	c.runExperts(mp, w, 0, d.E)
	if gateInput {
		c.combineUngated(w, y, n)
	} else {
		c.combine(w, y, n)
	}
	c.sharedForward(mp, w, x, y, n)
}

// capacity is how many assignments an expert takes from the n tokens of a forward.
func (c *core[F]) capacity(n int, ro routeOptions) int {
	cfg, d := c.cfg.MoE, c.d
	if ro.dropless || cfg.Dropless() {
		return n * d.K
	}
	return int(math.Ceil(cfg.CapacityFactor * float64(n*d.K) / float64(d.E)))
}

// sortRows copies the kept assignments' inputs into xs, grouped by expert (offs from
// kept), and records each assignment's row in rowOf.
func (c *core[F]) sortRows(w *moeWS[F], x []F, n int) {
	d := c.d
	w.offs[0] = 0
	for e := 0; e < d.E; e++ {
		w.offs[e+1] = w.offs[e] + w.kept[e]
	}
	cursor := w.cursor
	copy(cursor, w.offs[:d.E])
	for t := 0; t < n; t++ {
		for j := 0; j < d.K; j++ {
			if w.rowOf[t*d.K+j] < 0 {
				continue
			}
			e := w.idx[t*d.K+j]
			row := cursor[e]
			cursor[e]++
			w.rowOf[t*d.K+j] = int32(row)
			copy(w.xs[row*d.D:(row+1)*d.D], x[t*d.D:(t+1)*d.D])
		}
	}
}

// expertSplitWork is the rows·hidden·width of the experts' products below which
// runExperts runs them on one core (a token's expert at batch 1 is 65,536).
const expertSplitWork = 1 << 18

// runExperts runs experts [e0, e1) on their sorted rows of xs into out.
func (c *core[F]) runExperts(mp *moeParams[F], w *moeWS[F], e0, e1 int) {
	d := c.d
	clear(w.out[w.offs[e0]*d.D : w.offs[e1]*d.D]) // ffnForward adds its output
	if (w.offs[e1]-w.offs[e0])*d.EHidden*d.D < expertSplitWork {
		c.runExpertRange(mp, w, e0, e1) // a decoding step's few rows: less work than starting goroutines
		return
	}
	parallel(e1-e0, func(_, lo, hi int) { c.runExpertRange(mp, w, e0+lo, e0+hi) })
}

// runExpertRange runs experts [e0, e1) on one core.
func (c *core[F]) runExpertRange(mp *moeParams[F], w *moeWS[F], e0, e1 int) {
	d := c.d
	for e := e0; e < e1; e++ {
		r0, r1 := w.offs[e], w.offs[e+1]
		if r0 == r1 {
			continue
		}
		ffnForward(mp.experts[e-c.expertFirst], c.expertWS(w, r0, r1), w.xs[r0*d.D:r1*d.D], w.out[r0*d.D:r1*d.D], r1-r0)
	}
}

// combine adds each token's gate-weighted expert outputs to y.
func (c *core[F]) combine(w *moeWS[F], y []F, n int) {
	if n == 1 { // a decoding step's token: no closure to allocate
		c.combineRows(w, y, 0, 1)
		return
	}
	parallel(n, func(_, lo, hi int) { c.combineRows(w, y, lo, hi) })
}

// combineRows is combine on tokens [lo, hi).
func (c *core[F]) combineRows(w *moeWS[F], y []F, lo, hi int) {
	d := c.d
	for t := lo; t < hi; t++ {
		yt := y[t*d.D : (t+1)*d.D]
		for j := 0; j < d.K; j++ {
			if row := w.rowOf[t*d.K+j]; row >= 0 {
				axpy(yt, w.gate[t*d.K+j], w.out[int(row)*d.D:(int(row)+1)*d.D])
			}
		}
	}
}

// route scores n tokens and chooses their experts: router logits z, scores s, the chosen
// experts idx and their gates, the per-expert assignment counts routed, and the sum of
// squared log-sum-exps in zloss (the caller divides by the tokens it averages over).
func (c *core[F]) route(mp *moeParams[F], w *moeWS[F], x []F, n int) {
	d := c.d
	cfg := c.cfg.MoE
	r := x
	if mp.routerEmbed != nil {
		r = w.rows[:n*d.RouterIn] // the tokens' rows of the router table, gathered once
	}
	z, s := w.z[:n*d.E], w.s[:n*d.E]
	linear(z, r, n, mp.gate, mp.gateB, false)
	clear(w.routed)
	clear(w.kept)
	w.balance, w.zloss, w.dropped = 0, 0, 0
	// routed_scale multiplies the gates after any renormalisation (DeepSeek's
	// routed_scaling_factor); routerBack undoes it on their gradients.
	scale := F(cfg.RoutedScaleOrOne())
	for t := 0; t < n; t++ {
		zt, st := z[t*d.E:(t+1)*d.E], s[t*d.E:(t+1)*d.E]
		mx := math.Inf(-1)
		for _, v := range zt {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range zt {
			sum += math.Exp(float64(v) - mx)
		}
		lse := mx + math.Log(sum)
		w.lse[t] = F(lse)
		w.zloss += lse * lse
		for e, v := range zt {
			st[e] = program.RouterScore(cfg.Score, v, lse)
		}
		idx, gate := w.idx[t*d.K:(t+1)*d.K], w.gate[t*d.K:(t+1)*d.K]
		if cfg.SparsemixerEps > 0 { // sparsemixer.go: its own gates, from the logits
			sparsemixerRoute(zt, cfg.SparsemixerEps, idx, gate)
			for _, e := range idx {
				w.routed[e]++
			}
			continue
		}
		if mp.correction != nil {
			c.chooseBiased(mp, w, st, idx) // routing_bias.go
		} else if d.Groups > 0 {
			// Node-limited routing (DeepSeek-V2): a group scores its best expert; the token
			// chooses among the experts of its top_k_groups best groups only.
			size := d.E / d.Groups
			for g := range w.gScore {
				w.gScore[g] = slices.Max(st[g*size : (g+1)*size])
			}
			topK(w.gScore, w.gIdx)
			topKIn(st, idx, size, w.gIdx)
		} else {
			topK(st, idx)
		}
		var gs F
		for j, e := range idx {
			gate[j] = st[e]
			gs += st[e]
			w.routed[e]++
		}
		if cfg.Normalize {
			for j := range gate {
				gate[j] /= gs
			}
		}
		if scale != 1 {
			for j := range gate {
				gate[j] *= scale
			}
		}
	}
}

// expertWS is the window of the sorted expert activations that rows [r0, r1) use.
func (c *core[F]) expertWS(w *moeWS[F], r0, r1 int) *ffnWS[F] {
	h := c.d.EHidden
	v := &ffnWS[F]{a: w.ex.a[r0*h : r1*h], h: w.ex.h[r0*h : r1*h], inference: w.ex.inference}
	if w.ex.u != nil {
		v.u = w.ex.u[r0*h : r1*h]
	}
	return v
}

// topK writes the indices of the len(idx) largest scores, best first; ties go to the lower
// index, so the choice is deterministic.
func topK[F Float](s []F, idx []int32) { topKIn(s, idx, 1, nil) }

// topKIn is topK restricted to the experts of the listed groups (groups of size
// consecutive experts); a nil list allows every expert.
func topKIn[F Float](s []F, idx []int32, size int, groups []int32) {
	for j := range idx {
		best := -1
		for e, v := range s {
			if groups != nil && !slices.Contains(groups, int32(e/size)) {
				continue
			}
			taken := false
			for _, p := range idx[:j] {
				if int(p) == e {
					taken = true
					break
				}
			}
			if !taken && (best < 0 || v > s[best]) {
				best = e
			}
		}
		idx[j] = int32(best)
	}
}

// moeBackward takes dy (gradient of the layer output) and writes the gradient of the hidden
// input x into dx (overwriting it), accumulating expert, router and router-embedding
// gradients. balanceCoef and zCoef scale the auxiliary losses' gradients.
func (c *core[F]) moeBackward(mp *moeParams[F], w *moeWS[F], x []F, tok []int32, dy, dx []F, n int, balanceCoef, zCoef float64) {
	d := c.d
	if c.cfg.MoE.GateInput { // gate_input.go
		c.ungatedGrads(w, dy, n)
		c.runExpertsBack(mp, w, 0, d.E)
		c.gateInputGrads(w, x, n)
	} else {
		c.gateGrads(w, dy, n)
		c.runExpertsBack(mp, w, 0, d.E)
	}
	c.combineBack(w, dx, n)
	c.sharedBackward(mp, w, x, dy, dx, n)
	// The balance loss's gradient per score column, the same for every token.
	for e := range w.fe {
		w.fe[e] = balanceCoef * float64(d.E) * float64(w.routed[e]) / float64(n*d.K) / float64(n)
	}
	c.routerBack(mp, w, x, dx, n, zCoef)
}

// routerBack back-propagates the gates' gradients (dg), the balance loss's (w.fe, per
// expert) and the z-loss's through the scores and the router into dx, or into the router
// rows' gradient (w.dRows) for token-embedding routing.
func (c *core[F]) routerBack(mp *moeParams[F], w *moeWS[F], x []F, dx []F, n int, zCoef float64) {
	d := c.d
	cfg := c.cfg.MoE
	// Scores get the gates' gradient and the balance loss's; logits get the
	// score function's Jacobian plus the z-loss.
	ds, z, s := w.ds[:n*d.E], w.z[:n*d.E], w.s[:n*d.E]
	fe := w.fe
	scale := F(cfg.RoutedScaleOrOne())
	for t := 0; t < n; t++ {
		dst, st, zt := ds[t*d.E:(t+1)*d.E], s[t*d.E:(t+1)*d.E], z[t*d.E:(t+1)*d.E]
		for e := range dst {
			dst[e] = F(fe[e])
		}
		idx, gate, dg := w.idx[t*d.K:(t+1)*d.K], w.gate[t*d.K:(t+1)*d.K], w.dg[t*d.K:(t+1)*d.K]
		// The gates are scale·g: g's gradient is scale·dg, and Σ dg·gate is Σ (scale·dg)·g.
		// Sparsemixer's gates are functions of the logits, added after the scores' Jacobian.
		switch {
		case cfg.SparsemixerEps > 0:
		case cfg.Normalize:
			var sum, gdot F
			for j, e := range idx {
				sum += st[e]
				gdot += dg[j] * gate[j]
			}
			for j, e := range idx {
				dst[e] += (scale*dg[j] - gdot) / sum
			}
		default:
			for j, e := range idx {
				dst[e] += scale * dg[j]
			}
		}
		// dz, written over ds.
		program.RouterScoreGrad(cfg.Score, st, dst)
		if cfg.SparsemixerEps > 0 {
			sparsemixerBack(zt, cfg.SparsemixerEps, idx, gate, dg, dst)
		}
		if zCoef != 0 {
			k := zCoef * 2 * float64(w.lse[t]) / float64(n)
			for e, v := range zt {
				dst[e] += F(k * math.Exp(float64(v)-float64(w.lse[t])))
			}
		}
	}
	if mp.routerEmbed == nil {
		linearBack(dx, ds, x, n, mp.gate, mp.gateB, true)
		return
	}
	r := w.rows[:n*d.RouterIn]
	dr := w.dr[:n*d.RouterIn]
	linearBack(dr, ds, r, n, mp.gate, mp.gateB, false)
	// Every MoE layer reads the same rows; their gradients meet in dRows, which the
	// embedding's backward scatters into the table.
	axpy(w.dRows[:n*d.RouterIn], 1, dr)
}

// gateGrads writes each kept assignment's gate gradient into dg and turns its out row into
// the gradient of the expert's output (gate · dy).
func (c *core[F]) gateGrads(w *moeWS[F], dy []F, n int) {
	d := c.d
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			dyt := dy[t*d.D : (t+1)*d.D]
			for j := 0; j < d.K; j++ {
				w.dg[t*d.K+j] = 0
				row := int(w.rowOf[t*d.K+j])
				if row < 0 {
					continue
				}
				o := w.out[row*d.D : (row+1)*d.D]
				w.dg[t*d.K+j] = dot(dyt, o)
				g := w.gate[t*d.K+j]
				for i, v := range dyt {
					o[i] = g * v
				}
			}
		}
	})
}

// runExpertsBack runs experts [e0, e1) backward on their rows: out holds the output
// gradients, and xs receives the input gradients once the weight gradients used it.
func (c *core[F]) runExpertsBack(mp *moeParams[F], w *moeWS[F], e0, e1 int) {
	d := c.d
	parallel(e1-e0, func(_, lo, hi int) {
		for e := e0 + lo; e < e0+hi; e++ {
			r0, r1 := w.offs[e], w.offs[e+1]
			if r0 == r1 {
				continue
			}
			xs := w.xs[r0*d.D : r1*d.D]
			ffnBackwardInPlace(mp.experts[e-c.expertFirst], c.expertWS(w, r0, r1), xs, w.out[r0*d.D:r1*d.D], r1-r0)
		}
	})
}

// combineBack writes into dx the sum of each token's rows of input gradient.
func (c *core[F]) combineBack(w *moeWS[F], dx []F, n int) {
	d := c.d
	clear(dx[:n*d.D])
	parallel(n, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			dxt := dx[t*d.D : (t+1)*d.D]
			for j := 0; j < d.K; j++ {
				if row := int(w.rowOf[t*d.K+j]); row >= 0 {
					axpy(dxt, 1, w.xs[row*d.D:(row+1)*d.D])
				}
			}
		}
	})
}

// ffnBackwardInPlace is ffnBackward for an expert whose input buffer x receives its own
// gradient: the weight gradients are formed from x before x is overwritten.
func ffnBackwardInPlace[F Float](f *ffnParams[F], w *ffnWS[F], x, dy []F, n int) {
	m := n * f.hidden
	h := w.h[:m]
	linearBack(h, dy, h, n, f.second, f.secondB, false)
	var u []F
	if f.up != nil {
		u = w.u[:m]
	}
	a := w.a[:m]
	if f.clamp.on() {
		clampBackward(f.clamp, a, u, h, a, u)
	} else {
		activateBack(f.act, a, u, h, a, u)
	}
	addRows(f.firstB, a, n)
	if u != nil {
		addRows(f.upB, u, n)
	}
	d := f.first.shape[1]
	weightGemm(f.first, true, false, f.hidden, d, n, 1, a, f.hidden, x, d, 1, f.first.g, d)
	if u != nil {
		weightGemm(f.up, true, false, f.hidden, d, n, 1, u, f.hidden, x, d, 1, f.up.g, d)
	}
	weightGemm(f.first, false, false, n, d, f.hidden, 1, a, f.hidden, f.first.w, d, 0, x, d)
	if u != nil {
		weightGemm(f.up, false, false, n, d, f.hidden, 1, u, f.hidden, f.up.w, d, 1, x, d)
	}
}

// addRows accumulates the sum of the n rows of g into a bias gradient (nil: no bias).
func addRows[F Float](bias *tensor[F], g []F, n int) {
	if bias == nil {
		return
	}
	k := len(bias.g)
	for i := 0; i < n; i++ {
		axpy(bias.g, 1, g[i*k:(i+1)*k])
	}
}
