package exec

// The experts' buffers are statically sized: [experts, slots, width], slots being the
// route op's capacity. At run time expert e holds tokens in its first rows only, as many
// as the permute op placed there (the route numbers an expert's slots 0, 1, … in token
// order); the rest is padding. The permute op records the counts of its output, and the
// expert kernels (grouped products, activation, combine) carry them from their inputs to
// their outputs and compute only the filled rows, writing zeros into the padding of what
// they overwrite. A padding row's value reaches no result: the combine reads filled slots
// only, and the combine's backward leaves zero gradients in the padding, which the
// backward products and activation keep at zero. Buffers the counts do not reach (an
// all-to-all's output under expert parallelism) are computed whole.

import (
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// rowFill says which rows of an expert-major buffer hold tokens: rows [0, counts[e]) of
// expert e's block of slots rows.
type rowFill struct {
	valid  bool
	slots  int
	counts []int32
}

// filled is buffer b's fill when it is known and matches a buffer of the given experts,
// else nil (compute every row).
func (e *Executor) filled(b, experts int) *rowFill {
	if b >= len(e.fill) || !e.fill[b].valid || len(e.fill[b].counts) != experts || e.fill[b].slots <= 0 {
		return nil
	}
	if f := &e.fill[b]; len(e.f32[b])%(experts*f.slots) == 0 {
		return f
	}
	return nil
}

// fillRecord is buffer b's fill, marked known with the given slots per expert; the
// caller sets its counts.
func (e *Executor) fillRecord(b, slots int) *rowFill {
	if e.fill == nil {
		e.fill = make([]rowFill, len(e.p.Buffers))
	}
	f := &e.fill[b]
	f.valid, f.slots = true, slots
	return f
}

// setFill records buffer out's fill (nil: unknown), copying the counts into out's own
// array so the record describes out's contents whatever later overwrites the source.
func (e *Executor) setFill(out int, f *rowFill) {
	if f == nil {
		if out < len(e.fill) {
			e.fill[out].valid = false
		}
		return
	}
	d := e.fillRecord(out, f.slots)
	if d != f { // not in place
		copy(grow(&d.counts, len(f.counts)), f.counts)
	}
}

// ofSlots is f when its blocks have the given rows (slots), else nil.
func ofSlots(f *rowFill, slots int) *rowFill {
	if f == nil || f.slots != slots {
		return nil
	}
	return f
}

// rowsOf is how many rows of expert ex's block to compute: all slots without a fill.
func rowsOf(f *rowFill, ex, slots int) int {
	if f == nil {
		return slots
	}
	return min(int(f.counts[ex]), slots)
}

// forFilled runs body over the filled values of a buffer of n values (all of them when f
// is nil), split over the cores, after clearing the padding when clearPad.
func forFilled(n int, f *rowFill, clearPad []float32, body func(lo, hi int)) {
	if f == nil {
		parallel(n, body)
		return
	}
	block := n / len(f.counts)
	width := block / f.slots
	total := 0
	for ex, c := range f.counts {
		fill := min(int(c), f.slots) * width
		total += fill
		if clearPad != nil {
			clear(clearPad[ex*block+fill : (ex+1)*block])
		}
	}
	parallel(total, func(lo, hi int) {
		v := 0 // the filled values before block ex
		for ex, c := range f.counts {
			fill := min(int(c), f.slots) * width
			if a, b := max(lo, v), min(hi, v+fill); a < b {
				body(ex*block+a-v, ex*block+b-v)
			}
			v += fill
		}
	})
}

// fillOfAny is the first known fill among bufs of the given experts.
func (e *Executor) fillOfAny(experts int, bufs ...int) *rowFill {
	for _, b := range bufs {
		if f := e.filled(b, experts); f != nil {
			return f
		}
	}
	return nil
}

// actExperts is how many expert blocks an activation buffer holds (1 for a dense layer's,
// whose fill is never known).
func (e *Executor) actExperts(b int) int {
	if sh := e.p.Buffers[b].Shape; len(sh) == 3 {
		return sh[0]
	}
	return 1
}

func (e *Executor) act(op *step.Op) {
	act := program.Activation(op.Attr)
	a, h := e.f32[op.In[0]], e.f32[op.Out[0]]
	var u []float32
	if len(op.In) > 1 {
		u = e.f32[op.In[1]]
	}
	f := e.filled(op.In[0], e.actExperts(op.In[0]))
	e.setFill(op.Out[0], f)
	forFilled(len(a), f, h, func(lo, hi int) {
		var ub []float32
		if u != nil {
			ub = u[lo:hi]
		}
		actForward(act, h[lo:hi], a[lo:hi], ub)
	})
}

func (e *Executor) actBwd(op *step.Op) {
	act := program.Activation(op.Attr)
	dh, a := e.f32[op.In[0]], e.f32[op.In[1]]
	da := e.f32[op.Out[0]]
	var u, du []float32
	if len(op.In) > 2 {
		u, du = e.f32[op.In[2]], e.f32[op.Out[1]]
	}
	accA := op.Accumulates(0)
	accU := len(op.Out) > 1 && op.Accumulates(1)
	f := e.fillOfAny(e.actExperts(op.In[1]), op.In[1], op.In[0])
	for _, o := range op.Out {
		e.setFill(o, f)
	}
	if f != nil && du != nil && !accU {
		forFilled(len(a), f, du, func(int, int) {})
	}
	var pad []float32
	if !accA {
		pad = da
	}
	forFilled(len(a), f, pad, func(lo, hi int) {
		var ub, dub []float32
		if u != nil {
			ub, dub = u[lo:hi], du[lo:hi]
		}
		actBackward(act, da[lo:hi], dub, dh[lo:hi], a[lo:hi], ub, accA, accU)
	})
}
