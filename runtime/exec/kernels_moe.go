package exec

// The MoE kernels: routing (scores, top-k, capacity, balance and z-loss), permutation into
// per-expert slots, the grouped expert products and the gated combination.

import (
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/moec-dev/moec/compiler/program"
)

// Route scores each token's experts, chooses its top k (ties to the lower index; under
// moe.groups among its best groups' experts), admits assignments to experts by capacity
// (every token's first choice before any second choice, in token order) and numbers each
// admitted assignment's slot in its expert in token order. Outputs: index, gates (renormalised when the model says so, then times its
// routed_scale), scores, lse, slot, kept, routed, and the balance and z-loss terms.
// slots is the program's static capacity per expert (0: from the capacity factor);
// packed numbers each assignment's row of a packed dispatch instead (kernels_rows.go): its
// expert's first row, the experts' kept counts before it, plus its slot. recomputed marks
// the same routing run again (recompute = full), which adds nothing to the step's terms.
func (k *Kernels) Route(z []float32, idx []int32, gates, sc, lse []float32, slot, kept, routed []int32, aux []float32, slots int, packed, recomputed bool) {
	k.route(nil, z, idx, gates, sc, lse, slot, kept, routed, aux, slots, packed, recomputed)
}

// route is Route with an optional per-expert selection bias (kernels_route_bias.go).
func (k *Kernels) route(bias, z []float32, idx []int32, gates, sc, lse []float32, slot, kept, routed []int32, aux []float32, slots int, packed, recomputed bool) {
	cfg := k.m.MoE
	E, K := k.d.E, k.d.K
	n := len(z) / E
	scale := float32(cfg.RoutedScaleOrOne())
	clear(routed)
	clear(kept)
	// Each token's scores and choice on the cores (they depend on the token alone); the
	// z-loss terms are added, and the assignments counted, in token order after.
	zterms := grow(&k.scratch.terms, n)
	parallel(n, func(t0, t1 int) {
		var few [8]int // top_k is small: the order lives on the stack
		order := few[:0]
		if K > len(few) {
			order = make([]int, 0, K)
		}
		order = order[:K]
		var fewBiased [64]float32 // the biased scores of aux-free balancing
		biased := fewBiased[:0]
		if bias != nil {
			if E > len(fewBiased) {
				biased = make([]float32, E)
			}
			biased = biased[:E]
		}
		for t := t0; t < t1; t++ {
			zt, st := z[t*E:(t+1)*E], sc[t*E:(t+1)*E]
			mx := math.Inf(-1)
			for _, v := range zt {
				mx = math.Max(mx, float64(v))
			}
			var sum float64
			for _, v := range zt {
				sum += math.Exp(float64(v) - mx)
			}
			l := mx + math.Log(sum)
			lse[t] = float32(l)
			zterms[t] = l * l
			for i, v := range zt {
				st[i] = program.RouterScore(cfg.Score, v, l)
			}
			if eps := cfg.SparsemixerEps; eps > 0 { // kernels_sparsemixer.go: its own gates
				g1, g2 := sparsemixerChoose(zt, eps, order)
				idx[t*K], idx[t*K+1], gates[t*K], gates[t*K+1] = int32(order[0]), int32(order[1]), g1, g2
				continue
			}
			if bias != nil {
				k.chooseBiased(st, bias, biased, order) // kernels_route_bias.go
			} else {
				k.chooseExperts(st, order) // top k, or within the best groups (kernels_route_groups.go)
			}
			var gs float32
			for j := 0; j < K; j++ {
				ex := order[j]
				idx[t*K+j] = int32(ex)
				gates[t*K+j] = st[ex]
				gs += st[ex]
			}
			if cfg.Normalize {
				for j := 0; j < K; j++ {
					gates[t*K+j] /= gs
				}
			}
			if scale != 1 { // routed_scale, after any renormalisation
				for j := 0; j < K; j++ {
					gates[t*K+j] *= scale
				}
			}
		}
	})
	var zsum float64
	for _, v := range zterms {
		zsum += v
	}
	for _, ex := range idx[:n*K] {
		routed[ex]++
	}
	capacity := slots // the program's static slots per expert
	if capacity <= 0 {
		capacity = n * K
		if cfg.CapacityFactor > 0 {
			capacity = int(math.Ceil(cfg.CapacityFactor * float64(n*K) / float64(E)))
		}
	}
	dropped := 0
	for j := 0; j < K; j++ {
		for t := 0; t < n; t++ {
			ex := idx[t*K+j]
			if int(kept[ex]) < capacity {
				kept[ex]++
				slot[t*K+j] = 0
			} else {
				slot[t*K+j] = -1
				dropped++
			}
		}
	}
	next := grow(&k.scratch.next, E)
	clear(next)
	if packed {
		for ex := 1; ex < E; ex++ {
			next[ex] = next[ex-1] + kept[ex-1]
		}
	}
	for t := 0; t < n; t++ {
		for j := 0; j < K; j++ {
			if slot[t*K+j] < 0 {
				continue
			}
			ex := idx[t*K+j]
			slot[t*K+j] = next[ex]
			next[ex]++
		}
	}
	var bal float64
	for ex := 0; ex < E; ex++ {
		var pe float64
		for t := 0; t < n; t++ {
			pe += float64(sc[t*E+ex])
		}
		bal += float64(routed[ex]) / float64(n*K) * pe / float64(n)
	}
	aux[0] = float32(float64(E) * bal)
	aux[1] = float32(zsum / float64(n))
	if recomputed {
		return // the same routing again (recompute = full): already counted
	}
	// Reported as the step's mean over micro-batches (and, summed over ranks, replicas).
	k.stats.Balance += float64(E) * bal * k.lossScale()
	k.stats.ZLoss += zsum / float64(n) * k.lossScale()
	k.stats.Dropped += dropped
}

func taken(chosen []int, ex int) bool {
	for _, c := range chosen {
		if c == ex {
			return true
		}
	}
	return false
}

// RouteBwd: the logits' gradient dz (written or added to) from the gates', the balance
// loss's and the z-loss's.
func (k *Kernels) RouteBwd(dg, z []float32, idx []int32, gates, sc, lse []float32, routed []int32, dz []float32, acc bool) {
	cfg := k.m.MoE
	E, K := k.d.E, k.d.K
	n := len(z) / E
	scale := k.gradSeed()
	routedScale := float32(cfg.RoutedScaleOrOne())
	fe := grow(&k.scratch.fe, E)
	for ex := range fe {
		fe[ex] = cfg.BalanceLoss * float64(E) * float64(routed[ex]) / float64(n*K) / float64(n) * scale
	}
	for t := 0; t < n; t++ {
		dst := grow(&k.scratch.dst, E)
		st, zt := sc[t*E:(t+1)*E], z[t*E:(t+1)*E]
		for ex := range dst {
			dst[ex] = float32(fe[ex])
		}
		ix, gt, dgt := idx[t*K:(t+1)*K], gates[t*K:(t+1)*K], dg[t*K:(t+1)*K]
		// The gates are routedScale·g: g's gradient is routedScale·dg, and Σ dg·gate is
		// Σ (routedScale·dg)·g.
		switch {
		case cfg.SparsemixerEps > 0: // added to the logits' gradient below
		case cfg.Normalize:
			var sum, gdot float32
			for j, ex := range ix {
				sum += st[ex]
				gdot += dgt[j] * gt[j]
			}
			for j, ex := range ix {
				dst[ex] += (routedScale*dgt[j] - gdot) / sum
			}
		default:
			for j, ex := range ix {
				dst[ex] += routedScale * dgt[j]
			}
		}
		program.RouterScoreGrad(cfg.Score, st, dst)
		if eps := cfg.SparsemixerEps; eps > 0 {
			sparsemixerGrad(zt, eps, ix, gt, dgt, dst)
		}
		if cfg.ZLoss != 0 {
			c := cfg.ZLoss * 2 * float64(lse[t]) / float64(n) * scale
			for ex, v := range zt {
				dst[ex] += float32(c * math.Exp(float64(v)-float64(lse[t])))
			}
		}
		row := dz[t*E : (t+1)*E]
		if acc {
			for ex, v := range dst {
				row[ex] += v
			}
		} else {
			copy(row, dst)
		}
	}
}

// Permute copies each admitted assignment's token row into its expert's slot of send
// ([E, C, D]) and records in sendFill how many slots of each expert it filled. C = 0
// marks a packed send ([rows, D], each assignment's row its slot): the fill records each
// expert's rows and first row.
func (k *Kernels) Permute(h []float32, idx, slot []int32, send []float32, C, D int, sendFill *RowFill) {
	K := k.d.K
	if C == 0 {
		k.permutePacked(h, idx, slot, send, D, sendFill)
		return
	}
	// The route numbers an expert's slots in order: those below its count are filled.
	f := sendFill.record(C)
	counts := grow(&f.counts, len(send)/(C*D))
	clear(counts)
	if clearsPad(sendFill) {
		clear(send)
	}
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
		counts[ex] = max(counts[ex], s+1)
		t := a / K
		copy(send[(int(ex)*C+int(s))*D:(int(ex)*C+int(s)+1)*D], h[t*D:(t+1)*D])
	}
}

// permutePacked is Permute into a packed send.
func (k *Kernels) permutePacked(h []float32, idx, slot []int32, send []float32, D int, sendFill *RowFill) {
	K := k.d.K
	f := sendFill.recordPacked(len(send) / D)
	counts, offs := grow(&f.counts, k.d.E), grow(&f.offs, k.d.E)
	clear(counts)
	for a, ex := range idx {
		s := slot[a]
		if s < 0 {
			continue
		}
		counts[ex]++
		t := a / K
		copy(send[int(s)*D:(int(s)+1)*D], h[t*D:(t+1)*D])
	}
	// The route numbers the experts' rows in expert order from row 0.
	var next int32
	for ex, c := range counts {
		offs[ex] = next
		next += c
	}
	if clearsPad(sendFill) {
		clear(send[min(int(next)*D, len(send)):])
	}
}

// dispatchDims are the slots per expert block (C) and the width (D) of a dispatch buffer
// of shape: [E, C, D], or packed [rows, D] (C = 0; its rows are numbered from the buffer's
// start).
func dispatchDims(shape []int) (C, D int) {
	if len(shape) == 2 {
		return 0, shape[1]
	}
	return shape[1], shape[2]
}

// PermuteBwd scatter-adds the slots' gradients back to the tokens' rows of dh (C = 0:
// packed, each assignment's row its slot).
func (k *Kernels) PermuteBwd(ds []float32, idx, slot []int32, dh []float32, C, D int, acc bool) {
	K := k.d.K
	if !acc {
		clear(dh)
	}
	if rowsVec(D) {
		parallel(len(idx)/K, func(t0, t1 int) { permuteBwdVec(ds, idx, slot, dh, t0, t1, K, C, D) })
		return
	}
	eachAssignment(idx, slot, K, C, D, func(_, t, row int) {
		if row < 0 {
			return
		}
		dst := dh[t*D : (t+1)*D]
		for i, v := range ds[row : row+D] {
			dst[i] += v
		}
	})
}

// eachAssignment runs body for every (token, k) assignment a of a route, by token over
// the cores (a token's assignments in order, on one goroutine): t is the token and row
// the offset of the assignment's slot in an expert-major buffer of C slots per expert
// (C = 0: packed, the slot is the row) and width D, or -1 for an assignment dropped.
func eachAssignment(idx, slot []int32, K, C, D int, body func(a, t, row int)) {
	parallel(len(idx)/K, func(lo, hi int) {
		for a := lo * K; a < hi*K; a++ {
			row := -1
			if s := slot[a]; s >= 0 {
				row = (int(idx[a])*C + int(s)) * D
			}
			body(a, a/K, row)
		}
	})
}

// experts splits a grouped product's parameter inputs into each expert's weight and bias.
func (e *Executor) experts(bufs []int) (w, b [][]float32, out, in int) {
	w, b = e.scratch.w[:0], e.scratch.b[:0]
	defer func() { e.scratch.w, e.scratch.b = w, b }()
	for _, i := range bufs {
		buf := e.p.Buffers[i]
		if len(buf.Shape) == 1 { // a bias (a unified-cache gradient copy names no parameter)
			b[len(b)-1] = e.f32[i]
			continue
		}
		w = append(w, e.f32[i])
		b = append(b, nil)
		out, in = buf.Shape[0], buf.Shape[1]
	}
	return w, b, out, in
}

// GroupedMM: each expert's filled rows of x (xFill; all rows when unknown) times its
// weight w[ex] ([o, kk]), plus its bias b[ex] where b (or b[ex]) is not nil; y's padding
// is cleared and its fill recorded in yFill. With skipEmpty (an inference program's
// grouped product whose input no counts reach) the zero rows are found and skipped. The
// products are the rank's (float32, bfloat16 or half: SetBF16Products, SetFP16Products),
// as the executor runs grouped_matmul.
func (k *Kernels) GroupedMM(x, y []float32, w, b [][]float32, o, kk int, xFill, yFill *RowFill, skipEmpty bool) {
	groupedMM(k.product(), &k.scratch.order, x, y, w, b, o, kk, xFill, yFill, skipEmpty)
}

// groupedMM is GroupedMM through the product gemm.
func groupedMM(gemm product, order *[]int32, x, y []float32, w, b [][]float32, o, k int, xFill, yFill *RowFill, skipEmpty bool) {
	R := len(x) / (len(w) * k)
	f := ofRows(known(xFill, len(x), len(w)), len(x)/k)
	setFill(yFill, f)
	if f == nil && skipEmpty {
		// No counts reach this buffer (an all-to-all's output): an inference program asks
		// for its empty slots, zero rows, to be found and skipped, expert by expert.
		eachExpert(len(w), func(int) int { return R }, func(ex int) {
			first := ex * R
			filledRowsMM(x[first*k:(first+R)*k], w[ex], y[first*o:(first+R)*o], R, o, k)
			if b != nil && b[ex] != nil {
				addBias(y[first*o:(first+R)*o], b[ex], R)
			}
		})
		return
	}
	eachExpertPart(order, len(w), func(ex int) int { _, n := span(f, ex, R); return n }, func(ex, r0, r1 int) {
		first, _ := span(f, ex, R)
		if r0 == 0 && clearsPad(yFill) {
			lo, hi := padding(f, ex, R)
			clear(y[lo*o : hi*o])
		}
		if r1 <= r0 {
			return
		}
		ye := y[(first+r0)*o : (first+r1)*o]
		gemm(false, true, r1-r0, o, k, 1, x[(first+r0)*k:(first+r1)*k], k, w[ex], k, 0, ye, o)
		if b != nil && b[ex] != nil {
			addBias(ye, b[ex], r1-r0)
		}
	})
}

// GroupedMMDW: each expert's weight gradient w[ex] (+)= dyᵀ·x and bias gradient b[ex]
// (where not nil) (+)= Σ dy over its filled rows (the fill of x, else of dy; the padding's
// dy is zero). The parts are bands of each weight's output rows; the products are the
// rank's, as GroupedMM's.
func (k *Kernels) GroupedMMDW(dy, x []float32, w, b [][]float32, o, kk int, acc bool, dyFill, xFill *RowFill) {
	groupedMMDW(k.product(), &k.scratch.order, dy, x, w, b, o, kk, acc, dyFill, xFill)
}

// groupedMMDW is GroupedMMDW through the product gemm.
func groupedMMDW(gemm product, order *[]int32, dy, x []float32, w, b [][]float32, o, k int, acc bool, dyFill, xFill *RowFill) {
	R := len(x) / (len(w) * k)
	f := known(xFill, len(x), len(w))
	if f == nil {
		f = known(dyFill, len(dy), len(w))
	}
	f = ofRows(f, len(x)/k)
	eachExpertPart(order, len(w), func(ex int) int {
		if _, n := span(f, ex, R); n == 0 {
			return 0 // nothing but clearing: one part
		}
		return o
	}, func(ex, o0, o1 int) {
		first, n := span(f, ex, R)
		if n == 0 {
			if !acc {
				clear(w[ex])
				if b != nil && b[ex] != nil {
					clear(b[ex])
				}
			}
			return
		}
		dye, xe := dy[first*o:(first+n)*o], x[first*k:(first+n)*k]
		gemm(true, false, o1-o0, k, n, 1, dye[o0:], o, xe, k, beta(acc), w[ex][o0*k:o1*k], k)
		if b != nil && b[ex] != nil {
			bias := b[ex][o0:o1]
			if !acc {
				clear(bias)
			}
			for r := 0; r < n; r++ {
				for j, g := range dye[r*o+o0 : r*o+o1] {
					bias[j] += g
				}
			}
		}
	})
}

// GroupedMMDX: each expert's filled rows (dyFill) of dx (+)= dy·W, dx's padding cleared
// when written and its fill recorded in dxFill; the products are the rank's, as
// GroupedMM's.
func (k *Kernels) GroupedMMDX(dy, dx []float32, w [][]float32, o, kk int, acc bool, dyFill, dxFill *RowFill) {
	groupedMMDX(k.product(), &k.scratch.order, dy, dx, w, o, kk, acc, dyFill, dxFill)
}

// groupedMMDX is GroupedMMDX through the product gemm.
func groupedMMDX(gemm product, order *[]int32, dy, dx []float32, w [][]float32, o, k int, acc bool, dyFill, dxFill *RowFill) {
	R := len(dx) / (len(w) * k)
	f := ofRows(known(dyFill, len(dy), len(w)), len(dx)/k)
	setFill(dxFill, f)
	eachExpertPart(order, len(w), func(ex int) int { _, n := span(f, ex, R); return n }, func(ex, r0, r1 int) {
		first, _ := span(f, ex, R)
		if r0 == 0 && !acc && clearsPad(dxFill) {
			lo, hi := padding(f, ex, R)
			clear(dx[lo*k : hi*k])
		}
		if r1 <= r0 {
			return
		}
		gemm(false, false, r1-r0, k, o, 1, dy[(first+r0)*o:(first+r1)*o], o, w[ex], k, beta(acc), dx[(first+r0)*k:(first+r1)*k], k)
	})
}

// Combine adds each admitted assignment's expert output times its gate to its token's row
// (C = 0: a packed back, each assignment's row its slot).
func (k *Kernels) Combine(back []float32, idx, slot []int32, gates, y []float32, C, D int) {
	K := k.d.K
	if rowsVec(D) {
		parallel(len(idx)/K, func(t0, t1 int) { combineVec(back, idx, slot, gates, y, t0, t1, K, C, D) })
		return
	}
	clear(y)
	eachAssignment(idx, slot, K, C, D, func(a, t, row int) {
		if row < 0 {
			return
		}
		g, dst := gates[a], y[t*D:(t+1)*D]
		for i, v := range back[row : row+D] {
			dst[i] += g * v
		}
	})
}

// CombineBwd: the expert outputs' gradient dback (its padding zero; the fill of back,
// backFill, recorded in dbackFill) and the gates' dgates (written or added to).
func (k *Kernels) CombineBwd(dy, back []float32, idx, slot []int32, gates, dback, dgates []float32, C, D int, accGates bool, backFill, dbackFill *RowFill) {
	K := k.d.K
	experts := 0 // packed: the fill's
	if C > 0 {
		experts = len(back) / (C * D)
	}
	f := known(backFill, len(back), experts)
	if f == nil || clearsPad(dbackFill) {
		// The padding's gradient is zero: readers without counts compute every row.
		clear(dback)
	}
	setFill(dbackFill, f)
	// Every assignment writes its own slot and gate.
	if rowsVec(D) {
		parallel(len(idx)/K, func(t0, t1 int) {
			combineBwdVec(dy, back, idx, slot, gates, dback, dgates, t0, t1, K, C, D, accGates)
		})
		return
	}
	eachAssignment(idx, slot, K, C, D, func(a, t, row int) {
		var dg float32
		if row >= 0 {
			o := back[row : row+D]
			var sum float64 // in double, as the vector kernel (vec.CombineBackward)
			for i, v := range dy[t*D : (t+1)*D] {
				sum += float64(v * o[i])
				dback[row+i] = gates[a] * v
			}
			dg = float32(sum)
		}
		if accGates {
			dgates[a] += dg
		} else {
			dgates[a] = dg
		}
	})
}

// eachExpert runs body for every expert, the experts split over the cores in contiguous
// runs of about equal rows (each expert's products on one goroutine, as their outputs are
// disjoint): per-expert products are small, and one product at a time split over the
// cores leaves them waiting on each other.
func eachExpert(experts int, rows func(ex int) int, body func(ex int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers <= 1 || experts <= 1 {
		for ex := 0; ex < experts; ex++ {
			body(ex)
		}
		return
	}
	total := 0
	for ex := 0; ex < experts; ex++ {
		total += rows(ex)
	}
	var wg sync.WaitGroup
	start, acc, run := 0, 0, 1
	for ex := 0; ex < experts; ex++ {
		acc += rows(ex)
		// Close run r when the rows so far reach r shares of the total (the last run
		// takes the rest).
		if ex == experts-1 || acc*workers >= total*run {
			run++
			lo, hi := start, ex+1
			wg.Add(1)
			go func() {
				defer wg.Done()
				for e := lo; e < hi; e++ {
					body(e)
				}
			}()
			start = ex + 1
		}
	}
	wg.Wait()
}

// eachExpertPart runs body over the parts of every expert's work: expert ex's size(ex)
// units (rows of its tokens, or output rows of its weight) cut into bands of about
// equal size, which the cores take as each comes free (experts differ in load by their
// tokens, and one core with the largest expert left would idle the others). Every
// expert gets at least one part, [0, 0) when its size is 0, so that a part can clear
// what the expert writes; a part [0, hi) is always its expert's first. Nothing is
// allocated: part j of expert ex is task ex·most+j of a grid as wide as the most parts
// any expert has, and the grid's empty cells are skipped.
func eachExpertPart(scratch *[]int32, experts int, size func(ex int) int, body func(ex, lo, hi int)) {
	total, largest := 0, 0
	for ex := 0; ex < experts; ex++ {
		n := size(ex)
		total += n
		largest = max(largest, n)
	}
	// About eight parts a core, none below minPartRows (smaller products lose more to
	// their setup than balance gains).
	workers := runtime.GOMAXPROCS(0)
	part := max(minPartRows, (total+8*workers-1)/(8*workers))
	if experts >= 2*workers {
		part = max(minPartRows, (total+2*workers-1)/(2*workers))
	}
	partsOf := func(n int) int { return max(1, (n+part-1)/part) }
	most := partsOf(largest)
	// The largest experts first: the cores then end together (longest processing time
	// first), whatever the routing's spread. The order lives in the caller's scratch (an
	// executor's), or, without one, in a slice of its own.
	if scratch == nil {
		scratch = new([]int32)
	}
	order := grow(scratch, experts)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return size(int(b)) - size(int(a)) })
	eachIndex(experts*most, func(i int) {
		ex, j := int(order[i/most]), i%most
		n := size(ex)
		if parts := partsOf(n); j < parts {
			body(ex, j*n/parts, (j+1)*n/parts)
		}
	})
}

// minPartRows is the fewest rows (or output rows) of a part eachExpertPart cuts.
const minPartRows = 32
