package plan

import (
	"math"

	"github.com/moec-dev/moec/compiler/program"
)

// ParallelLayout is one point of the search space.
type ParallelLayout struct {
	DP         int                `json:"dp"`          // data-parallel ranks (the expert-parallel group lives inside them)
	EP         int                `json:"ep"`          // expert-parallel ranks: each holds experts/ep experts per MoE layer
	EDP        int                `json:"edp"`         // expert-data-parallel ranks (dp/ep): the ZeRO group of expert states
	TP         int                `json:"tp"`          // tensor-parallel ranks (inside a node)
	PP         int                `json:"pp"`          // pipeline stages
	Memory     program.MemoryKind `json:"memory"`      // "zero" or "unified_cache"
	ZeRO       int                `json:"zero"`        // ZeRO stage 0..3 (unified cache: 3)
	Offload    program.Offload    `json:"offload"`     // "none", "cpu", "nvme"
	MicroBatch int                `json:"micro_batch"` // sequences per micro-batch per data-parallel rank
	GradAccum  int                `json:"grad_accum"`  // micro-batches per step per data-parallel rank
	Batch      int                `json:"batch"`       // sequences per step: dp × micro_batch × grad_accum
	Recompute  program.Recompute  `json:"recompute"`   // "none", "selective", "full"
}

// World is the number of devices the layout uses.
func (l ParallelLayout) World() int { return l.DP * l.TP * l.PP }

// Component indexes the parts of a device's memory.
type component int

const (
	compParams component = iota
	compGrads
	compOptimizer
	compActivations
	compDispatch
	compTemp
	compReserve
	compTeacher // a distillation stage's teacher weights
	nComp
)

var componentNames = [nComp]string{"parameters", "gradients", "optimizer states", "activations", "moe dispatch buffers", "temporary buffers", "reserve", "teacher weights"}

// shown reports whether a component has a row in the memory tables: the teacher's only
// where there is one.
func shown(c component, bytes float64) bool { return c != compTeacher || bytes > 0 }

// tierBytes is one tier's use by component.
type tierBytes [nComp]float64

func (t *tierBytes) sum() float64 {
	var s float64
	for _, v := range t {
		s += v
	}
	return s
}

// largest returns the component holding the most bytes.
func (t *tierBytes) largest() component {
	best := component(0)
	for c := component(1); c < nComp; c++ {
		if t[c] > t[best] {
			best = c
		}
	}
	return best
}

// memoryUse is a candidate's memory on the worst device of each tier: GPU bytes per device,
// host and NVMe bytes per node.
type memoryUse struct {
	gpu, host, nvme          tierBytes
	gpuCap, hostCap, nvmeCap float64
	cachedFraction           float64 // unified cache: share of the rank's states resident on the GPU
	stage                    int     // pipeline stage of the worst GPU
	hostShare                float64 // sharedHost: bytes of the device's share the host tier holds (gpuCap is net of them)
}

// overflow returns the worst tier's excess ratio (used/capacity; > 1 does not fit) and
// which tier it is.
func (m *memoryUse) overflow() (ratio float64, tier string) {
	ratio, tier = ratioOf(m.gpu.sum(), m.gpuCap), "gpu"
	if r := ratioOf(m.host.sum(), m.hostCap); r > ratio {
		ratio, tier = r, "host"
	}
	if r := ratioOf(m.nvme.sum(), m.nvmeCap); r > ratio {
		ratio, tier = r, "nvme"
	}
	return ratio, tier
}

func ratioOf(used, capacity float64) float64 {
	if used <= 0 {
		return 0
	}
	if capacity <= 0 {
		return math.Inf(1)
	}
	return used / capacity
}

func (m *memoryUse) fits() bool {
	r, _ := m.overflow()
	return r <= 1
}

// env is what memory and time need besides the layout: the workload, the cluster, the
// assumptions and the training precision.
type env struct {
	w      *workload
	c      *program.Cluster
	a      *Assumptions
	prec   program.Precision
	train  bool
	stages map[int][]stageShape // by pipeline size
	divs   map[int][]int        // divisors, memoised for the search
	peak   float64              // dense FLOP/s per device at prec
	cpu    *stepMemory          // local CPU plans: each rank's step program (local_step.go), else nil
	// sharedHost says the device tier is the host's memory (CPU ranks, see localCluster):
	// what the host tier holds comes out of the devices' shares.
	sharedHost bool
	// delayedUpdate is Options.DelayedUpdate: host updates run one step late (ZeRO-Offload's DPU).
	delayedUpdate bool
}

func newEnv(w *workload, c *program.Cluster, a *Assumptions, prec program.Precision, train bool) *env {
	e := &env{w: w, c: c, a: a, prec: prec, train: train, stages: map[int][]stageShape{}, divs: map[int][]int{}}
	e.peak = c.Device.PeakFLOPs[prec]
	if e.peak == 0 {
		e.peak = c.Device.PeakFLOPs[program.FP32]
	}
	return e
}

func (e *env) stageShapes(pp int) []stageShape {
	s, ok := e.stages[pp]
	if !ok {
		s = e.w.stages(pp)
		e.stages[pp] = s
	}
	return s
}

// memory evaluates the worst device of each tier for training with layout l.
func (e *env) memory(l ParallelLayout) memoryUse {
	if e.cpu != nil {
		return e.cpu.memory(l, float64(e.c.Device.Memory))
	}
	var best memoryUse
	bestRatio := -1.0
	for _, st := range e.stageShapes(l.PP) {
		m := e.stageMemory(l, st)
		if r, _ := m.overflow(); r > bestRatio {
			best, bestRatio = m, r
		}
	}
	return best
}

// stageMemory is the memory of a device in pipeline stage st. The formulas are those of
// the ZeRO paper (Rajbhandari et al. 2020, §5: (2+2+K)Ψ/Nd at stage 3) applied per group:
// dense parameters shard over the data-parallel group, routed experts over the
// expert-data-parallel group (DeepSpeed-MoE), each after tensor and expert slicing.
func (e *env) stageMemory(l ParallelLayout, st stageShape) memoryUse {
	a, c := e.a, e.c
	m := memoryUse{
		gpuCap:  float64(c.Device.Memory),
		hostCap: float64(c.HostMemory) * a.HostUsable,
		nvmeCap: float64(c.NVMe) * a.NVMeUsable,
		stage:   st.index,
	}
	tp, ep := float64(l.TP), float64(l.EP)
	dp, edp := float64(l.DP), float64(l.EDP)
	dense := float64(st.dense) / tp
	experts := float64(st.experts) / (tp * ep)
	// sharded is the rank's share of the stage's parameters once partitioned over the
	// data-parallel groups.
	sharded := dense/dp + experts/edp
	full := dense + experts
	at := func(stage int) float64 {
		if l.ZeRO >= stage {
			return sharded
		}
		return full
	}
	wb, gb, ob := a.WeightBytes, a.GradBytes, a.OptimizerBytes()
	gpn := float64(c.GPUsPerNode)

	act, dispatch := e.activations(l, st)
	m.gpu[compActivations] = act
	m.gpu[compDispatch] = dispatch
	m.gpu[compReserve] = float64(a.Reserve)
	m.gpu[compTemp] = e.tempBuffers(l, st)
	m.gpu[compTeacher] = e.w.teacherWeights(l.TP, l.DP, l.PP) * a.WeightBytes

	switch {
	case l.Memory == "unified_cache":
		// AngelPTM: states live in one page pool over GPU and host memory; what the GPU
		// has left after working memory caches the hottest pages.
		// Per parameter: 16-bit weights and gradients, the fp32 gradient CPU-Adam reads,
		// and the optimizer states (2+2+4+12 = 20 bytes in mixed precision).
		per := wb + gb + a.HostGradBytes + ob
		states := sharded * per
		free := m.gpuCap - m.gpu.sum()
		cached := math.Max(0, math.Min(states, free))
		if states > 0 {
			m.cachedFraction = cached / states
		}
		// Cached pages hold the same mix of weights, gradients and optimizer states as
		// the rank's whole share, so the table splits them in that proportion.
		m.gpu[compParams] = cached * wb / per
		m.gpu[compGrads] = cached * (gb + a.HostGradBytes) / per
		m.gpu[compOptimizer] = cached * ob / per
		host := (states - cached) * gpn
		// The host side splits the same way as the rank's states.
		m.host[compParams] = host * wb / per
		m.host[compGrads] = host * (gb + a.HostGradBytes) / per
		m.host[compOptimizer] = host * ob / per
	case l.Offload != "none" && l.ZeRO == 3:
		// ZeRO-Infinity: weights, gradients (the 16-bit partition lands in a host buffer
		// before CPU-Adam's fp32 copy) and optimizer states leave the GPU; gathered layers
		// live in temporary buffers.
		frag := a.OffloadFragmentation
		grads := sharded * (gb + a.HostGradBytes) * gpn * frag
		if l.Offload == "nvme" {
			m.nvme[compParams] = sharded * wb * gpn
			m.nvme[compOptimizer] = sharded * ob * gpn
			m.host[compGrads] = grads
		} else {
			m.host[compParams] = sharded * wb * gpn * frag
			m.host[compGrads] = grads
			m.host[compOptimizer] = sharded * ob * gpn * frag
		}
	case l.Offload != "none":
		// ZeRO-Offload (stages 1-2): weights stay on the GPU; gradients stream to the
		// host bucket by bucket, the CPU updates the partitioned optimizer states.
		frag := a.OffloadFragmentation
		m.gpu[compParams] = full * wb
		if l.ZeRO < 2 {
			m.gpu[compGrads] = full * gb
		}
		m.host[compGrads] = sharded * (gb + a.HostGradBytes) * gpn * frag
		if l.Offload == "nvme" {
			m.nvme[compOptimizer] = sharded * ob * gpn
		} else {
			m.host[compOptimizer] = sharded * ob * gpn * frag
		}
	default:
		m.gpu[compParams] = at(3) * wb
		m.gpu[compGrads] = at(2) * gb
		m.gpu[compOptimizer] = at(1) * ob
	}
	if e.sharedHost {
		// Offloaded or cached-out states stay in the same memory: each rank's share of
		// the node's host bytes leaves that much less for its device tier.
		m.hostShare = m.host.sum() / gpn
		m.gpuCap -= m.hostShare
	}
	return m
}

// tempBuffers are the GPU's transient buffers: ZeRO-3's gathered layers, the gradient
// reduce bucket, the output logits on the last stage, and the attention weights that
// sharing passes between pipeline stages (sharedWeightsPP; the step program's memory
// tables count its pipeline receive buffers as temporary buffers too).
func (e *env) tempBuffers(l ParallelLayout, st stageShape) float64 {
	a := e.a
	var t float64
	if l.ZeRO >= 3 {
		layer := float64(st.maxDense)/float64(l.TP) + float64(st.maxExperts)/float64(l.TP*l.EP)
		t += a.LiveLayers * layer * a.WeightBytes
	}
	if l.DP > 1 || l.Offload != "none" {
		// A bucket is never larger than the gradients it carries.
		grads := (float64(st.dense)/float64(l.TP) + float64(st.experts)/float64(l.TP*l.EP)) * a.GradBytes
		t += math.Min(float64(a.GradBucketBytes), grads)
	}
	if st.last {
		tokens := float64(l.MicroBatch) * float64(e.w.seqLen)
		t += tokens * float64(e.w.vocab) / float64(l.TP) * a.LogitsBytes
	}
	return t + e.sharedWeightsPP(l, st)
}

// inFlightMicros is the number of micro-batches whose activations a device of stage st
// holds at once under 1F1B: pp − stage, at most the step's micro-batches, at least one.
func inFlightMicros(l ParallelLayout, st stageShape) float64 {
	return float64(max(min(l.PP-st.index, l.GradAccum), 1))
}

// sharedWeightsPP is the bytes of the pipeline buffers of attention-weight sharing
// (share_weights in (0, 1), pp > 1, not latent attention; compiler/step's share_pp.go)
// that a device of stage st holds at its peak, as the step program's memory plan places
// them. Each buffer is one micro-batch's attention weights on the rank's heads,
// [micro_batch, heads/tp, seq, seq]:
//   - a stage before the last holds, in each backward, the gradient of the weights it sent,
//     received before its last layer's backward: one buffer, live at the backward's peak;
//   - a stage after the first receives the previous stage's weights in each forward. Without
//     recompute the first layer's share_select copies them into its selected weights (which
//     the layer's score term already counts: a stage's first layer is counted as computing
//     its own) and the receive buffer dies there. Under selective or full recompute the
//     backward runs share_select again, so each in-flight micro-batch's received weights
//     live until its backward; full recompute rebuilds the first layer before the peak of a
//     one-layer stage, which then holds one fewer.
//
// The sent weights are the last layer's selected weights, an activation the backward keeps
// anyway: sending them keeps no extra buffer.
func (e *env) sharedWeightsPP(l ParallelLayout, st stageShape) float64 {
	w := e.w
	if l.PP <= 1 || !w.sharesWeights {
		return 0
	}
	one := e.weightsBytes(l)
	n := 0.0
	if !st.last {
		n++
	}
	if !st.first {
		switch l.Recompute {
		case "selective":
			n += inFlightMicros(l, st)
		case "full":
			n += inFlightMicros(l, st)
			if st.layers == 1 {
				n--
			}
		}
	}
	return n * one
}

// activations returns the activation bytes a device of stage st holds at peak, and the MoE
// dispatch/combine buffers, following Korthikanti et al. 2022 (Table 2): per layer
// sbh(34 + 5as/h) bytes without recompute for a standard layer (4h MLP, 2-byte activations,
// 1-byte dropout masks), split by t under tensor + sequence parallelism, the as²b term
// counting the attention-weight tensors the layer keeps (scoreTensors); selective recompute
// drops the attention-score term; full recompute keeps only each layer's input (and, with
// sharing, the weights the layer above reruns with: sharedWeightsKept).
// Under 1F1B the first stage holds min(pp, micro-batches) micro-batches in flight.
func (e *env) activations(l ParallelLayout, st stageShape) (act, dispatch float64) {
	w, a := e.w, e.a
	s, b := float64(w.seqLen), float64(l.MicroBatch)
	sb := s * b
	inFlight := inFlightMicros(l, st)
	dense, score, moeExtra, disp := e.layerActivations(l)
	// Attention sharing does not lower the peak: the dice are drawn every step, and a step
	// whose every layer recomputes its weights stores every layer's scores (the step
	// program allocates them all), so the plan counts them all; sharing saves time, not
	// memory.
	perMB := func(withScores bool) (float64, float64) {
		v := float64(st.layers)*dense + float64(st.moeLayers)*moeExtra
		if withScores {
			v += e.stageScores(l, st, score)
		}
		return v, float64(st.moeLayers) * disp
	}
	kept := e.sharedWeightsKept(l, st) * inFlight
	switch l.Recompute {
	case "none":
		v, d := perMB(true)
		return v * inFlight, d * inFlight
	case "selective":
		v, d := perMB(false)
		// One layer's scores exist while it is being recomputed.
		return v*inFlight + score + kept, d * inFlight
	default: // full: each layer keeps its input; one layer's working set is rebuilt at a time
		in := a.ActivationBytes * sb * float64(w.d) / e.tpSplit(l)
		one := dense + score + moeExtra
		return float64(st.layers)*in*inFlight + one + kept, disp
	}
}

// sharedWeightsKept is the bytes of attention weights that attention-weight sharing keeps
// from the forward to the backward within a stage, per micro-batch in flight, under
// selective or full recompute. Recompute reruns a layer's attention core before its
// backward, and with it the layer's share_select, which reads the layer below's selected
// weights: those are that layer's input as much as the residual stream is (a checkpoint
// of a layer whose weights may come from the layer below must save them), so every layer
// of the stage but the last keeps one [micro_batch, heads/tp, seq, seq] buffer until the
// backward of the layer above; all are live when the backward of the stage's last layer
// begins. Without recompute the score term already counts every layer's weights; a
// stage's first layer receives its input weights from the stage below (sharedWeightsPP).
// Latent attention and share_weights = 1 share nothing.
func (e *env) sharedWeightsKept(l ParallelLayout, st stageShape) float64 {
	w := e.w
	if l.Recompute == "none" || !w.sharesWeights || st.layers < 2 {
		return 0
	}
	return float64(st.layers-1) * e.weightsBytes(l)
}

// weightsBytes is one micro-batch's attention weights on a rank's heads,
// [micro_batch, heads/tp, seq, seq] in activation bytes.
func (e *env) weightsBytes(l ParallelLayout) float64 {
	s := float64(e.w.seqLen)
	return e.a.ActivationBytes * float64(l.MicroBatch) * float64(e.w.heads/int64(l.TP)) * s * s
}

// tpSplit is how many ways the sbh-sized activations split: t with sequence parallelism.
func (e *env) tpSplit(l ParallelLayout) float64 {
	if e.a.SequenceParallel {
		return float64(l.TP)
	}
	return 1
}

// stageScores is the attention weights a stage's layers keep into the backward without
// recompute, score (layerActivations) each; with sharing but no talking heads the model's
// first layer selects nothing, so keeps one tensor fewer (its softmax's output is the
// weights its values read).
func (e *env) stageScores(l ParallelLayout, st stageShape, score float64) float64 {
	w := e.w
	v := float64(st.layers) * score
	if st.first && st.layers > 0 && !w.talkingHeads && w.sharesWeights {
		v -= e.weightsBytes(l)
	}
	return v
}

// scoreTensors is how many [b, heads/t, s, s] tensors of attention weights a layer's
// backward reads, as the step program keeps them: the softmax's output; with talking
// heads the pre-softmax mixer's input (the raw scores, for its weight's gradient) and the
// post-softmax mixer's output; with attention-weight sharing the selected weights (the
// layer's own or the layer below's, a tensor of their own). Dropout (dropout_masks, as
// Korthikanti et al. count it) adds its output beside its 1-byte mask: the plain layer
// with dropout is their 2 tensors and a mask (5as²b in 16 bits).
func (e *env) scoreTensors() float64 {
	w := e.w
	k := 1.0
	if w.talkingHeads {
		k++
	}
	if w.talkingHeads || w.sharesWeights {
		k++
	}
	if e.a.DropoutMasks {
		k++
	}
	return k
}

// layerActivations returns, per micro-batch and per layer, the bytes of a dense layer
// without the attention scores, the scores (the as²b terms), what an MoE layer adds over a
// dense layer, and the MoE dispatch + combine buffers.
func (e *env) layerActivations(l ParallelLayout) (dense, score, moeExtra, dispatch float64) {
	w, a := e.w, e.a
	s, b := float64(w.seqLen), float64(l.MicroBatch)
	sb := s * b
	h := float64(w.d)
	t := float64(l.TP)
	ab := a.ActivationBytes
	mask := 0.0
	if a.DropoutMasks {
		mask = 1
	}
	sp := e.tpSplit(l)
	// Replicated across TP without sequence parallelism: two norm inputs, the QKV and MLP
	// inputs, and two dropout masks (Korthikanti's 10sbh).
	repl := sb * h * (2*ab + 2*ab + 2*mask)
	// Split by TP: Q, K, V and the attention output (QKV input counted above).
	attn := sb * ab * (float64(w.qDim) + 2*float64(w.kvDim) + float64(w.qDim)) / t
	ffn := func(f float64, gated bool) float64 {
		k := 2.0
		if gated {
			k = 3
		}
		return sb * ab * k * f / t
	}
	score = (e.scoreTensors()*ab + mask) * float64(w.heads) * s * s * b / t
	dense = repl/sp + attn + ffn(float64(w.ffnHidden), w.gated)
	if w.isMoE() {
		// An MoE layer swaps the dense MLP for routed experts over top_k × capacity copies
		// of each token, plus router logits and probabilities in fp32.
		c := float64(w.topK) * w.routeFactor
		experts := c * ffn(float64(w.expertHidden), w.expertGated)
		shared := float64(w.sharedExperts) * ffn(float64(w.sharedHidden), w.expertGated)
		router := 2 * 4 * sb * float64(w.experts) / sp
		moeExtra = experts + shared + router - ffn(float64(w.ffnHidden), w.gated)
		if w.parallelDense {
			moeExtra += ffn(float64(w.ffnHidden), w.gated)
		}
		dispatch = 2 * ab * c * sb * h / sp
	}
	return dense, score, moeExtra, dispatch
}
