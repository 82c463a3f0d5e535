package step

import (
	"fmt"
	"sort"
)

// MemoryPlan places every buffer of a program in one arena per tier, from the buffers'
// lifetimes, so that a step allocates nothing.
type MemoryPlan struct {
	// Arena is each tier's arena size: the bytes a rank allocates once.
	Arena [2]int64
	// Peak is each tier's largest total of buffers live at one op: a lower bound no
	// placement can beat (Arena/Peak measures the placement's fragmentation).
	Peak [2]int64
	// PeakOp is the op at which the device tier peaks.
	PeakOp int
	// Persistent is the bytes of parameters, gradients and optimizer states per tier.
	Persistent [2]int64
	// ByKind is the bytes of each kind of buffer live at the device peak.
	ByKind map[Kind]int64
	// Lifetime is each buffer's [first, last] op (persistent buffers: the whole step).
	Lifetime [][2]int
}

// Lifetimes is each buffer's first and last op (persistent buffers and the step's inputs:
// from op 0); a buffer no op touches gets [-1, -1]. A program written out as source (the
// generated Go program) recomputes them instead of listing them.
func Lifetimes(p *Program) [][2]int {
	lt := make([][2]int, len(p.Buffers))
	for i := range lt {
		lt[i] = [2]int{-1, -1}
	}
	touch := func(b, op int) {
		if lt[b][0] < 0 {
			lt[b][0] = op
		}
		lt[b][1] = op
	}
	for i, op := range p.Ops {
		for _, b := range op.In {
			touch(b, i)
		}
		for _, b := range op.Out {
			touch(b, i)
		}
	}
	last := max(len(p.Ops)-1, 0)
	for i, b := range p.Buffers {
		switch {
		case b.Kind.Persistent():
			lt[i] = [2]int{0, last}
		case b.Kind == KindInput && lt[i][0] >= 0:
			lt[i][0] = 0 // the step's tokens are in place before its first op
		}
	}
	return lt
}

// planMemory assigns offsets: buffers are placed largest first (ties by first use), each
// at the lowest offset where it overlaps no placed buffer whose lifetime overlaps its own.
func planMemory(p *Program) MemoryPlan { return planMemoryOf(p, Lifetimes(p)) }

// planMemoryOf is planMemory over the lifetimes lt (a buffer at [-1, -1] is not placed).
func planMemoryOf(p *Program, lt [][2]int) MemoryPlan {
	mp := MemoryPlan{ByKind: map[Kind]int64{}, Lifetime: lt}
	order := make([]int, 0, len(p.Buffers))
	for i := range p.Buffers {
		if lt[i][0] >= 0 {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool {
		ba, bb := p.Buffers[order[a]], p.Buffers[order[b]]
		if ba.Bytes() != bb.Bytes() {
			return ba.Bytes() > bb.Bytes()
		}
		return lt[order[a]][0] < lt[order[b]][0]
	})
	placed := [2][]int{}
	for _, i := range order {
		b := p.Buffers[i]
		tier := b.Tier
		type span struct{ lo, hi int64 }
		var busy []span
		for _, j := range placed[tier] {
			if lt[j][0] <= lt[i][1] && lt[i][0] <= lt[j][1] {
				busy = append(busy, span{p.Buffers[j].Offset, p.Buffers[j].Offset + align(p.Buffers[j].Bytes())})
			}
		}
		sort.Slice(busy, func(a, c int) bool { return busy[a].lo < busy[c].lo })
		off, size := int64(0), align(b.Bytes())
		for _, s := range busy {
			if off+size <= s.lo {
				break
			}
			off = max(off, s.hi)
		}
		b.Offset = off
		placed[tier] = append(placed[tier], i)
		mp.Arena[tier] = max(mp.Arena[tier], off+size)
		if b.Kind.Persistent() {
			mp.Persistent[tier] += b.Bytes()
		}
	}
	// The peak of live bytes, op by op (a sweep over lifetime ends).
	for tier := Device; tier <= Host; tier++ {
		delta := make([]int64, len(p.Ops)+1)
		for _, i := range placed[tier] {
			delta[lt[i][0]] += align(p.Buffers[i].Bytes())
			delta[lt[i][1]+1] -= align(p.Buffers[i].Bytes())
		}
		var live int64
		for op := 0; op < len(p.Ops); op++ {
			live += delta[op]
			if live > mp.Peak[tier] {
				mp.Peak[tier] = live
				if tier == Device {
					mp.PeakOp = op
				}
			}
		}
	}
	for _, i := range placed[Device] {
		if lt[i][0] <= mp.PeakOp && mp.PeakOp <= lt[i][1] {
			mp.ByKind[p.Buffers[i].Kind] += p.Buffers[i].Bytes()
		}
	}
	return mp
}

// alignment of every buffer's offset and size in an arena.
const alignment = 64

func align(n int64) int64 { return (n + alignment - 1) / alignment * alignment }

// WithoutBuffers is a copy of p whose memory plan leaves out the device buffers drop marks
// (a backend whose fused kernels never hold them: the scores and weights of attention
// computed with an online softmax), every other buffer placed again by the same rule, so
// the device arena shrinks by what the dropped buffers took at the peak. A dropped
// buffer's offset is -1: nothing may address it. It refuses to drop a persistent buffer,
// an input or a host buffer.
func (p *Program) WithoutBuffers(drop []bool) (*Program, error) {
	if len(drop) != len(p.Buffers) {
		return nil, fmt.Errorf("step: %d buffers to drop or keep for a program of %d", len(drop), len(p.Buffers))
	}
	q := *p
	q.Buffers = make([]*Buffer, len(p.Buffers))
	lt := Lifetimes(p)
	for i, b := range p.Buffers {
		c := *b
		q.Buffers[i] = &c
		if !drop[i] {
			continue
		}
		if b.Kind.Persistent() || b.Kind == KindInput || b.Tier != Device {
			return nil, fmt.Errorf("step: buffer %s (%s, %s tier) cannot be left out of the memory plan", b.Name, b.Kind, b.Tier)
		}
		lt[i] = [2]int{-1, -1}
		c.Offset = -1
	}
	q.Memory = planMemoryOf(&q, lt)
	return &q, nil
}
