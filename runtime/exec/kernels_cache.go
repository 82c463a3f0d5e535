package exec

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/step"
)

// cacheMove runs a unified-cache op (compiler/step's cache.go). On the CPU both tiers are
// memory: a fetch copies a unit's host tensors into their device copies, a write-back adds
// (or, for the step's first contribution, copies) device gradients into the host ones,
// and an eviction moves nothing (the copies are unchanged; their arena bytes are free
// again once the memory plan says so). The bytes copied count toward Stats.CacheMoved.
func (e *Executor) cacheMove(op *step.Op) error {
	if op.Kind == step.OpCacheEvict {
		return nil
	}
	if len(op.In) != len(op.Out) {
		return fmt.Errorf("%d sources for %d destinations", len(op.In), len(op.Out))
	}
	for i, src := range op.In {
		from, to := e.f32[src], e.f32[op.Out[i]]
		if len(from) != len(to) {
			return fmt.Errorf("%s has %d values, %s %d", e.p.Buffers[src].Name, len(from), e.p.Buffers[op.Out[i]].Name, len(to))
		}
		e.CacheMove(from, to, op.Kind == step.OpCacheWriteback && op.Accumulates(i))
	}
	return nil
}

// CacheMove copies one tensor of a unified-cache fetch or write-back from one tier's copy
// to the other's (with add, a write-back's later contribution, adds it) and counts the
// bytes in the step's Stats.CacheMoved.
func (k *Kernels) CacheMove(from, to []float32, add bool) {
	if add {
		for j, v := range from {
			to[j] += v
		}
	} else {
		copy(to, from)
	}
	k.stats.CacheMoved += 4 * int64(len(from))
}
