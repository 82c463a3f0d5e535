package step

import (
	"fmt"
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
)

// Unsupported is a model feature the step program does not lower yet, named for the
// E0510 diagnostic.
type Unsupported struct {
	Feature string
	Why     string
}

// unsupported lists what m uses that the step program cannot lower under l: the step
// column of the features table (compiler/features), whose cells for talking heads and
// token-embedding routing depend on l's tensor and pipeline sizes.
func unsupported(m *program.Model, l Layout) []Unsupported {
	var out []Unsupported
	for _, g := range features.Refusals(m, features.Step, features.Layout{TP: l.TP, PP: l.PP}) {
		out = append(out, Unsupported{Feature: g.Feature.Name, Why: g.Verdict.Reason})
	}
	return out
}

// Lower builds the step programs of every rank of l for the stage model m and batch b.
// The error, when there is one, lists every problem found (as Problems and Unsupported
// features); the caller turns it into positioned diagnostics (see Diagnose).
func Lower(m *program.Model, b Batch, l Layout) ([]*Program, error) {
	l, d, walk, err := prepare(m, b, l)
	if err != nil {
		return nil, err
	}
	out := make([]*Program, l.World())
	for r := range out {
		if out[r], err = lowerRank(m, d, b, l, r, walk); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LowerRank builds rank's program alone (a listing of one rank of a large cluster plan).
func LowerRank(m *program.Model, b Batch, l Layout, rank int) (*Program, error) {
	l, d, walk, err := prepare(m, b, l)
	if err != nil {
		return nil, err
	}
	if rank < 0 || rank >= l.World() {
		return nil, fmt.Errorf("step: rank %d is not in a layout of %d ranks", rank, l.World())
	}
	return lowerRank(m, d, b, l, rank, walk)
}

// prepare checks that l divides m and b and that the step program lowers m's features.
func prepare(m *program.Model, b Batch, l Layout) (Layout, program.Dims, []params.Param, error) {
	if l.EP == 0 {
		l.EP = 1
	}
	d, err := m.Dims()
	if err != nil {
		return l, d, nil, fmt.Errorf("step: %w", err)
	}
	if b.MicroBatch < 1 || b.SeqLen < 1 || b.Micro < 1 {
		return l, d, nil, fmt.Errorf("step: batch %+v must be positive", b)
	}
	if ps := Check(l, d, b); len(ps) > 0 {
		return l, d, nil, &LayoutError{Problems: ps}
	}
	if l.Cache.On() {
		l.OffloadOpt = false // the cache keeps every state in the host tier already
	}
	l.RouterStages = routerStages(m, d, l.PP) // router_table.go
	us := append(unsupported(m, l), checkCache(l)...)
	us = append(us, auxFreeUnsupported(m.MoE != nil && m.MoE.Experts > 0 && m.MoE.AuxFreeBias > 0, l)...) // routing_bias.go
	if len(us) > 0 {
		return l, d, nil, &LayoutError{Unsupported: us}
	}
	walk, err := params.Walk(m)
	if err != nil {
		return l, d, nil, fmt.Errorf("step: %w", err)
	}
	return l, d, walk, nil
}

func lowerRank(m *program.Model, d program.Dims, b Batch, l Layout, rank int, walk []params.Param) (*Program, error) {
	if l.Cache.On() {
		return lowerCached(func() *lowerer { return newLowerer(m, d, b, l, rank, walk) })
	}
	lw := newLowerer(m, d, b, l, rank, walk)
	lw.lower()
	lw.p.Memory = planMemory(lw.p)
	return lw.p, nil
}

// LayoutError says why a layout cannot be lowered.
type LayoutError struct {
	Problems    []Problem
	Unsupported []Unsupported
	// Budget, when set, is a unified cache whose device budget cannot run the step.
	Budget *CacheBudget
}

func (e *LayoutError) Error() string {
	var parts []string
	for _, p := range e.Problems {
		parts = append(parts, p.String())
	}
	for _, u := range e.Unsupported {
		parts = append(parts, fmt.Sprintf("the step program does not lower %s: %s", u.Feature, u.Why))
	}
	if e.Budget != nil {
		parts = append(parts, e.Budget.String())
	}
	return "step: " + strings.Join(parts, "; ")
}

// lowerer builds one rank's program.
type lowerer struct {
	m    *program.Model
	d    program.Dims
	b    Batch
	l    Layout
	c    Coord
	p    *Program
	walk []params.Param
	// local shapes on this rank
	hLocal, kvLocal, qLocal, kvDimLocal int
	hiddenLocal, eHiddenLocal, sHidden  int
	vLocal, eLocal, firstExpert         int
	capacity                            int  // slots per expert per source rank
	packed                              bool // dropless dispatch packed by expert (dispatch.go)
	elem                                int
	// param buffers: the persistent tensor, and under ZeRO-3 the gathered copy per
	// (id, phase, micro)
	param    map[params.ID]int
	grad     map[params.ID]int
	gathered map[gatherKey]int
	byName   map[string]int
	phase    Phase
	micro    int
	shapes   map[params.ID][]int
	flat     map[params.ID]int64
	groups   []group
	// gradOf maps a forward buffer to its gradient buffer during the backward; written
	// records gradient buffers already written in this micro-batch's backward (a second
	// contribution accumulates).
	gradOf  map[int]int
	written map[int]bool
	tape    []tapeEntry
	// gradSeed is the gradient the loss op writes in the forward (the logits').
	gradSeed map[int]int
	micros   []microState
	// order lists the parameters this rank holds, in walk order; paramOfBuf maps a
	// parameter buffer (persistent or gathered) to its identity; paramGradBufs marks
	// parameter gradient buffers.
	order         []params.ID
	paramOfBuf    map[int]params.ID
	paramGradBufs map[int]bool
	paramWritten  map[int]bool
	// cond marks the backward ops being emitted as conditional (their forward op was).
	cond bool
	// seq is what sequence parallelism's backward gathers again (sequence.go).
	seq seqState
	// cache simulates the unified cache's page pool (nil without the cache).
	cache *cacheState
	// kvShared is the current cross-layer group's keys and values (attention_qk.go).
	kvShared sharedKV
	// feed is a feeding program's inputs (feed.go); nil in every other program.
	feed *feedState
	// lastBackward is the index of the last micro-batch's first backward op: every
	// gradient write from there on is a gradient's last contribution (bucket.go).
	lastBackward int
}

// group is a set of parameters reduced and updated together: the dense parameters over
// the data-parallel ranks, the routed experts' over the expert-data-parallel ranks.
type group struct {
	name, axis            string
	size                  int
	elements              int64
	paramShard, gradShard int // ZeRO-3 / ZeRO-2 flat shards (-1 when absent)
	m, v                  int
}

type gatherKey struct {
	id    params.ID
	phase Phase
	micro int
}

func newLowerer(m *program.Model, d program.Dims, b Batch, l Layout, rank int, walk []params.Param) *lowerer {
	c := l.CoordOf(rank)
	lw := &lowerer{m: m, d: d, b: b, l: l, c: c, walk: walk, elem: 4,
		param: map[params.ID]int{}, grad: map[params.ID]int{}, gathered: map[gatherKey]int{}, byName: map[string]int{},
		shapes: map[params.ID][]int{}, flat: map[params.ID]int64{},
		paramOfBuf: map[int]params.ID{}, paramGradBufs: map[int]bool{}, paramWritten: map[int]bool{}}
	lw.p = &Program{Model: m.Name, Layout: l, Rank: rank, Coord: c, Batch: b}
	per := d.L / l.PP
	lw.p.FirstLayer, lw.p.LayerCount = c.PP*per, per
	lw.hLocal, lw.kvLocal = d.H/l.TP, d.KV/l.TP
	lw.qLocal, lw.kvDimLocal = lw.hLocal*d.Dh, lw.kvLocal*d.Dh
	lw.hiddenLocal, lw.eHiddenLocal = d.Hidden/l.TP, d.EHidden/l.TP
	lw.sHidden = d.SHidden / l.TP
	lw.vLocal = d.V / l.TP
	if d.E > 0 {
		lw.eLocal = d.E / l.EP
		lw.firstExpert = c.EP * lw.eLocal
		// Slots per expert from each source rank: the capacity factor's, or for dropless
		// routing the worst case the plan allows (the skew), at most every assignment.
		n := b.Tokens()
		assignments := float64(n * d.K)
		// Dropless routing takes the true worst case (every assignment to one expert), so
		// no token is ever dropped; sizing by the plan's skew would need an overflow path.
		lw.capacity = n * d.K
		if cf := m.MoE.CapacityFactor; cf > 0 {
			lw.capacity = min(int(math.Ceil(cf*assignments/float64(d.E))), n*d.K)
		}
		lw.packed = packs(m.MoE.CapacityFactor, l.EP)
	}
	return lw
}

// holds reports whether this rank holds parameter p (its pipeline stage's layers, its
// experts), and the local shape of its tensor-parallel shard.
func (lw *lowerer) holds(p params.Param) (bool, []int, params.Shard) {
	id := p.ID
	first, last := lw.p.FirstLayer, lw.p.FirstLayer+lw.p.LayerCount
	switch {
	case id.Layer >= 0 && (id.Layer < first || id.Layer >= last):
		return false, nil, params.Shard{}
	case id.Layer < 0:
		stage0, stageLast := lw.c.PP == 0, lw.c.PP == lw.l.PP-1
		switch id.Role {
		case params.RoleRouterEmbed:
			if !lw.holdsRouterTable() { // router_table.go
				return false, nil, params.Shard{}
			}
		case params.RoleEmbed, params.RolePositions:
			if !stage0 && !(id.Role == params.RoleEmbed && lw.m.TieEmbeddings && stageLast) {
				return false, nil, params.Shard{}
			}
		case params.RoleFinalNorm, params.RoleHead:
			if !stageLast {
				return false, nil, params.Shard{}
			}
		}
	}
	if id.Role.Routed() && (id.Expert < lw.firstExpert || id.Expert >= lw.firstExpert+lw.eLocal) {
		return false, nil, params.Shard{}
	}
	shape := append([]int(nil), p.Shape...)
	tp := lw.l.TP
	if tp == 1 {
		return true, shape, params.Shard{}
	}
	split := func(dim int) (bool, []int, params.Shard) {
		shape[dim] /= tp
		return true, shape, params.Shard{Dim: dim, Index: lw.c.TP, Count: tp}
	}
	if lw.qkNormScaleSplits(id.Role) {
		return split(0) // a whole-projection norm's scale: the rank's heads' columns (qknorm_tp.go)
	}
	switch id.Role {
	case params.RoleQ, params.RoleK, params.RoleV, params.RoleQB, params.RoleKVB, params.RoleFFNIn, params.RoleFFNUp,
		params.RoleExpertIn, params.RoleExpertUp, params.RoleSharedIn, params.RoleSharedUp:
		return split(0) // column-parallel: output rows (and their biases)
	case params.RoleO, params.RoleFFNDown, params.RoleExpertDown, params.RoleSharedDown:
		if id.Bias {
			return true, shape, params.Shard{} // a row-parallel bias is added once, after the all-reduce
		}
		return split(1) // row-parallel: input columns
	case params.RoleEmbed, params.RoleHead:
		return split(0) // vocabulary-parallel rows
	case params.RoleSinks:
		return split(0) // one sink logit per head: the rank's heads'
	}
	return true, shape, params.Shard{}
}

func (lw *lowerer) buf(name string, kind Kind, shape ...int) int {
	if _, ok := lw.byName[name]; ok {
		// Two values under one name would share a buffer: a lowering bug.
		panic(fmt.Sprintf("step: internal error: buffer %s declared twice", name))
	}
	lw.p.Buffers = append(lw.p.Buffers, &Buffer{Name: name, Shape: shape, Elem: lw.elem, Kind: kind, Flat: -1})
	i := len(lw.p.Buffers) - 1
	lw.byName[name] = i
	return i
}

// act names a per-micro-batch buffer.
func (lw *lowerer) act(name string, kind Kind, shape ...int) int {
	return lw.buf(fmt.Sprintf("%s@%d", name, lw.micro), kind, shape...)
}

func (lw *lowerer) emit(op Op) {
	if op.Phase == Forward || op.Phase == Backward {
		op.Micro = lw.micro
	} else {
		op.Micro = -1
	}
	if op.Bytes == 0 && !op.Kind.Collective() && !op.Kind.PointToPoint() && !op.Kind.Moves() {
		for _, i := range append(append([]int(nil), op.In...), op.Out...) {
			op.Bytes += lw.p.Buffers[i].Bytes()
		}
	}
	lw.p.Ops = append(lw.p.Ops, op)
}

// w is the buffer holding parameter id for the current phase and micro-batch: the
// persistent tensor, or under ZeRO-3 a gathered copy (gathered by gatherLayer).
func (lw *lowerer) w(id params.ID) int {
	if lw.cache != nil {
		return lw.cacheCopy(id)
	}
	if lw.l.ZeRO == 3 {
		if i, ok := lw.gathered[gatherKey{id, lw.phase, lw.micro}]; ok {
			return i
		}
	}
	i, ok := lw.param[id]
	if !ok {
		panic(fmt.Sprintf("step: internal error: rank %d has no parameter %s", lw.p.Rank, id))
	}
	return i
}

func (lw *lowerer) has(id params.ID) bool { _, ok := lw.param[id]; return ok }

// declareParams adds this rank's parameters, gradients and optimizer states. A group's
// parameters persist whole except under ZeRO-3, where the rank keeps a flat 1/size shard
// and each tensor exists only while gathered for a use.
func (lw *lowerer) declareParams() {
	type held struct {
		p     params.Param
		shape []int
		shard params.Shard
	}
	var hs []held
	var dense, expert int64
	for _, p := range lw.walk {
		ok, shape, shard := lw.holds(p)
		if !ok {
			continue
		}
		hs = append(hs, held{p, shape, shard})
		n := int64(1)
		for _, s := range shape {
			n *= int64(s)
		}
		if p.ID.Role.Routed() {
			expert += n
		} else {
			dense += n
		}
	}
	lw.groups = []group{{name: "dense", axis: "dp", size: lw.l.DP, elements: dense, paramShard: -1, gradShard: -1}}
	if expert > 0 {
		lw.groups = append(lw.groups, group{name: "expert", axis: "edp", size: lw.l.DP / lw.l.EP, elements: expert, paramShard: -1, gradShard: -1})
	}
	var flat [2]int64
	for _, h := range hs {
		key := h.p.ID // buffers are looked up by the whole tensor's identity
		id := key
		id.Shard = h.shard
		lw.order = append(lw.order, key)
		lw.shapes[key] = h.shape
		gi := 0
		if key.Role.Routed() && len(lw.groups) > 1 {
			gi = 1
		}
		lw.flat[key] = flat[gi]
		n := int64(1)
		for _, s := range h.shape {
			n *= int64(s)
		}
		flat[gi] += n
		zero := lw.zeroOf(lw.groupOf(key))
		name := id.String()
		if zero < 3 {
			lw.param[key] = lw.buf(name, KindParam, h.shape...)
			lw.p.Buffers[lw.param[key]].Flat = lw.flat[key]
			lw.paramOfBuf[lw.param[key]] = key
			pid := id
			lw.p.Buffers[lw.param[key]].Param = &pid
		} else {
			lw.param[key] = -1
		}
		gradKind := KindGrad
		if zero >= 2 {
			gradKind = KindActGrad // the full gradient lives until it is reduce-scattered
		}
		lw.grad[key] = lw.buf("d"+name, gradKind, h.shape...)
		lw.p.Buffers[lw.grad[key]].Flat = lw.flat[key]
		lw.paramGradBufs[lw.grad[key]] = true
		pid := id
		lw.p.Buffers[lw.grad[key]].Param = &pid
	}
	for gi := range lw.groups {
		g := &lw.groups[gi]
		zero := lw.zeroOf(g)
		shard := lw.shardElems(g)
		tier := Device
		if lw.l.OffloadOpt {
			tier = Host
		}
		part := ""
		if zero >= 1 {
			part = fmt.Sprintf(" %d/%d", lw.shardIndex(g), g.size)
		}
		if zero == 3 {
			g.paramShard = lw.buf("params["+g.name+"]"+part, KindParam, int(shard))
		}
		if zero >= 2 {
			g.gradShard = lw.buf("grads["+g.name+"]"+part, KindGrad, int(shard))
		}
		lw.p.Groups = append(lw.p.Groups, Group{Name: g.name, Axis: g.axis, Size: g.size, Index: lw.shardIndex(g), ZeRO: zero,
			Elements: g.elements, Shard: ceilDiv(g.elements, int64(g.size))})
		g.m = lw.buf("adam_m["+g.name+"]"+part, KindOptimizer, int(shard))
		g.v = lw.buf("adam_v["+g.name+"]"+part, KindOptimizer, int(shard))
		lw.p.Buffers[g.m].Tier, lw.p.Buffers[g.v].Tier = tier, tier
	}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
