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
//
// The counts are the kernels' state between ops: one RowFill per buffer, kept in the
// rank's Kernels (Kernels.Fill) and passed to the expert kernels explicitly, by the
// executor and by a step program written out as Go alike, so both skip the same rows.

import (
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// RowFill says which rows of an expert-major buffer hold tokens: rows [0, counts[e]) of
// expert e's block of slots rows. Its zero value is an unknown fill (compute every row).
type RowFill struct {
	valid  bool
	slots  int
	counts []int32
	// padUnread says no op of the program reads the buffer's padding (every reader is an
	// expert kernel that follows the counts), so the kernels that write it leave the
	// padding as it is instead of clearing it. Its zero value clears: a step program
	// written out as Go that does not call MarkPaddingUnread computes the same numbers.
	padUnread bool
}

// fillAware are the op kinds that read an expert-major buffer's filled rows only.
var fillAware = map[step.OpKind]bool{
	step.OpGroupedMM: true, step.OpGroupedMMDX: true, step.OpGroupedMMDW: true,
	step.OpAct: true, step.OpActBwd: true, step.OpCombine: true, step.OpCombineBwd: true,
	step.OpPermuteBwd: true,
}

// MarkPaddingUnread marks the expert-major buffers of p whose padding no op reads: every
// reader is a kernel that follows the fill counts (an all-to-all, which moves whole
// blocks, or any other op keeps the padding cleared). Writing the padding of a large
// dropless dispatch buffer (E × tokens rows, mostly empty) then costs nothing.
func (k *Kernels) MarkPaddingUnread(p *step.Program) {
	readers := make([]int, len(p.Buffers))
	aware := make([]bool, len(p.Buffers))
	for i := range aware {
		aware[i] = true
	}
	for _, op := range p.Ops {
		for _, b := range op.In {
			readers[b]++
			if !fillAware[op.Kind] {
				aware[b] = false
			}
		}
	}
	for b := range p.Buffers {
		if readers[b] > 0 && aware[b] {
			k.Fill(b).padUnread = true
		}
	}
}

// padOf is buf, the padding a kernel clears, or nil when f says no op reads it.
func padOf(f *RowFill, buf []float32) []float32 {
	if f != nil && f.padUnread {
		return nil
	}
	return buf
}

// clearsPad reports whether the padding of the buffer f describes must be cleared.
func clearsPad(f *RowFill) bool { return f == nil || !f.padUnread }

// Fill is buffer b's fill record, kept for the rank's whole run: the expert kernels read
// their inputs' and write their outputs' (kernels_rows.go).
func (k *Kernels) Fill(b int) *RowFill {
	if b >= len(k.fill) {
		k.fill = append(k.fill, make([]*RowFill, b+1-len(k.fill))...)
	}
	if k.fill[b] == nil {
		k.fill[b] = &RowFill{}
	}
	return k.fill[b]
}

// known is f when it is known and matches a buffer of n values over the given experts,
// else nil (compute every row).
func known(f *RowFill, n, experts int) *RowFill {
	if f == nil || !f.valid || len(f.counts) != experts || f.slots <= 0 || n%(experts*f.slots) != 0 {
		return nil
	}
	return f
}

// record marks f known with the given slots per expert; the caller sets its counts.
func (f *RowFill) record(slots int) *RowFill {
	f.valid, f.slots = true, slots
	return f
}

// setFill records dst's fill as src's (nil: unknown), copying the counts into dst's own
// array so the record describes dst's contents whatever later overwrites the source.
func setFill(dst, src *RowFill) {
	if dst == nil {
		return
	}
	if src == nil {
		dst.valid = false
		return
	}
	if dst != src { // not in place
		dst.record(src.slots)
		copy(grow(&dst.counts, len(src.counts)), src.counts)
	}
}

// ofSlots is f when its blocks have the given rows (slots), else nil.
func ofSlots(f *RowFill, slots int) *RowFill {
	if f == nil || f.slots != slots {
		return nil
	}
	return f
}

// rowsOf is how many rows of expert ex's block to compute: all slots without a fill.
func rowsOf(f *RowFill, ex, slots int) int {
	if f == nil {
		return slots
	}
	return min(int(f.counts[ex]), slots)
}

// forFilled runs body over the filled values of a buffer of n values (all of them when f
// is nil), split over the cores, after clearing the padding when clearPad.
func forFilled(n int, f *RowFill, clearPad []float32, body func(lo, hi int)) {
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

// actExperts is how many expert blocks an activation buffer of shape holds (1 for a dense
// layer's, whose fill is never known).
func actExperts(shape []int) int {
	if len(shape) == 3 {
		return shape[0]
	}
	return 1
}

// Act: h = act(a), or act(a)·u for a gated FFN (u not nil), over the filled rows of a's
// experts blocks (aFill; h's padding cleared) and h's fill recorded in hFill.
func Act(act program.Activation, a, u, h []float32, experts int, aFill, hFill *RowFill) {
	f := known(aFill, len(a), experts)
	setFill(hFill, f)
	forFilled(len(a), f, padOf(hFill, h), func(lo, hi int) {
		var ub []float32
		if u != nil {
			ub = u[lo:hi]
		}
		actForward(act, h[lo:hi], a[lo:hi], ub)
	})
}

// ActBwd: da (and, gated, du) from dh, each written or added to, over the filled rows
// the fill of a (else of dh) says, which it records for da and du.
func ActBwd(act program.Activation, dh, a, u, da, du []float32, accA, accU bool, experts int, dhFill, aFill, daFill, duFill *RowFill) {
	f := known(aFill, len(a), experts)
	if f == nil {
		f = known(dhFill, len(dh), experts)
	}
	setFill(daFill, f)
	if du != nil {
		setFill(duFill, f)
	}
	if f != nil && du != nil && !accU && clearsPad(duFill) {
		forFilled(len(a), f, du, func(int, int) {})
	}
	var pad []float32
	if !accA {
		pad = padOf(daFill, da)
	}
	forFilled(len(a), f, pad, func(lo, hi int) {
		var ub, dub []float32
		if u != nil {
			ub, dub = u[lo:hi], du[lo:hi]
		}
		actBackward(act, da[lo:hi], dub, dh[lo:hi], a[lo:hi], ub, accA, accU)
	})
}
