package plan

import "math"

// Timing is a training step's predicted time, by part.
type Timing struct {
	ComputeSeconds   float64 `json:"compute_seconds"`           // FLOPs / (peak × efficiency), recompute included, per step
	TeacherSeconds   float64 `json:"teacher_seconds,omitempty"` // of ComputeSeconds: a distillation teacher's forward
	BubbleFraction   float64 `json:"bubble_fraction"`           // pipeline bubble: (pp-1)/micro-batches
	TPSeconds        float64 `json:"tp_seconds"`                // tensor-parallel all-reduces (exposed)
	EPSeconds        float64 `json:"ep_seconds"`                // expert all-to-alls (exposed)
	PPSeconds        float64 `json:"pp_seconds"`                // pipeline sends (exposed)
	DPSeconds        float64 `json:"dp_seconds"`                // data-parallel / ZeRO traffic (total)
	DPExposed        float64 `json:"dp_exposed_seconds"`        // the part not hidden by the backward pass
	OffloadSeconds   float64 `json:"offload_seconds"`           // PCIe and NVMe traffic (total)
	OffloadExposed   float64 `json:"offload_exposed_seconds"`
	OptimizerSeconds float64 `json:"optimizer_seconds"` // optimizer step (GPU HBM-bound or CPU-Adam), before overlap
	// How the host update lines up with the GPU (HostUpdateNone, ...AfterBackward,
	// ...Pipelined, ...Delayed), what of the optimizer step is on the step's critical path,
	// and the offload and CPU-optimizer seconds hidden behind GPU work.
	HostUpdate       string  `json:"host_update,omitempty"`
	OptimizerExposed float64 `json:"optimizer_exposed_seconds"`
	HostOverlapped   float64 `json:"host_overlapped_seconds"`
	StepSeconds      float64 `json:"step_seconds"`
	TokensPerSecond  float64 `json:"tokens_per_second"`
	MFU              float64 `json:"mfu"` // model FLOPs (no recompute) / (peak × devices × step)
}

// stepTime models one training step of layout l whose memory is mem. When comm is not
// nil it receives the communication table.
func (e *env) stepTime(l ParallelLayout, mem *memoryUse, comm *[]Comm) Timing {
	c := &stepCost{e: e, l: l, comm: comm, lk: e.link(), mbs: float64(l.GradAccum)}
	w := e.w
	world := float64(l.World())
	tokens := float64(l.Batch) * float64(w.seqLen)
	c.compute(tokens / world)
	c.modelParallel()
	denseParams, expertParams := c.dataParallel()
	h := c.host(mem, denseParams, expertParams)
	t := &c.t
	perMB := (t.TPSeconds + t.EPSeconds + t.PPSeconds) / c.mbs
	critical := t.ComputeSeconds + perMB*c.mbs
	h.gpuStep = critical*(1+t.BubbleFraction) + t.DPExposed
	o := h.exposed(t.HostUpdate)
	t.OffloadExposed, t.OptimizerExposed, t.HostOverlapped = o.offloadExposed, o.optimizerExposed, o.overlapped
	t.StepSeconds = critical*(1+t.BubbleFraction) + t.DPExposed + t.OffloadExposed + t.OptimizerExposed
	if t.StepSeconds > 0 {
		t.TokensPerSecond = tokens / t.StepSeconds
		t.MFU = tokens * w.flops.TrainPerToken / (e.peak * world * t.StepSeconds)
	}
	return *t
}

// stepCost is one stepTime: the layout, the timing it fills and the communication table.
type stepCost struct {
	e    *env
	l    ParallelLayout
	t    Timing
	comm *[]Comm
	lk   link
	mbs  float64 // micro-batches a step
}

// add records c in the communication table, when one is asked for.
func (c *stepCost) add(cm Comm) {
	if c.comm != nil && cm.Bytes > 0 {
		*c.comm = append(*c.comm, cm)
	}
}

// compute is the compute time of perDevice tokens, by op class (dense, expert and attention
// products at their efficiencies, recompute included), and the pipeline bubble.
func (c *stepCost) compute(perDevice float64) {
	e, l, t := c.e, c.l, &c.t
	w, a := e.w, e.a
	f := w.flops
	attn := f.AttentionPerToken
	expert := w.expertFLOPsPerToken
	dense := f.ForwardPerToken + f.MTPPerToken - attn - expert
	fwdMul, attnMul := 3.0, 3.0
	switch l.Recompute {
	case "full":
		fwdMul, attnMul = 4, 4
	case "selective":
		attnMul = 4
	}
	expEff := a.ExpertEfficiency
	if w.isMoE() {
		perExpert := float64(l.MicroBatch) * float64(w.seqLen) * float64(w.topK) * w.routeFactor * float64(l.EP) / float64(w.experts)
		expEff *= math.Min(1, perExpert/a.ExpertSaturation)
		expEff = math.Max(expEff, 0.01)
	}
	t.ComputeSeconds = perDevice / e.peak * (dense*fwdMul/a.MatmulEfficiency + expert*fwdMul/expEff + attn*attnMul/a.AttentionEfficiency)
	if tw := w.teacher; tw != nil {
		// The teacher's forward on the same tokens, no backward and no recompute, its
		// experts at the same load per expert as the student's (at most).
		tf := tw.flops
		tExpert := tw.expertFLOPsPerToken
		tDense := tf.ForwardPerToken - tf.AttentionPerToken - tExpert
		t.TeacherSeconds = perDevice / e.peak * (tDense/a.MatmulEfficiency + tExpert/expEff + tf.AttentionPerToken/a.AttentionEfficiency)
		t.ComputeSeconds += t.TeacherSeconds
	}
	t.BubbleFraction = float64(l.PP-1) / c.mbs
}

// widestStage is the pipeline stage with the most parameters (it sets the data-parallel
// traffic) and the most MoE layers any stage holds (they set the all-to-alls).
func (c *stepCost) widestStage() (stageShape, float64) {
	shapes := c.e.stageShapes(c.l.PP)
	st := shapes[0]
	moeLayers := 0.0
	for _, s := range shapes {
		moeLayers = math.Max(moeLayers, float64(s.moeLayers))
		if s.dense+s.experts > st.dense+st.experts {
			st = s
		}
	}
	return st, moeLayers
}

// modelParallel is the tensor-, expert- and pipeline-parallel communication on the
// critical path.
func (c *stepCost) modelParallel() {
	e, l, t, lk, mbs := c.e, c.l, &c.t, c.lk, c.mbs
	w, a := e.w, e.a
	_, moeLayers := c.widestStage()
	layers := float64(len(w.layers) / l.PP)
	sp := e.tpSplit(l)
	actBytes := a.ActivationBytes * float64(l.MicroBatch) * float64(w.seqLen) * float64(w.d)
	add := c.add
	// Tensor parallel: two all-reduces forward, two backward per layer (plus two more when
	// the forward is recomputed), of a full activation.
	if l.TP > 1 {
		n := 4.0
		if l.Recompute == "full" {
			n = 6
		}
		g := group{l.TP, 1}
		count := n * layers * mbs
		t.TPSeconds = count * lk.allReduce(actBytes, g)
		add(Comm{"all-reduce", "tensor-parallel activations", l.TP, lk.tier(g), count * ringVolume(actBytes, l.TP), t.TPSeconds, true})
	}
	// Expert parallel: dispatch and combine forward, their transposes backward.
	if l.EP > 1 && w.isMoE() {
		n := 4.0
		if l.Recompute == "full" {
			n = 6
		}
		g := group{l.EP, l.TP}
		b := actBytes / sp * float64(w.topK) * w.routeFactor
		count := n * moeLayers * mbs
		t.EPSeconds = count * lk.allToAll(b, g)
		add(Comm{"all-to-all", "expert dispatch + combine (fwd, bwd)", l.EP, lk.tier(g), count * b * float64(l.EP-1) / float64(l.EP), t.EPSeconds, true})
	}
	// Pipeline: activations forward, their gradients backward, per micro-batch; with
	// attention-weight sharing the last layer's attention weights (the rank's heads'
	// [micro_batch, seq, seq] maps) and their gradients too (compiler/step's share_pp.go).
	if l.PP > 1 {
		g := group{l.PP, l.TP * l.DP}
		b := actBytes / sp
		what := "pipeline activations + gradients"
		if w.sharesWeights {
			b += e.weightsBytes(l)
			what = "pipeline activations, attention weights + gradients"
		}
		t.PPSeconds = 2 * mbs * lk.p2p(b, g)
		add(Comm{"send-recv", what, 2, lk.tier(g), 2 * mbs * b, t.PPSeconds, true})
	}

}

// dataParallel is the data-parallel and ZeRO communication over the data-parallel group
// for dense parameters and the expert-data-parallel group for experts, and the part the
// backward (or, under ZeRO 3, the whole step for the gathers) does not hide. It returns the parameters
// per tensor-parallel rank, dense and expert.
func (c *stepCost) dataParallel() (denseParams, expertParams float64) {
	e, l, t, lk, mbs := c.e, c.l, &c.t, c.lk, c.mbs
	a := e.a
	st, _ := c.widestStage()
	comm, add := c.comm, c.add
	denseParams = float64(st.dense) / float64(l.TP)
	expertParams = float64(st.experts) / float64(l.TP*l.EP)
	dg, eg := group{l.DP, l.TP}, group{l.EDP, l.TP * l.EP}
	afterBackward := 0.0 // ZeRO 3's reduce-scatters: one per group after the backward, beside nothing
	dpColl := func(params float64, g group, what string) {
		if g.size <= 1 || params <= 0 {
			return
		}
		if l.ZeRO >= 3 {
			pb, gb := params*a.WeightBytes, params*a.GradBytes
			ag := 2 * mbs * lk.allGather(pb, g)
			rs := mbs * lk.allGather(gb, g)
			t.DPSeconds += ag + rs
			if l.Memory != "unified_cache" { // the cache's own schedule (compiler/step's cache.go)
				afterBackward += rs
			}
			if comm != nil {
				add(Comm{"all-gather", what + " weights (ZeRO-3, fwd + bwd)", g.size, lk.tier(g), 2 * mbs * ringVolume(pb, g.size) / 2, ag, false})
				add(Comm{"reduce-scatter", what + " gradients (ZeRO-3)", g.size, lk.tier(g), mbs * ringVolume(gb, g.size) / 2, rs, false})
			}
			return
		}
		gb := params * a.GradBytes
		ar := lk.allReduce(gb, g)
		t.DPSeconds += ar
		name := "all-reduce"
		if l.ZeRO == 2 || l.Offload != "none" {
			name = "reduce-scatter + all-gather"
		}
		if comm != nil {
			add(Comm{name, what + " gradients", g.size, lk.tier(g), ringVolume(gb, g.size), ar, false})
		}
	}
	dpColl(denseParams, dg, "dense")
	dpColl(expertParams, eg, "expert")
	// What hides the traffic is what the step program (compiler/step) overlaps it with.
	// ZeRO 3: each layer's all-gathers run one layer ahead (compiler/step's prefetchLayer),
	// beside the previous layer's forward or the next one's backward: the whole step's
	// compute hides them, not the reduce-scatter after the backward.
	window := t.ComputeSeconds * a.OverlapDP
	switch {
	case l.ZeRO == 2:
		// The reduce-scatter packs each group's whole flat vector into the rank's
		// shard, after the backward: nothing runs beside it.
		window = 0
	case l.ZeRO < 2:
		// The gradients accumulate over the micro-batches; the all-reduces run in
		// buckets beside the last micro-batch's backward only (compiler/step's
		// bucket.go, as Megatron-Core's overlap_grad_reduce).
		window *= 2.0 / 3 / mbs
	}
	t.DPExposed = math.Max(0, t.DPSeconds-afterBackward-window) + afterBackward

	return denseParams, expertParams
}

// host is the offload traffic over PCIe (and NVMe) and the optimizer step, on the GPU for
// what it holds and on the CPUs for the rest: the timeline of the host update.
func (c *stepCost) host(mem *memoryUse, denseParams, expertParams float64) *hostTimeline {
	e, l, t, mbs := c.e, c.l, &c.t, c.mbs
	w, a := e.w, e.a
	add := c.add
	sharded := denseParams/float64(l.DP) + expertParams/float64(l.EDP)
	optShard := sharded
	if l.ZeRO == 0 {
		optShard = denseParams + expertParams
	}
	hostShare := 0.0 // fraction of the rank's states updated on the CPU
	switch {
	case l.Memory == "unified_cache":
		hostShare = 1 - mem.cachedFraction
	case l.Offload != "none":
		hostShare = 1
	}
	h := &hostTimeline{gpuCompute: t.ComputeSeconds, units: max(len(w.layers)/l.PP, 1), microBatches: l.GradAccum, overlapFrac: a.OverlapOffload}
	switch l.Recompute {
	case "full":
		h.backward = t.ComputeSeconds * 3 / 4 // the recomputed forward runs in the backward
	default:
		h.backward = t.ComputeSeconds * 2 / 3
	}
	if hostShare > 0 {
		var b float64
		if l.ZeRO >= 3 {
			b = mbs * sharded * (2*a.WeightBytes + a.GradBytes) * hostShare
		} else {
			b = sharded * (a.WeightBytes + a.GradBytes)
		}
		pcie := b / e.c.Device.HostLink
		add(Comm{"pcie", "offload: weights in, gradients out", 0, "pcie", b, pcie, false})
		t.OffloadSeconds += pcie
		if l.Offload == "nvme" && e.c.NVMeBW > 0 {
			nb := sharded * (2*a.OptimizerBytes() + a.WeightBytes) * float64(e.c.GPUsPerNode)
			nv := nb / e.c.NVMeBW
			add(Comm{"nvme", "optimizer states read + written", 0, "nvme", nb / float64(e.c.GPUsPerNode), nv, false})
			t.OffloadSeconds += nv
		}
		h.hostOpt = sharded * hostShare * float64(e.c.GPUsPerNode) / a.CPUAdamRate
	}
	h.transfer = t.OffloadSeconds
	// The GPU updates what it holds while the CPUs update the rest.
	h.gpuOpt = optShard * (1 - hostShare) * 2 * (a.WeightBytes + a.GradBytes + a.OptimizerBytes()) / e.c.Device.HBMBandwidth
	t.OptimizerSeconds = math.Max(h.hostOpt, h.gpuOpt)

	t.HostUpdate = e.hostUpdateMode(l, hostShare)
	return h
}
