package nn

import (
	"fmt"
	"unsafe"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/dist"
)

// Shard places a model on one rank of a sharded run.
//
// Every rank runs its share of the global batch. What must not depend on how the batch is
// split is computed over all ranks: the MoE balance loss uses the whole batch's expert
// fractions and mean scores, and capacity is applied to the whole batch in the single-rank
// priority order (first choices before second choices, then by token in batch order, ranks
// holding consecutive slices of the batch), so every layout drops exactly the assignments
// a single rank would. With expert parallelism the rank holds only its experts; tokens are
// sent to the rank that owns their expert and the outputs come back (all-to-all dispatch
// and combine), and the same exchange runs in reverse for the gradients.
//
// Gradients a rank accumulates follow one convention whatever the layout: the trainer sums
// each gradient over the ranks that hold the tensor and divides by the number of ranks.
// Each rank's loss is the mean over its own tokens, so for equal shares this is the
// gradient of the mean over the whole batch, for experts too (whose gradient arrives from
// every rank of the expert-parallel group): no factor of the expert-parallel size.
type Shard struct {
	World dist.Comm // every rank of the run
	// EP is the expert-parallel group (nil or one rank: no expert parallelism). Its ranks
	// hold consecutive, equal ranges of experts in group-rank order.
	EP dist.Comm
}

// shardState is a sharded core's communicators and the per-layer exchange state.
type shardState[F Float] struct {
	world, ep dist.Comm
	epWorld   []int // world rank of each expert-parallel rank
	per       int   // experts per expert-parallel rank
	layers    map[int]*epLayer[F]
}

// epLayer is one MoE layer's routing statistics over all ranks and, with expert
// parallelism, the rows this rank received for its experts. Its buffers are sized once,
// for the layer's experts and the run's ranks, and reused by every step.
type epLayer[F Float] struct {
	ng       int       // tokens of the global batch
	routedG  []float64 // [E] assignments of every rank, before capacity
	scoreG   []float64 // [E] score sums of every rank
	keptBy   [][]int   // [world rank][E] assignments each rank's tokens keep
	keptG    []int     // [E] kept over all ranks
	dropped  int
	capacity int
	// stats is this rank's contribution to the routing all-gather (per choice and expert
	// the assignment counts, per expert the score sums, the z-loss sum, the token count),
	// gathered every rank's; base and seen place this rank's assignments in the global
	// priority order, pos counts per expert while doing so.
	stats, gathered []float64
	base, seen, pos []int
	// Owner side: rows received from each expert-parallel rank, grouped by source and then
	// by expert ([source][local expert][rows]), their outputs and expert activations.
	rows            int
	seg             [][]int // [source][local expert] first row
	segN            [][]int // [source][local expert] rows
	recv, recvOut   []F
	ex              ffnWS[F]
	sendCnt, sendOf []int // bytes per expert-parallel peer, from this rank's sorted rows
	recvCnt, recvOf []int // bytes per peer into recv
}

// NewSharded builds the model one rank of a sharded run holds: with expert parallelism
// only its own experts (named and initialised as in the whole model), everything else as
// New builds it.
func NewSharded(m *program.Model, seed int64, sh Shard) (*Model, error) {
	if sh.World == nil {
		return nil, fmt.Errorf("nn: a sharded model needs its world communicator")
	}
	d, err := resolveDims(m)
	if err != nil {
		return nil, err
	}
	first, count := 0, 0
	st := &shardState[float32]{world: sh.World, layers: map[int]*epLayer[float32]{}}
	if sh.EP != nil && sh.EP.Size() > 1 {
		p := sh.EP.Size()
		if d.E == 0 || d.E%p != 0 {
			return nil, fmt.Errorf("nn: %d expert-parallel ranks must divide the %d experts", p, d.E)
		}
		st.ep, st.per = sh.EP, d.E/p
		first, count = sh.EP.Rank()*st.per, st.per
		ws, err := dist.AllGatherRows(sh.EP, []int64{int64(sh.World.Rank())})
		if err != nil {
			return nil, fmt.Errorf("nn: expert-parallel group: %w", err)
		}
		for _, w := range ws {
			st.epWorld = append(st.epWorld, int(w[0]))
		}
	}
	c, err := newCoreExperts[float32](m, seed, first, count)
	if err != nil {
		return nil, err
	}
	c.shard = st
	out := &Model{c: c}
	for _, t := range c.params {
		out.params = append(out.params, &Param{Name: t.name, Shape: t.shape, W: t.w, G: t.g, Expert: t.expert})
	}
	return out, nil
}

// ExpertRange returns the routed experts the model holds per MoE layer.
func (m *Model) ExpertRange() (first, count int) { return m.c.expertFirst, m.c.expertCount }

// layer returns MoE layer li's state, sizing its buffers on first use.
func (s *shardState[F]) layer(li int, d dims) *epLayer[F] {
	if l := s.layers[li]; l != nil {
		return l
	}
	R, K, E := s.world.Size(), d.K, d.E
	l := &epLayer[F]{routedG: make([]float64, E), scoreG: make([]float64, E), keptG: make([]int, E),
		stats: make([]float64, K*E+E+2), gathered: make([]float64, R*(K*E+E+2)),
		base: make([]int, K*E), seen: make([]int, K*E), pos: make([]int, E), keptBy: make([][]int, R)}
	for r := range l.keptBy {
		l.keptBy[r] = make([]int, E)
	}
	if s.ep != nil {
		P := s.ep.Size()
		l.sendCnt, l.sendOf, l.recvCnt, l.recvOf = make([]int, P), make([]int, P), make([]int, P), make([]int, P)
		l.seg, l.segN = make([][]int, P), make([][]int, P)
		for p := range l.seg {
			l.seg[p], l.segN[p] = make([]int, s.per), make([]int, s.per)
		}
	}
	s.layers[li] = l
	return l
}

// eachSegment calls f for every block of received rows, a local expert per worker, so an
// expert's blocks (and the weight gradients they add up) stay on one goroutine.
func (L *epLayer[F]) eachSegment(per int, f func(le, r0, k int)) {
	parallel(per, func(_, lo, hi int) {
		for le := lo; le < hi; le++ {
			for p := range L.seg {
				if k := L.segN[p][le]; k > 0 {
					f(le, L.seg[p][le], k)
				}
			}
		}
	})
}

// moeForwardSharded is moeForward for a rank of a sharded run.
func (c *core[F]) moeForwardSharded(li int, mp *moeParams[F], w *moeWS[F], x []F, tok []int32, y []F, n int) error {
	if c.cfg.MoE.GateInput {
		return &UnsupportedError{Feature: "gates on the experts' inputs (moe.gate_input) with expert-parallel or sharded experts"}
	}
	d := c.d
	sh := c.shard
	L := sh.layer(li, d)
	c.route(mp, w, x, n)
	// One all-gather carries what the whole batch's capacity and balance loss need.
	K, E := d.K, d.E
	local := L.stats
	clear(local)
	for t := 0; t < n; t++ {
		for j := 0; j < K; j++ {
			local[j*E+int(w.idx[t*K+j])]++
		}
	}
	s := w.s[:n*E]
	for t := 0; t < n; t++ {
		for e := 0; e < E; e++ {
			local[K*E+e] += float64(s[t*E+e])
		}
	}
	local[K*E+E], local[K*E+E+1] = w.zloss, float64(n)
	if err := dist.AllGatherOf(sh.world, local, L.gathered); err != nil {
		return fmt.Errorf("nn: layer %d routing statistics: %w", li, err)
	}
	R, me, width := sh.world.Size(), sh.world.Rank(), len(local)
	row := func(r int) []float64 { return L.gathered[r*width : (r+1)*width] }
	L.ng = 0
	var zsum float64
	clear(L.scoreG)
	clear(L.routedG)
	for r := 0; r < R; r++ {
		v := row(r)
		L.ng += int(v[K*E+E+1])
		zsum += v[K*E+E]
		for e := 0; e < E; e++ {
			L.scoreG[e] += v[K*E+e]
			for j := 0; j < K; j++ {
				L.routedG[e] += v[j*E+e]
			}
		}
	}
	L.capacity = c.capacity(L.ng, routeOptions{})
	// Positions in the single-rank priority order: choice j of every rank before choice
	// j+1, ranks in order within a choice.
	clear(L.pos)
	for r := range L.keptBy {
		clear(L.keptBy[r])
	}
	for j := 0; j < K; j++ {
		for r := 0; r < R; r++ {
			v := row(r)
			for e := 0; e < E; e++ {
				cnt := int(v[j*E+e])
				if r == me {
					L.base[j*E+e] = L.pos[e]
				}
				L.keptBy[r][e] += max(0, min(cnt, L.capacity-L.pos[e]))
				L.pos[e] += cnt
			}
		}
	}
	L.dropped = 0
	var bal float64
	for e := 0; e < E; e++ {
		L.keptG[e] = min(L.capacity, L.pos[e])
		L.dropped += L.pos[e] - L.keptG[e]
		bal += L.routedG[e] / float64(L.ng*K) * L.scoreG[e] / float64(L.ng)
	}
	w.balance = float64(E) * bal
	w.zloss = zsum / float64(L.ng)
	clear(w.kept)
	clear(L.seen)
	w.dropped = 0
	for j := 0; j < K; j++ {
		for t := 0; t < n; t++ {
			e := int(w.idx[t*K+j])
			if L.base[j*E+e]+L.seen[j*E+e] < L.capacity {
				w.kept[e]++
				w.rowOf[t*K+j] = 0
			} else {
				w.rowOf[t*K+j] = -1
			}
			L.seen[j*E+e]++
		}
	}
	c.sortRows(w, x, n)
	if sh.ep == nil {
		c.runExperts(mp, w, 0, E)
	} else if err := c.expertsParallel(li, L, mp, w); err != nil {
		return err
	}
	c.combine(w, y, n)
	c.sharedForward(mp, w, x, y, n)
	return nil
}

// expertsParallel sends this rank's sorted rows to the ranks owning their experts, runs
// this rank's experts on what it received and returns the outputs into w.out.
func (c *core[F]) expertsParallel(li int, L *epLayer[F], mp *moeParams[F], w *moeWS[F]) error {
	d := c.d
	sh := c.shard
	P, per := sh.ep.Size(), sh.per
	var z F
	sz := int(unsafe.Sizeof(z))
	row := d.D * sz
	rows := 0
	for p := 0; p < P; p++ {
		L.sendOf[p] = w.offs[p*per] * row
		L.sendCnt[p] = (w.offs[(p+1)*per] - w.offs[p*per]) * row
		L.recvOf[p] = rows * row
		src := sh.epWorld[p]
		for le := 0; le < per; le++ {
			k := L.keptBy[src][c.expertFirst+le]
			L.seg[p][le], L.segN[p][le] = rows, k
			rows += k
		}
		L.recvCnt[p] = (rows - L.seg[p][0]) * row
	}
	L.rows = rows
	h := d.EHidden
	if cap(L.recv) < rows*d.D {
		c.buffers++
		L.recv, L.recvOut = make([]F, rows*d.D), make([]F, rows*d.D)
		L.ex = ffnWS[F]{a: make([]F, rows*h), h: make([]F, rows*h)}
		if mp.experts[0].up != nil {
			L.ex.u = make([]F, rows*h)
		}
	}
	L.recv, L.recvOut = L.recv[:rows*d.D], L.recvOut[:rows*d.D]
	if err := sh.ep.AllToAllV(dist.AsBytes(w.xs), L.sendCnt, L.sendOf, dist.AsBytes(L.recv), L.recvCnt, L.recvOf); err != nil {
		return fmt.Errorf("nn: layer %d dispatch: %w", li, err)
	}
	clear(L.recvOut)
	L.eachSegment(per, func(le, r0, k int) {
		ffnForward(mp.experts[le], L.window(r0, k, h), L.recv[r0*d.D:(r0+k)*d.D], L.recvOut[r0*d.D:(r0+k)*d.D], k)
	})
	if err := sh.ep.AllToAllV(dist.AsBytes(L.recvOut), L.recvCnt, L.recvOf, dist.AsBytes(w.out), L.sendCnt, L.sendOf); err != nil {
		return fmt.Errorf("nn: layer %d combine: %w", li, err)
	}
	return nil
}

func (L *epLayer[F]) window(r0, k, h int) *ffnWS[F] {
	v := &ffnWS[F]{a: L.ex.a[r0*h : (r0+k)*h], h: L.ex.h[r0*h : (r0+k)*h]}
	if L.ex.u != nil {
		v.u = L.ex.u[r0*h : (r0+k)*h]
	}
	return v
}

// moeBackwardSharded is moeBackward for a rank of a sharded run: the balance loss's
// gradient uses the whole batch's expert fractions, and expert gradients travel to and
// from the owning ranks.
func (c *core[F]) moeBackwardSharded(li int, mp *moeParams[F], w *moeWS[F], x []F, tok []int32, dy, dx []F, n int, balanceCoef, zCoef float64) error {
	d := c.d
	sh := c.shard
	L := sh.layer(li, d)
	c.gateGrads(w, dy, n)
	if sh.ep == nil {
		c.runExpertsBack(mp, w, 0, d.E)
	} else {
		h := d.EHidden
		if err := sh.ep.AllToAllV(dist.AsBytes(w.out), L.sendCnt, L.sendOf, dist.AsBytes(L.recvOut), L.recvCnt, L.recvOf); err != nil {
			return fmt.Errorf("nn: layer %d gradient dispatch: %w", li, err)
		}
		L.eachSegment(sh.per, func(le, r0, k int) {
			ffnBackwardInPlace(mp.experts[le], L.window(r0, k, h), L.recv[r0*d.D:(r0+k)*d.D], L.recvOut[r0*d.D:(r0+k)*d.D], k)
		})
		if err := sh.ep.AllToAllV(dist.AsBytes(L.recv), L.recvCnt, L.recvOf, dist.AsBytes(w.xs), L.sendCnt, L.sendOf); err != nil {
			return fmt.Errorf("nn: layer %d gradient combine: %w", li, err)
		}
	}
	c.combineBack(w, dx, n)
	c.sharedBackward(mp, w, x, dy, dx, n)
	// Each rank's loss is its own tokens' mean and the trainer averages over ranks, so a
	// token's share of the whole batch's balance gradient is scaled by ranks / ng.
	R := float64(sh.world.Size())
	for e := range w.fe {
		w.fe[e] = balanceCoef * float64(d.E) * L.routedG[e] / float64(L.ng*d.K) * R / float64(L.ng)
	}
	c.routerBack(mp, w, x, dx, n, zCoef)
	return nil
}
