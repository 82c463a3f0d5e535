package exec

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
)

// The unified cache's asynchronous host update (compiler/plan's overlap.go models it as
// the "pipelined" host update). Under the cache every weight, gradient and moment lives in
// the host tier and the step's forward fetches one unit (the embedding, a decoder layer,
// the head) at a time. With the overlap on, the update op settles the step's rules (the
// global norm, clipping, learning rate: optim.StepDeferredGlobal) and hands the update to
// a helper goroutine, which updates the units one after another in the order the next
// step's forward fetches them; the step returns at once. An op of the next step that
// reads or writes a unit's host weights, gradients or moments (its fetch, its gradient
// write-back) first waits for that unit's update to land, so the forward of unit u runs
// while the helper updates unit u+1, and every op sees exactly the values it would
// without the overlap: losses, weights and moments are bit-equal.
//
// Under ZeRO 3 (AngelPTM's own layout) the update runs on the rank's shard of each
// group's flat vectors, and a unit's fetch is an all-gather (Op.CacheFill) that reads the
// part of the rank's parameter shard holding the unit's tensors: it waits for the rank's
// own pieces of the unit, and then contributes. The reduce-scatter into the gradient
// shard, the norm and the update wait for the whole update; the write-backs, into whole
// host gradients the update does not read, wait for nothing. No collective can deadlock
// on the overlap: a helper reads and writes only its own rank's memory and never waits
// for anything, so every wait before a collective ends once the rank's own update has
// reached the unit, whatever the other ranks do (they update their units in the same
// order, the forward's, so they reach each all-gather at about the same time). A unit
// whose update fails lands with its error, which the first op that waits for it returns;
// the step then fails like any other, and Local.Step stops the peers.
//
// The overlap applies to ZeRO 0 and 3 under the cache (without an offloaded optimizer).
// Under ZeRO 1 and 2 the host tier holds whole weights, and the all-gather of the updated
// shards right after the update reads every unit, so nothing is left to overlap; moving
// that all-gather to each unit's fetch in the next step (as ZeRO 3 fetches) would be a
// change of the lowering, not of the executor. SetHostOverlap reports whether it applies.

// hostUpdate is a rank's asynchronous host update.
type hostUpdate struct {
	// units are the optimizer's parameter indices of each unit, in the order the step's
	// forward first fetches them.
	units [][]int
	// needs is, for each op of the program, how many units (a prefix of units) must have
	// landed before it runs.
	needs   []int
	pending *pendingUpdate
	// weightAt is where each optimizer tensor's weights lie in the arena.
	weightAt []arenaSpot
	// delay is the one-step-delayed update's state (SetDelayedUpdate; nil for the
	// asynchronous update that lands within the next step).
	delay *delayed
	// beforeUnit, when set (tests), runs on the helper before each unit's update; an error
	// it returns (or a panic) fails the unit. waiting runs on the rank's goroutine when it
	// is about to block until need units have landed.
	beforeUnit func(unit int) error
	waiting    func(need int)
}

// arenaSpot is a run of n values in the arena: from element off of buffer buf.
type arenaSpot struct{ buf, off, n int }

// tensorSpot is where an optimizer tensor's weights or gradients lie in a buffer: its n
// values from element off.
type tensorSpot struct{ k, off, n int }

// pendingUpdate is an update on its helper goroutine: landed[u] is closed once unit u is
// updated, after errs[u] is written. checked counts the units whose errors the rank has
// looked at (the rank's goroutine only).
type pendingUpdate struct {
	landed  []chan struct{}
	errs    []error
	checked int
}

// SetHostOverlap turns the unified cache's asynchronous host update on or off (it is off
// until asked for) and reports whether it applies to this rank's program: the unified
// cache under ZeRO 0 or 3, with an optimizer (call it after SetOptimizer). Turning it off
// first lets a pending update land.
func (e *Executor) SetHostOverlap(on bool) (bool, error) {
	h, err := e.restartHostUpdate(on)
	if h == nil || err != nil {
		return false, err
	}
	e.host = h
	return true, nil
}

// restartHostUpdate lets a pending host update land and, when on and the program allows
// it, plans a new one (nil when off or not applicable).
func (e *Executor) restartHostUpdate(on bool) (*hostUpdate, error) {
	if err := e.dropHostUpdate(); err != nil {
		return nil, err
	}
	if !on || !e.overlapApplies() {
		return nil, nil
	}
	return e.planHostUpdate()
}

func (e *Executor) overlapApplies() bool {
	l := e.p.Layout
	if e.opt == nil || !l.Cache.On() || l.OffloadOpt {
		return false
	}
	for _, g := range e.p.Groups {
		if g.ZeRO != 0 && g.ZeRO != 3 {
			return false
		}
	}
	return true
}

// planHostUpdate groups the optimizer's tensors into units in the forward's order of
// fetches and finds what each op waits for.
func (e *Executor) planHostUpdate() (*hostUpdate, error) {
	// Where the update reads and writes: each tensor's weights and gradients lie in an
	// arena buffer (the whole tensor's under ZeRO 0, a run of its group's shard under
	// ZeRO 3), and the moments.
	locate := e.arenaLocator()
	h := &hostUpdate{weightAt: make([]arenaSpot, len(e.optParams))}
	inBuf := make([][]tensorSpot, len(e.p.Buffers)) // the tensors' values in each buffer
	for k, p := range e.optParams {
		if len(p.W) == 0 {
			continue
		}
		for i, s := range [][]float32{p.W, p.G} {
			at, ok := locate(s)
			if !ok {
				return nil, fmt.Errorf("exec: rank %d: the optimizer's %s lies outside the arena", e.p.Rank, p.Name)
			}
			if i == 0 {
				h.weightAt[k] = at
			}
			inBuf[at.buf] = append(inBuf[at.buf], tensorSpot{k: k, off: at.off, n: at.n})
		}
	}
	moment := make([]bool, len(e.p.Buffers))
	for i, b := range e.p.Buffers {
		moment[i] = b.Kind == step.KindOptimizer && len(e.f32[i]) > 0
	}
	byParam := map[params.ID][]int{}
	for k, pc := range e.pieces {
		id := pc.id
		id.Shard = pc.shard
		byParam[id] = append(byParam[id], k)
	}
	unitOf := make([]int, len(e.optParams))
	for k := range unitOf {
		unitOf[k] = -1
	}
	for _, op := range e.p.Ops {
		if op.Kind != step.OpCacheFetch && !op.CacheFill {
			continue
		}
		var unit []int
		for _, b := range op.Out {
			if id := e.p.Buffers[b].Param; id != nil {
				for _, k := range byParam[*id] {
					if unitOf[k] < 0 && len(e.optParams[k].W) > 0 {
						unitOf[k] = len(h.units)
						unit = append(unit, k)
					}
				}
			}
		}
		if len(unit) > 0 {
			h.units = append(h.units, unit)
		}
	}
	var rest []int // tensors no fetch reads (none, as the cache lowers): updated last
	for k, u := range unitOf {
		if u < 0 && len(e.optParams[k].W) > 0 {
			unitOf[k] = len(h.units)
			rest = append(rest, k)
		}
	}
	if len(rest) > 0 {
		h.units = append(h.units, rest)
	}
	if len(h.units) == 0 {
		return nil, fmt.Errorf("exec: rank %d: the unified cache fetches none of the optimizer's tensors", e.p.Rank)
	}
	all := len(h.units)
	// needOf is how many units must land before values [lo, hi) of buffer b are touched.
	needOf := func(b, lo, hi int) int {
		need := 0
		for _, t := range inBuf[b] {
			if t.off < hi && lo < t.off+t.n {
				need = max(need, unitOf[t.k]+1)
			}
		}
		return need
	}
	h.needs = make([]int, len(e.p.Ops))
	firstUpdate := true
	for i, op := range e.p.Ops {
		if op.Kind == step.OpAdamW && !firstUpdate {
			continue // the step's first update op updates every group: the others do nothing
		}
		firstUpdate = firstUpdate && op.Kind != step.OpAdamW
		need := 0
		for _, list := range [][]int{op.In, op.Out} {
			for _, b := range list {
				if moment[b] {
					need = all
				}
				if !op.CacheFill || b != op.In[0] {
					need = max(need, needOf(b, 0, len(e.f32[b])))
					continue
				}
				reads, err := e.fillReads(&op)
				if err != nil {
					return nil, fmt.Errorf("exec: rank %d op %d: %w", e.p.Rank, i, err)
				}
				for _, r := range reads {
					need = max(need, needOf(b, r[0], r[1]))
				}
			}
		}
		if op.Kind == step.OpAdamW || op.Kind == step.OpGradNorm {
			need = all
		}
		h.needs[i] = need
	}
	return h, nil
}

// fillReads are the parts [lo, hi) of the rank's parameter shard that a ZeRO-3 fetch of
// the unified cache reads: the values of the unit's tensors that the shard holds (what
// both the shared-memory and the message-passing all-gather read).
func (e *Executor) fillReads(op *step.Op) ([][2]int, error) {
	g, err := e.groupOf(op.Group)
	if err != nil {
		return nil, err
	}
	var runs [][2]int
	base, S := int(g.Index)*int(g.Shard), int(g.Shard)
	var reads [][2]int
	for _, r := range e.flatRuns(op.Out, &runs) {
		if a, z := ownedPiece(g.Index, S, r[0], r[1]); a < z {
			reads = append(reads, [2]int{a - base, z - base})
		}
	}
	return reads, nil
}

// arenaLocator returns a function that finds the arena buffer a slice of values lies in
// (a persistent one for the optimizer's tensors, which no other buffer shares memory with).
func (e *Executor) arenaLocator() func(s []float32) (arenaSpot, bool) {
	type view struct {
		buf   int
		start uintptr
		n     int
	}
	var views []view
	for i, v := range e.f32 {
		if len(v) > 0 {
			views = append(views, view{i, uintptr(unsafe.Pointer(unsafe.SliceData(v))), len(v)})
		}
	}
	slices.SortFunc(views, func(a, b view) int { return cmp.Compare(a.start, b.start) })
	const elem = unsafe.Sizeof(float32(0))
	return func(s []float32) (arenaSpot, bool) {
		if len(s) == 0 {
			return arenaSpot{}, false
		}
		a := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
		j, _ := slices.BinarySearchFunc(views, a+1, func(v view, t uintptr) int { return cmp.Compare(v.start, t) })
		for j--; j >= 0; j-- { // the views starting at or before s, nearest first
			v := views[j]
			if off := int((a - v.start) / elem); off+len(s) <= v.n {
				return arenaSpot{buf: v.buf, off: off, n: len(s)}, true
			}
		}
		return arenaSpot{}, false
	}
}

// awaitUnits waits, before op i runs, for the units of the pending update it needs and
// returns the first error among them; a wait counts in the step's Stats.
func (e *Executor) awaitUnits(i int) error {
	h := e.host
	p := h.pending
	need := h.needs[i]
	if p == nil || need == 0 {
		return nil
	}
	ch := p.landed[need-1] // units land in order
	select {
	case <-ch:
	default:
		start := time.Now()
		if h.waiting != nil {
			h.waiting(need)
		}
		<-ch
		e.stats.UpdateWaits++
		e.stats.UpdateWaitSeconds += time.Since(start).Seconds()
	}
	if need == len(h.units) {
		return e.Settle()
	}
	for ; p.checked < need; p.checked++ {
		if err := p.errs[p.checked]; err != nil {
			return fmt.Errorf("the host update: %w", err)
		}
	}
	return nil
}

// settle waits for the whole pending update and returns its errors.
func (h *hostUpdate) settle() error {
	p := h.pending
	if p == nil {
		return nil
	}
	last := p.landed[len(p.landed)-1]
	select {
	case <-last:
	default:
		if h.waiting != nil {
			h.waiting(len(h.units))
		}
		<-last
	}
	h.pending = nil
	return errors.Join(p.errs...)
}

// Settle waits for a pending asynchronous host update to land: anything that reads or
// writes the rank's weights or moments outside a step calls it first.
func (e *Executor) Settle() error {
	if e.host == nil {
		return nil
	}
	if err := e.host.settle(); err != nil {
		return fmt.Errorf("exec: rank %d: the host update: %w", e.p.Rank, err)
	}
	return nil
}

// dropHostUpdate lets a pending update land and turns the asynchronous update off; a
// delayed one leaves its latest weights in the arena and the executor's own optimizer.
func (e *Executor) dropHostUpdate() error {
	if err := e.Settle(); err != nil {
		return err
	}
	if e.host != nil && e.host.delay != nil {
		if err := e.host.delay.restore(e); err != nil {
			return err
		}
	}
	e.host = nil
	return nil
}

// updateAsync settles the step's update rules and starts the update on a helper
// goroutine, unit by unit.
func (e *Executor) updateAsync(op *step.Op) error {
	h := e.host
	if err := h.settle(); err != nil { // the ops before have waited for it: nothing is left
		return err
	}
	if h.delay != nil {
		h.delay.swap(e)
	}
	global := e.globalNormSq(e.f32[op.In[len(op.In)-1]], e.p.Layout.World())
	gradScale, global := e.unscale(global)
	info, d, err := e.opt.StepDeferredGlobal(gradScale, global) // the grad_norm op summed the squares
	e.stats.GradNorm, e.stats.LR = info.GradNorm, info.LR
	if err != nil { // an overflow under a loss scale: nothing to apply
		return e.skipOverflow(err)
	}
	p := &pendingUpdate{landed: make([]chan struct{}, len(h.units)), errs: make([]error, len(h.units))}
	for u := range p.landed {
		p.landed[u] = make(chan struct{})
	}
	h.pending = p
	e.stats.DeferredUnits += len(h.units)
	go applyUnits(d, h.units, p, h.beforeUnit)
	return nil
}

// applyUnits is the helper goroutine: it updates the units in order, each landing when
// its channel closes. A panic fails its unit and lands the rest unapplied, so that no
// rank waits for them forever.
func applyUnits(d *optim.Deferred, units [][]int, p *pendingUpdate, before func(int) error) {
	u := 0
	defer func() {
		if r := recover(); r != nil {
			p.errs[u] = fmt.Errorf("updating unit %d of %d panicked: %v", u, len(units), r)
			close(p.landed[u])
			for v := u + 1; v < len(units); v++ {
				p.errs[v] = fmt.Errorf("unit %d of %d not updated: unit %d failed", v, len(units), u)
				close(p.landed[v])
			}
		}
	}()
	for ; u < len(units); u++ {
		var err error
		if before != nil {
			err = before(u)
		}
		if err == nil {
			err = d.Apply(units[u])
		}
		p.errs[u] = err
		close(p.landed[u])
	}
}
