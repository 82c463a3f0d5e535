package exec

// The experts' buffers are statically sized, in one of two layouts (compiler/step's
// dispatch.go). Blocked, [experts, slots, width], slots being the route op's capacity:
// at run time expert e holds tokens in the first rows of its block only, as many as the
// permute op placed there (the route numbers an expert's slots 0, 1, … in token order);
// the rest is padding. Packed (a dropless layer without expert parallelism), [rows,
// width], rows being every assignment of the micro-batch: expert e's tokens are rows
// [offset[e], offset[e]+count[e]), offset the exclusive prefix sum of the counts (the
// route numbers each assignment's row so), and rows past the last expert's, if any, are
// padding. The permute op records the counts (and offsets) of its output, and the expert
// kernels (grouped products, activation, combine) carry them from their inputs to their
// outputs and compute only the filled rows, writing zeros into the padding of what they
// overwrite. A padding row's value reaches no result: the combine reads filled slots
// only, and the combine's backward leaves zero gradients in the padding, which the
// backward products and activation keep at zero. Buffers the counts do not reach (an
// all-to-all's output under expert parallelism, always blocked) are computed whole.
//
// The counts are the kernels' state between ops: one RowFill per buffer, kept in the
// rank's Kernels (Kernels.Fill) and passed to the expert kernels explicitly, by the
// executor and by a step program written out as Go alike, so both skip the same rows.

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// RowFill says which rows of an expert buffer hold tokens: blocked, rows [0, counts[e])
// of expert e's block of slots rows; packed, rows [offs[e], offs[e]+counts[e]) of the
// buffer's slots rows. Its zero value is an unknown fill (compute every row).
type RowFill struct {
	valid  bool
	packed bool
	slots  int // rows of an expert's block; packed, of the whole buffer
	counts []int32
	offs   []int32 // packed: each expert's first row
	// padUnread says no op of the program reads the buffer's padding (every reader is an
	// expert kernel that follows the counts), so the kernels that write it leave the
	// padding as it is instead of clearing it. Its zero value clears: a step program
	// written out as Go that does not call MarkPaddingUnread computes the same numbers.
	padUnread bool
}

// fillAware reports whether ops of kind k read an expert-major buffer's filled rows only.
func fillAware(k step.OpKind) bool {
	switch k {
	case step.OpGroupedMM, step.OpGroupedMMDX, step.OpGroupedMMDW, step.OpAct, step.OpActBwd,
		step.OpCombine, step.OpCombineBwd, step.OpPermuteBwd:
		return true
	}
	return false
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
			if !fillAware(op.Kind) {
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

// known is f when it is known and matches a buffer of n values over the given experts
// (packed: whatever the experts, the fill says), else nil (compute every row).
func known(f *RowFill, n, experts int) *RowFill {
	switch {
	case f == nil || !f.valid || f.slots <= 0:
		return nil
	case f.packed:
		if n%f.slots != 0 {
			return nil
		}
		return f
	case len(f.counts) != experts || n%(experts*f.slots) != 0:
		return nil
	}
	return f
}

// record marks f known and blocked with the given slots per expert; the caller sets its
// counts.
func (f *RowFill) record(slots int) *RowFill {
	f.valid, f.packed, f.slots = true, false, slots
	return f
}

// recordPacked marks f known and packed over a buffer of the given rows; the caller sets
// its counts and offsets.
func (f *RowFill) recordPacked(rows int) *RowFill {
	f.valid, f.packed, f.slots = true, true, rows
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
		if src.packed {
			dst.recordPacked(src.slots)
			copy(grow(&dst.offs, len(src.offs)), src.offs)
		} else {
			dst.record(src.slots)
		}
		copy(grow(&dst.counts, len(src.counts)), src.counts)
	}
}

// ofRows is f when it describes a buffer of the given rows in all, else nil.
func ofRows(f *RowFill, rows int) *RowFill {
	if f == nil || (f.packed && f.slots != rows) || (!f.packed && f.slots*len(f.counts) != rows) {
		return nil
	}
	return f
}

// span is the rows of expert ex a kernel computes, from first: of a blocked buffer whose
// blocks have R rows, its block's filled rows (all R without a fill); packed, its rows.
func span(f *RowFill, ex, R int) (first, rows int) {
	switch {
	case f == nil:
		return ex * R, R
	case f.packed:
		return int(f.offs[ex]), int(f.counts[ex])
	}
	return ex * R, min(int(f.counts[ex]), R)
}

// padding is the rows [lo, hi) of padding a kernel writing expert ex's rows clears: the
// rest of its block, or packed, the rows after the last expert's (cleared with it).
func padding(f *RowFill, ex, R int) (lo, hi int) {
	switch {
	case f == nil:
		return 0, 0
	case f.packed:
		if ex < len(f.counts)-1 {
			return 0, 0
		}
		return filledRows(f), f.slots
	}
	first, n := span(f, ex, R)
	return first + n, (ex + 1) * R
}

// filledRows is where a packed buffer's filled rows end.
func filledRows(f *RowFill) int {
	last := len(f.counts) - 1
	if last < 0 {
		return 0
	}
	return min(int(f.offs[last]+f.counts[last]), f.slots)
}

// forFilled runs body over the filled values of a buffer of n values (all of them when f
// is nil), split over the cores, after clearing the padding when clearPad.
func forFilled(n int, f *RowFill, clearPad []float32, body func(lo, hi int)) {
	if f == nil {
		parallel(n, body)
		return
	}
	if f.packed {
		end := filledRows(f) * (n / f.slots)
		if clearPad != nil {
			clear(clearPad[end:n])
		}
		parallel(end, body)
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

// packedFillKnown refuses an expert product over a packed dispatch buffer ([rows, width]:
// dropless routing without expert parallelism) whose fill no permute recorded: the
// experts' rows are where the counts and offsets say, so without them every row would
// meet a wrong expert's weights. A blocked buffer ([experts, slots, width]) without a
// fill is computed whole, which is right.
func (e *Executor) packedFillKnown(bufs ...int) error {
	for _, b := range bufs {
		if len(e.p.Buffers[b].Shape) != 2 {
			continue
		}
		if f := e.Fill(b); !f.valid || !f.packed {
			return fmt.Errorf("exec: expert product over the packed dispatch buffer %s, whose expert counts no permute of this step recorded (a program that reads a packed buffer before the route and permute that fill it)", e.p.Buffers[b].Name)
		}
	}
	return nil
}
