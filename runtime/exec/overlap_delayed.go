package exec

import (
	"fmt"
	"slices"

	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
)

// The one-step-delayed update (ZeRO-Offload's DPU; compiler/plan's HostUpdateDelayed),
// asked for with SetDelayedUpdate. It changes the training algorithm: the forward and
// backward of step t+1 use the weights before step t's update, which lands while step
// t+1 runs. The helper updates a master copy of the weights from a staged copy of the
// step's gradients, so nothing the step computes with is touched while it runs; at each
// update op the rank waits for the previous update, copies the master weights into the
// arena (what the next step uses) and stages the new gradients. Losses differ from the
// serial update's from the third step on: step 1 runs on the initial weights, step 2 on
// the weights after step 0's update.
//
// The master copy and the staged gradients are memory outside the arena, as DPU keeps
// an fp32 master on the host beside the device's weights. Tensors (checkpoints,
// evaluation) read the master weights, the latest; a run resumed from them starts
// without a pending update, as a run does.

// delayed is the delayed update's own memory.
type delayed struct {
	// masterOf is the master copy of each arena buffer that holds weights the optimizer
	// updates: a whole tensor under ZeRO 0, the rank's shard of a group under ZeRO 3.
	masterOf map[int][]float32
	// master are each optimizer tensor's weights in its buffer's master copy; staged its
	// gradients as the update op found them.
	master, staged [][]float32
	// direct is the executor's optimizer over the arena's weights and gradients, given
	// back when the delay is turned off; the delayed optimizer shares its moments.
	direct *optim.AdamW
}

// SetDelayedUpdate turns the one-step-delayed update on or off (it is off until asked
// for; SetHostOverlap turns it off too) and reports whether it applies: the unified
// cache under ZeRO 0 or 3, with an optimizer (call it after SetOptimizer).
func (e *Executor) SetDelayedUpdate(on bool) (bool, error) {
	h, err := e.restartHostUpdate(on)
	if h == nil || err != nil {
		return false, err
	}
	d := &delayed{direct: e.opt, masterOf: map[int][]float32{}}
	var ps []optim.Param
	for k, p := range e.optParams {
		var w []float32
		if len(p.W) > 0 {
			at := h.weightAt[k]
			m, ok := d.masterOf[at.buf]
			if !ok {
				m = slices.Clone(e.f32[at.buf])
				d.masterOf[at.buf] = m
			}
			w = m[at.off : at.off+at.n]
		}
		g := make([]float32, len(p.G))
		d.master, d.staged = append(d.master, w), append(d.staged, g)
		ps = append(ps, optim.Param{Name: p.Name, Shape: p.Shape, W: w, G: g})
	}
	state := e.opt.State() // aliases the moments in the arena
	ms, vs := make([][]float32, len(ps)), make([][]float32, len(ps))
	for k := range ps {
		ms[k], vs[k] = state[2*k].Data, state[2*k+1].Data
	}
	o, err := optim.NewAdamWOver(e.opt.Config(), ps, ms, vs) // no second pair of moments
	if err != nil {
		return false, fmt.Errorf("exec: the delayed update: %w", err)
	}
	if err := o.LoadState(state, e.opt.StepCount()); err != nil { // the count; the moments are the same memory
		return false, fmt.Errorf("exec: the delayed update: %w", err)
	}
	// Only the update op waits: nothing else in a step reads or writes what the helper
	// does (the master copy, the staged gradients, the moments).
	for i, op := range e.p.Ops {
		if op.Kind != step.OpAdamW {
			h.needs[i] = 0
		}
	}
	h.delay, e.opt, e.host = d, o, h
	return true, nil
}

// swap, at the update op once the previous update has landed, puts the master weights in
// the arena for the next step and stages this step's gradients for the helper.
func (d *delayed) swap(e *Executor) {
	for buf, m := range d.masterOf {
		copy(e.f32[buf], m)
	}
	for k, p := range e.optParams {
		copy(d.staged[k], p.G)
	}
}

// restore, with nothing pending, leaves the latest weights in the arena and gives the
// executor its own optimizer back, at the delayed one's count.
func (d *delayed) restore(e *Executor) error {
	for buf, m := range d.masterOf {
		copy(e.f32[buf], m)
	}
	if err := d.direct.LoadState(e.opt.State(), e.opt.StepCount()); err != nil {
		return fmt.Errorf("exec: ending the delayed update: %w", err)
	}
	e.opt = d.direct
	return nil
}

// refreshMaster copies the arena's weights into the master copy (after a load).
func (e *Executor) refreshMaster() {
	if e.host == nil || e.host.delay == nil {
		return
	}
	for buf, m := range e.host.delay.masterOf {
		copy(m, e.f32[buf])
	}
}

// weights is what Tensors reads for arena buffer i: the master copy under the delayed
// update, else the buffer.
func (e *Executor) weights(i int) []float32 {
	if e.host != nil && e.host.delay != nil {
		if w, ok := e.host.delay.masterOf[i]; ok {
			return w
		}
	}
	return e.f32[i]
}

// pieceWeights is what Tensors reads for optimizer tensor k (a ZeRO-3 piece): its master
// copy under the delayed update, else its weights in the arena.
func (e *Executor) pieceWeights(k int) []float32 {
	if e.host != nil && e.host.delay != nil {
		return e.host.delay.master[k]
	}
	return e.optParams[k].W
}

// SetDelayedUpdate turns the one-step-delayed update on or off on every rank (after
// SetOptimizer) and reports whether it applies (Executor.SetDelayedUpdate).
func (lc *Local) SetDelayedUpdate(on bool) (bool, error) {
	applies := len(lc.Ranks) > 0
	for _, ex := range lc.Ranks {
		ok, err := ex.SetDelayedUpdate(on)
		if err != nil {
			return false, err
		}
		applies = applies && ok
	}
	if on && !applies { // every rank or none
		for _, ex := range lc.Ranks {
			if _, err := ex.SetDelayedUpdate(false); err != nil {
				return false, err
			}
		}
	}
	return applies, nil
}
