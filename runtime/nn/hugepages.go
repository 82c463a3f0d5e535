package nn

import (
	"unsafe"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/hugepages"
)

// minArenaBytes is the smallest model whose weights get an arena: below it the weights
// fit the TLB's reach of small pages anyway.
const minArenaBytes = 4 << 20

// weightArena hands out a model's weight buffers from one allocation whose 2 MiB-aligned
// interior the kernel is asked to back with transparent huge pages (hugepages.Advise, before
// the weights are first written). Decoding at batch 1 streams every weight it uses once
// per token: with 4 KiB pages that is a TLB miss every 4 KiB of the moebench model's
// 16 MiB a token (about a third of its CPU time a token went away with them), with 2 MiB
// pages almost none. Buffers are
// carved in creation order with no padding, so the arena costs no memory; a buffer that
// no longer fits (a tensor the parameter walk does not list) gets its own allocation.
type weightArena[F Float] struct {
	all, free []F
}

// newWeightArena makes the arena for m's weights, nil when m is small or its parameters
// cannot be listed.
func newWeightArena[F Float](m *program.Model) *weightArena[F] {
	ps, err := params.Walk(m)
	if err != nil {
		return nil
	}
	var n int64
	for _, p := range ps {
		n += p.Elements()
	}
	var zero F
	if n*int64(unsafe.Sizeof(zero)) < minArenaBytes {
		return nil
	}
	all := make([]F, n)
	hugepages.Advise(hugepages.Interior(all), false)
	return &weightArena[F]{all: all, free: all}
}

// take returns a buffer of n values: the arena's next n, or a new slice when a (or its
// room) is missing.
func (a *weightArena[F]) take(n int) []F {
	if a == nil || len(a.free) < n {
		return make([]F, n)
	}
	w := a.free[:n:n]
	a.free = a.free[n:]
	return w
}

// settle asks the kernel once more, now that every weight is written, to back the arena
// with huge pages (collapsing what an earlier use of the memory left in small pages).
func (a *weightArena[F]) settle() {
	if a != nil {
		hugepages.Advise(hugepages.Interior(a.all), true)
	}
}

// leaveArena moves the float32 weights a model still holds out of its arena into buffers
// of their own (releaseQuantized calls it): the arena is one allocation, so a norm scale
// left in it would keep the quantised matrices' float32 values alive.
func (m *Model) leaveArena() {
	c := m.c
	if !c.inArena {
		return
	}
	for _, t := range c.storage {
		if t.w != nil {
			t.w = append([]float32(nil), t.w...)
		}
	}
	for _, t := range c.params {
		if t.base != nil && t.w != nil {
			t.w = t.base.w[t.off : t.off+len(t.w) : t.off+len(t.w)]
		}
	}
	byName := make(map[string]*tensor[float32], len(c.params))
	for _, t := range c.params {
		byName[t.name] = t
	}
	for _, p := range m.params {
		if t := byName[p.Name]; t != nil && p.W != nil {
			p.W = t.w
		}
	}
	c.inArena = false
}
