package exec

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
)

// The unified cache's asynchronous host update (compiler/plan's overlap.go models it as
// the "pipelined" host update). Under the cache every weight, gradient and moment lives in
// the host tier and the step's forward fetches one unit (the embedding, a decoder layer,
// the head) at a time. With the overlap on, the update op settles the step's rules (the
// global norm, clipping, learning rate: optim.StepDeferred) and hands the update to a
// helper goroutine, which updates the units one after another in the order the next
// step's forward fetches them; the step returns at once. An op of the next step that
// reads or writes a unit's host weights, gradients or moments (its fetch, its gradient
// write-back) first waits for that unit's update to land, so the forward of unit u runs
// while the helper updates unit u+1, and every op sees exactly the values it would
// without the overlap: losses, weights and moments are bit-equal.
//
// The overlap applies to ZeRO 0 under the cache (without an offloaded optimizer): under
// ZeRO 1 and 2 the all-gather of the updated shards, right after the update, reads every
// unit, so nothing is left to overlap. SetHostOverlap reports whether it applies.

// hostUpdate is a rank's asynchronous host update.
type hostUpdate struct {
	// units are the optimizer's parameter indices of each unit, in the order the step's
	// forward first fetches them.
	units [][]int
	// needs is, for each op of the program, how many units (a prefix of units) must have
	// landed before it runs.
	needs   []int
	pending *pendingUpdate
	// weightBuf is the arena buffer of each optimizer tensor's weights.
	weightBuf []int
	// delay is the one-step-delayed update's state (SetDelayedUpdate; nil for the
	// asynchronous update that lands within the next step).
	delay *delayed
	// beforeUnit, when set (tests), runs on the helper before each unit's update; waiting
	// runs on the rank's goroutine when it is about to block until need units have landed.
	beforeUnit func(unit int)
	waiting    func(need int)
}

// pendingUpdate is an update on its helper goroutine: landed[u] is closed once unit u is
// updated, after errs[u] is written.
type pendingUpdate struct {
	landed []chan struct{}
	errs   []error
}

// SetHostOverlap turns the unified cache's asynchronous host update on or off (it is off
// until asked for) and reports whether it applies to this rank's program: the unified
// cache under ZeRO 0, with an optimizer (call it after SetOptimizer). Turning it off
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
		if g.ZeRO != 0 {
			return false
		}
	}
	return true
}

// planHostUpdate groups the optimizer's tensors into units in the forward's order of
// fetches and finds what each op waits for.
func (e *Executor) planHostUpdate() (*hostUpdate, error) {
	// The buffers the update touches: each tensor's host weights and gradients, by the
	// address of their first value (the optimizer's tensors alias the arena), and the
	// moments.
	pieceOf := map[*float32]int{}
	for k, p := range e.optParams {
		if len(p.W) > 0 {
			pieceOf[unsafe.SliceData(p.W)] = k
			pieceOf[unsafe.SliceData(p.G)] = k
		}
	}
	bufPiece := make([]int, len(e.p.Buffers))
	moment := make([]bool, len(e.p.Buffers))
	for i, b := range e.p.Buffers {
		bufPiece[i] = -1
		if len(e.f32[i]) == 0 {
			continue
		}
		if k, ok := pieceOf[unsafe.SliceData(e.f32[i])]; ok && len(e.f32[i]) == len(e.optParams[k].W) {
			bufPiece[i] = k
		}
		moment[i] = b.Kind == step.KindOptimizer
	}
	unitOf := make([]int, len(e.optParams))
	for k := range unitOf {
		unitOf[k] = -1
	}
	h := &hostUpdate{weightBuf: make([]int, len(e.optParams))}
	for i := range bufPiece {
		if k := bufPiece[i]; k >= 0 && unsafe.SliceData(e.f32[i]) == unsafe.SliceData(e.optParams[k].W) {
			h.weightBuf[k] = i
		}
	}
	for _, op := range e.p.Ops {
		if op.Kind != step.OpCacheFetch {
			continue
		}
		var unit []int
		for _, b := range op.In {
			if k := bufPiece[b]; k >= 0 && unitOf[k] < 0 {
				unitOf[k] = len(h.units)
				unit = append(unit, k)
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
				switch {
				case moment[b]:
					need = all
				case bufPiece[b] >= 0:
					need = max(need, unitOf[bufPiece[b]]+1)
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

// awaitUnits waits, before op i runs, for the units of the pending update it needs; a
// wait counts in the step's Stats.
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
	info, d, err := e.opt.StepDeferredGlobal(1, global) // the grad_norm op summed the squares
	e.stats.GradNorm, e.stats.LR = info.GradNorm, info.LR
	if err != nil {
		return err
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
// its channel closes.
func applyUnits(d *optim.Deferred, units [][]int, p *pendingUpdate, before func(int)) {
	for u, unit := range units {
		if before != nil {
			before(u)
		}
		p.errs[u] = d.Apply(unit)
		close(p.landed[u])
	}
}
