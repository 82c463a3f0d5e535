package cudastep

import (
	"fmt"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// The step program's memory plan places every buffer its ops name, so that the CPU
// executor, which runs every op, allocates nothing during a step. The CUDA lowering runs
// some chains of ops as one fused kernel (flash.go, flash_mla.go: the [B, H, T, T] scores,
// their weights and both gradients are never written), and those buffers would still
// take their place in the device arena: at 32 heads and 4,096 positions a single one is
// 2 GiB per sequence. Options.Compact lowers once, marks the device buffers that nothing
// of the lowering touches, places the arena again without them (step's WithoutBuffers)
// and lowers the re-placed copy; a buffer the second lowering names after all fails the
// lowering rather than address memory it no longer owns.

// untouched marks the device buffers of p that low never touches: not persistent, not
// an input, and named by no launch (either branch of a conditional op) of any op whose
// lists name them, where none of those ops is a collective, a copy of the offloaded
// optimizer or the unified cache, or the gradient norm (whose calls, copies and host code
// address buffers by offset).
func untouched(p *step.Program, low *Lowered) []bool {
	named := make([]bool, len(p.Buffers))
	for _, ol := range low.Ops {
		for _, b := range launchBuffers(ol) {
			if b >= 0 && b < len(named) {
				named[b] = true
			}
		}
	}
	drop := make([]bool, len(p.Buffers))
	for i, b := range p.Buffers {
		drop[i] = !named[i] && b.Tier == step.Device && !b.Kind.Persistent() && b.Kind != step.KindInput
	}
	for k, op := range p.Ops {
		ol := low.Ops[k]
		if ol.Collective == nil && ol.Offload == nil && ol.Cache == nil && !ol.PublishNorm && op.Kind != step.OpGradNorm {
			continue
		}
		for _, b := range op.In {
			drop[b] = false
		}
		for _, b := range op.Out {
			drop[b] = false
		}
	}
	return drop
}

// compact is Options.Compact: low (lowered from low.Program as placed) lowered again over
// an arena without the buffers it never touches. A program that drops nothing, or one
// under the unified cache (whose slots the cache's own pass placed), is low itself.
func compact(low *Lowered, m *program.Model, o Options) (*Lowered, error) {
	p := low.Program
	if p.Layout.Cache.On() {
		return low, nil
	}
	drop := untouched(p, low)
	var dropped int64
	for i, d := range drop {
		if d {
			dropped += p.Buffers[i].Bytes()
		}
	}
	if dropped == 0 {
		return low, nil
	}
	q, err := p.WithoutBuffers(drop)
	if err != nil {
		return nil, fmt.Errorf("cudastep: %w", err)
	}
	again, err := lowerOnce(q, m, o)
	if err != nil {
		return nil, err
	}
	still := untouched(q, again)
	for i, d := range drop {
		if d && !still[i] {
			return nil, fmt.Errorf("cudastep: %s/%s: buffer %s left out of the arena is named by the lowering after all", p.Model, p.Stage, p.Buffers[i].Name)
		}
	}
	again.Dropped = dropped
	return again, nil
}
