package plan

import (
	"fmt"
	"math"
	"strings"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
)

// The CPU runtime's memory is its step programs' memory plans. A local plan (plan.Local,
// fp32 on the "cpu" device) lowers each candidate layout to the step programs `moec run`
// executes (compiler/step; runtime/exec allocates exactly one arena per tier as each
// program's memory plan sizes it) and reads each rank's bytes off the plan, per component
// and tier. Nothing here restates a runtime allocation: the program is the allocation.

// stepMemory predicts a CPU rank's memory by lowering its step program.
type stepMemory struct {
	m      *program.Model // the stage's model
	seqLen int
	// offload puts the optimizer (moments, fp32 master weights and the gradient shard the
	// update reads) in the host tier, as `moec run --offload` does.
	offload bool
	// recompute is the train block's mode, which the step engine runs: full runs each
	// layer's forward again before its backward, selective the attention core.
	recompute program.Recompute
	// cache is the unified cache as step programs run it (zero: none).
	cache step.Cache
	// sequenceParallel splits the tp ranks' token-wise regions (with tp > 1).
	sequenceParallel bool
	// gradBucket is the train block's zero(bucket = …) (0: the step program's default).
	gradBucket int64
	// distill is a distillation stage's loss, whose teacher logits the program holds.
	distill step.Distill
	lowered map[ParallelLayout]*loweredMemory
	// lowerErr is the last layout the step program refused (nil when every one lowered).
	lowerErr error
}

// loweredMemory is one layout's per-rank memory, from its programs.
type loweredMemory struct {
	ranks []ProgramMemory
	err   error
}

// ProgramMemory is what one rank's step program holds, per tier (step.Device, step.Host)
// and component (parameters, gradients, optimizer states, activations, moe dispatch
// buffers, temporary buffers): the bytes of the buffers live at the tier's peak, by kind
// (the memory plan's ByKind for the device tier). Arena is each tier's arena, which the
// executor allocates once (offsets are aligned, so an arena is at least its peak).
type ProgramMemory struct {
	Bytes [2][]Bytes
	Arena [2]int64
}

// Component returns the bytes of the named component in tier t (0 when absent).
func (pm ProgramMemory) Component(t step.Tier, name string) int64 {
	for _, b := range pm.Bytes[t] {
		if b.Name == name {
			return b.Bytes
		}
	}
	return 0
}

// componentOfKind is the memory component a step buffer of kind k counts toward.
func componentOfKind(k step.Kind) component {
	switch k {
	case step.KindParam, step.KindGathered:
		return compParams
	case step.KindGrad:
		return compGrads
	case step.KindOptimizer:
		return compOptimizer
	case step.KindActivation, step.KindActGrad:
		return compActivations
	case step.KindDispatch:
		return compDispatch
	}
	return compTemp // the step's inputs, pipeline receive buffers, scalars, host staging
}

// MemoryOf reads a rank's memory off its program's memory plan (see ProgramMemory). Both
// the planner and the runtime's memory report use it, so the two cannot classify a
// buffer differently.
func MemoryOf(p *step.Program) ProgramMemory {
	var tb [2]tierBytes
	for k, b := range p.Memory.ByKind {
		tb[step.Device][componentOfKind(k)] += float64(b)
	}
	// The host tier: the buffers live at its own peak (the memory plan records the
	// device's peak op only; the sweep is the plan's, over the same aligned sizes).
	if p.Memory.Arena[step.Host] > 0 {
		lt := p.Memory.Lifetime
		delta := make([]int64, len(p.Ops)+1)
		for i, b := range p.Buffers {
			if b.Tier == step.Host && lt[i][0] >= 0 {
				delta[lt[i][0]] += alignArena(b.Bytes())
				delta[lt[i][1]+1] -= alignArena(b.Bytes())
			}
		}
		peakOp, live, peak := 0, int64(0), int64(-1)
		for op := 0; op < len(p.Ops); op++ {
			live += delta[op]
			if live > peak {
				peak, peakOp = live, op
			}
		}
		for i, b := range p.Buffers {
			if b.Tier == step.Host && lt[i][0] >= 0 && lt[i][0] <= peakOp && peakOp <= lt[i][1] {
				tb[step.Host][componentOfKind(b.Kind)] += float64(b.Bytes())
			}
		}
	}
	pm := ProgramMemory{Arena: p.Memory.Arena}
	for t := range tb {
		for c := component(0); c < compReserve; c++ {
			pm.Bytes[t] = append(pm.Bytes[t], Bytes{componentNames[c], int64(tb[t][c])})
		}
	}
	return pm
}

// alignArena is the step memory plan's alignment of a buffer in its arena (64 bytes).
func alignArena(n int64) int64 { return (n + 63) / 64 * 64 }

// stepLayout is the step program's layout and batch for the candidate l: l.MicroBatch
// sequences per data-parallel replica, l.GradAccum micro-batches per step.
func (s *stepMemory) stepLayout(l ParallelLayout) (step.Layout, step.Batch) {
	sl := step.Layout{DP: l.DP, EP: max(l.EP, 1), TP: max(l.TP, 1), PP: max(l.PP, 1), ZeRO: l.ZeRO,
		OffloadOpt: s.offload, Recompute: s.recompute, Cache: s.cache, SequenceParallel: s.sequenceParallel && max(l.TP, 1) > 1, Distill: s.distill, GradBucket: s.gradBucket}
	return sl, step.Batch{MicroBatch: l.MicroBatch, SeqLen: s.seqLen, Micro: max(l.GradAccum, 1)}
}

// lower returns l's per-rank memory, lowering its programs once.
func (s *stepMemory) lower(l ParallelLayout) *loweredMemory {
	if lm, ok := s.lowered[l]; ok {
		return lm
	}
	sl, b := s.stepLayout(l)
	lm := &loweredMemory{}
	progs, err := step.Lower(s.m, b, sl)
	if err != nil {
		lm.err = fmt.Errorf("the step program does not lower %s: %w", sl, err)
		s.lowerErr = lm.err
	}
	for _, p := range progs {
		lm.ranks = append(lm.ranks, MemoryOf(p))
	}
	s.lowered[l] = lm
	return lm
}

// rankBytes returns rank r's bytes per component in the device and host tiers under l
// (false when the step program does not lower l).
func (s *stepMemory) rankBytes(l ParallelLayout, r int) (dev, host tierBytes, ok bool) {
	lm := s.lower(l)
	if lm.err != nil || r >= len(lm.ranks) {
		return dev, host, false
	}
	pm := lm.ranks[r]
	for c := component(0); c < compReserve; c++ {
		dev[c] = float64(pm.Bytes[step.Device][c].Bytes)
		host[c] = float64(pm.Bytes[step.Host][c].Bytes)
	}
	return dev, host, true
}

// memory is the worst rank's use for the search; capacities are each rank's share of the
// host (the device tier) and the whole usable host (the host tier, summed over ranks).
// Host-tier bytes come out of the same memory as the device tier, so they shrink it. A
// layout the step program does not lower never fits (lowerErr says why).
func (s *stepMemory) memory(l ParallelLayout, share float64) memoryUse {
	lm := s.lower(l)
	if lm.err != nil {
		m := memoryUse{gpuCap: share}
		m.gpu[compTemp] = math.Inf(1)
		return m
	}
	var hostAll tierBytes
	for r := range lm.ranks {
		_, host, _ := s.rankBytes(l, r)
		for k := range hostAll {
			hostAll[k] += host[k]
		}
	}
	var best memoryUse
	bestRatio := -1.0
	for r := range lm.ranks {
		dev, host, _ := s.rankBytes(l, r)
		m := memoryUse{gpu: dev, host: hostAll, gpuCap: share - host.sum()}
		if s.offload || s.cache.On() {
			m.hostCap = share * float64(len(lm.ranks))
		}
		if ratio, _ := m.overflow(); ratio > bestRatio {
			best, bestRatio = m, ratio
		}
	}
	return best
}

// arena is rank r's arenas under l (zero when l does not lower).
func (s *stepMemory) arena(l ParallelLayout, r int) [2]int64 {
	lm := s.lower(l)
	if lm.err != nil || r >= len(lm.ranks) {
		return [2]int64{}
	}
	return lm.ranks[r].Arena
}

// stepRefusals names the features the step program does not lower for m at tp × pp (the
// step column of the features table), "" when it lowers them all.
func stepRefusals(m *program.Model, tp, pp int) string {
	var names []string
	for _, g := range features.Refusals(m, features.Step, features.Layout{TP: tp, PP: pp}) {
		names = append(names, g.Feature.Name)
	}
	return strings.Join(names, ", ")
}
