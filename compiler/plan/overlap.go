package plan

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// Host update modes: how a step's CPU optimizer and PCIe traffic line up with the GPU's
// work. Each is a value of Timing.HostUpdate.
const (
	// HostUpdateNone: no state lives on the host; the GPU updates everything after the
	// backward pass.
	HostUpdateNone = "none"
	// HostUpdateAfterBackward: static ZeRO offload as DeepSpeed implements it (ZeRO-Offload,
	// ZeRO-Infinity): the CPU-Adam of a step starts once the backward is done and the GPU
	// waits for it; only the weight and gradient transfers hide behind compute
	// (overlap_offload). Also what every offloading strategy gets with host_update_overlap
	// off.
	HostUpdateAfterBackward = "after_backward"
	// HostUpdatePipelined: the unified cache's asynchronous host update. The backward
	// produces the gradients of one unit (a layer of the pipeline stage) at a time; the
	// unit's gradients go out over PCIe and the CPU updates it while the GPU computes the
	// backward of the next unit. GPU compute, PCIe and the CPU are three timelines of one
	// pipeline of units; what of the PCIe traffic and the CPU optimizer does not fit under
	// the backward is exposed.
	HostUpdatePipelined = "pipelined"
	// HostUpdateDelayed: ZeRO-Offload's one-step-delayed parameter update (DPU), asked for
	// with Options.DelayedUpdate: the host update of step t runs during the whole GPU step
	// t+1, whose forward uses weights one update old. It changes the training algorithm.
	HostUpdateDelayed = "delayed"
)

// hostTimeline is a step's host work, on its own timelines, before overlap.
type hostTimeline struct {
	gpuCompute   float64 // the step's compute (recompute included)
	gpuStep      float64 // the GPU's whole step: compute and critical-path communication, bubble included
	backward     float64 // the part of gpuCompute that is the backward pass (recompute included)
	units        int     // units the backward hands to the host one at a time
	microBatches int     // gradient accumulation: the host update waits for the last micro-batch
	transfer     float64 // PCIe (and NVMe) seconds
	hostOpt      float64 // CPU-Adam seconds
	gpuOpt       float64 // GPU optimizer seconds for the states the GPU holds
	overlapFrac  float64 // Assumptions.OverlapOffload
}

// hostOverlap is what a mode leaves exposed.
type hostOverlap struct {
	offloadExposed   float64
	optimizerExposed float64
	overlapped       float64 // transfer and CPU-optimizer seconds hidden behind GPU work
}

// pipelineSpan is the makespan of n units through stages taking the given seconds per
// unit each: the first unit passes every stage, the rest follow at the slowest stage's
// pace.
func pipelineSpan(n int, perUnit ...float64) float64 {
	sum, slowest := 0.0, 0.0
	for _, s := range perUnit {
		sum += s
		slowest = math.Max(slowest, s)
	}
	return sum + float64(n-1)*slowest
}

// exposed places the host work of h on its timelines for mode.
func (h hostTimeline) exposed(mode string) hostOverlap {
	var o hostOverlap
	switch mode {
	case HostUpdatePipelined:
		// Gradients are whole only after the last micro-batch: its backward is the window
		// of the pipeline. The transfers of the earlier micro-batches (weights in, and
		// gradients accumulated on the host) hide behind their compute as static offload's do.
		n, mbs := max(h.units, 1), float64(max(h.microBatches, 1))
		early := h.transfer * (mbs - 1) / mbs
		earlyExp := math.Max(0, early-h.overlapFrac*h.gpuCompute*(mbs-1)/mbs)
		window := h.backward / mbs
		g, p, c := window/float64(n), (h.transfer-early)/float64(n), h.hostOpt/float64(n)
		// The transfers alone, then the CPU behind them: what each adds beyond the window.
		o.offloadExposed = earlyExp + math.Max(0, pipelineSpan(n, g, p)-window)
		hostExp := math.Max(0, pipelineSpan(n, g, p, c)-window-(o.offloadExposed-earlyExp))
		o.optimizerExposed = math.Max(hostExp, h.gpuOpt)
		o.overlapped = h.transfer + h.hostOpt - o.offloadExposed - hostExp
	case HostUpdateDelayed:
		n := max(h.units, 1)
		p, c := h.transfer/float64(n), h.hostOpt/float64(n)
		o.offloadExposed = math.Max(0, h.transfer-h.gpuStep)
		hostExp := math.Max(0, pipelineSpan(n, p, c)-h.gpuStep-o.offloadExposed)
		o.optimizerExposed = math.Max(hostExp, h.gpuOpt)
		o.overlapped = h.transfer + h.hostOpt - o.offloadExposed - hostExp
	default:
		o.offloadExposed = math.Max(0, h.transfer-h.overlapFrac*h.gpuCompute)
		o.optimizerExposed = math.Max(h.hostOpt, h.gpuOpt)
		o.overlapped = h.transfer - o.offloadExposed
	}
	o.overlapped = math.Max(0, o.overlapped)
	return o
}

// hostUpdateMode is the overlap layout l allows: the delayed update where asked for (the
// caller has refused it for strategies without host state), the pipelined update for the
// unified cache, after the backward for static offload.
func (e *env) hostUpdateMode(l ParallelLayout, hostShare float64) string {
	switch {
	case hostShare <= 0:
		return HostUpdateNone
	case e.delayedUpdate:
		return HostUpdateDelayed
	case l.Memory == "unified_cache" && e.a.HostUpdateOverlap:
		return HostUpdatePipelined
	}
	return HostUpdateAfterBackward
}

// usesHost says whether strategy s keeps optimizer states on the host, so that a delayed
// update can apply to it.
func (s strategy) usesHost() bool {
	return s.memory == program.MemoryUnifiedCache || s.offload != program.OffloadNone
}

// hostUpdateText says in a sentence how a step's host update overlaps, for the report.
func hostUpdateText(mode string) string {
	switch mode {
	case HostUpdateAfterBackward:
		return "after the backward (static offload as DeepSpeed runs it): the CPU optimizer waits for the last gradient and the GPU waits for the CPU; only PCIe traffic hides behind `overlap_offload` of compute."
	case HostUpdatePipelined:
		return "pipelined (unified cache, `host_update_overlap`): each layer's gradients go out over PCIe and the CPU updates that layer while the GPU computes the next layer's backward; what of the transfers and the CPU optimizer exceeds the backward is exposed."
	case HostUpdateDelayed:
		return "delayed one step (ZeRO-Offload's DPU, asked for): the host update of one step runs during the next step's forward and backward, which use weights one update old; this changes the training algorithm."
	}
	return ""
}

// delayable keeps the strategies a delayed update applies to: those with host-held states.
func delayable(strats []strategy) []strategy {
	var out []strategy
	for _, s := range strats {
		if s.usesHost() {
			out = append(out, s)
		}
	}
	return out
}

// strategyName is the memory strategy a plan was asked for, as the user would write it.
func strategyName(opt string, declared program.MemoryStrategy) string {
	if opt != "" {
		return opt
	}
	if declared.Kind == program.MemoryUnifiedCache {
		return "unified_cache"
	}
	name := fmt.Sprintf("zero%d", declared.ZeROStage)
	if declared.Offload != "" && declared.Offload != program.OffloadNone {
		name += " offload " + string(declared.Offload)
	}
	return name + " (as the train block declares)"
}
