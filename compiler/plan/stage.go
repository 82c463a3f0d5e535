package plan

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/lang/diag"
)

// trainSetup is everything ForStage resolves before searching.
type trainSetup struct {
	prog    *program.Program
	train   *program.Train
	stage   *program.Stage
	model   *program.Model
	cluster *program.Cluster // with Options applied
	env     *env
	space   *space
	at      diag.Range
}

// ForStage plans one stage of a curriculum on the train block's cluster.
func ForStage(prog *program.Program, train *program.Train, stage *program.Stage, opt Options) (p *Plan, ds diag.List) {
	defer func() {
		if r := recover(); r != nil {
			p = nil
			ds.Errorf(diag.CodeInternalPlanError, rangeOf(train.Decl), "internal error planning %s stage %s: %v", train.Name, stage.Name, r)
		}
	}()
	if c := prog.Clusters[train.Cluster]; c != nil && c.Device.Name == "cpu" && c.HostMemory > 0 && train.RunsOnCPU() &&
		opt.GPUs == 0 && opt.Nodes == 0 && opt.Memory == "" && opt.Objective == "" {
		// A CPU cluster's fp32 stage is what `moec run` executes: plan exactly that
		// layout (the runtime's micro-batch, no recompute, the cluster's ranks) rather than
		// searching what a GPU cluster could do, so the report describes the run. What-if
		// options (--gpus, --memory, ...) still search.
		if p, ds = LocalWith(prog, train, stage, max(c.Ranks, 1), LocalOptions{}); p != nil {
			p.Kind = "train"
		}
		return p, ds
	}
	s, ds := setupTrain(prog, train, stage, opt)
	if ds.HasErrors() {
		return nil, ds
	}
	res := s.env.search(s.space)
	if res.best == nil {
		s.noFit(&ds, res)
		return nil, ds
	}
	p = s.env.buildPlan(res, s.space)
	p.Kind, p.Model, p.Train, p.Stage = "train", train.Model, train.Name, stage.Name
	p.setBudget(train, stage, s.cluster.PricePerGPUHour)
	if n := distillNote(prog, train, stage, p.Workload.BatchTokens, train.Precision, true); n != "" {
		p.Notes = append(p.Notes, n)
	}
	if opt.DelayedUpdate {
		p.Notes = append(p.Notes, "the parameter update is delayed one step (asked for): each step's forward and backward use weights that do not yet include the previous step's gradients, as ZeRO-Offload's DPU does; this changes the training algorithm, so check convergence (ZeRO-Offload starts it after the first few hundred steps)")
	}
	return p, ds
}

// setBudget fills the workload's batch and budget and the totals: the stage's steps are
// counted at the batch the layout runs (program.Stage.StepsAt), and a batch that differs
// from tokens_per_batch as written is said in a note.
func (p *Plan) setBudget(train *program.Train, stage *program.Stage, price float64) {
	p.Workload.TokensPerBatch = train.TokensPerBatch
	p.Workload.Tokens = stage.TokensAt(p.Workload.BatchTokens)
	p.Totals = totals(stage.StepsAt(p.Workload.BatchTokens), p.GPUs, p.Time, price)
	if p.Workload.BatchTokens != train.TokensPerBatch {
		l := p.Layout
		p.Notes = append(p.Notes, fmt.Sprintf("the batch runs as %s sequences (dp %d × micro-batch %s × grad_accum %d) of %d tokens, %s tokens per step, not tokens_per_batch = %s as written: each data-parallel rank runs whole sequences, and the steps that train the stage's tokens are counted at the realised batch",
			human.Exact(int64(l.Batch)), l.DP, plural(l.MicroBatch, "sequence"), l.GradAccum, p.Workload.SeqLen,
			human.Exact(p.Workload.BatchTokens), human.Exact(train.TokensPerBatch)))
	}
}

// batchText is the batch the steps are counted at, and how it differs from what was
// written: "1,966,080 tokens per step (realised; requested 2,097,152, -6.2%)".
func batchText(w WorkloadInfo) string {
	s := human.Exact(w.BatchTokens) + " tokens per step"
	if w.TokensPerBatch > 0 && w.BatchTokens != w.TokensPerBatch {
		s += fmt.Sprintf(" (realised; requested %s, %+.1f%%)", human.Exact(w.TokensPerBatch),
			100*(float64(w.BatchTokens)/float64(w.TokensPerBatch)-1))
	}
	return s
}

func setupTrain(prog *program.Program, train *program.Train, stage *program.Stage, opt Options) (*trainSetup, diag.List) {
	var ds diag.List
	at := rangeOf(stage.Decl)
	if at.File == "" && !at.Start.IsValid() {
		at = rangeOf(train.Decl)
	}
	model, cluster := prog.Models[train.Model], prog.Clusters[train.Cluster]
	if model == nil || cluster == nil {
		ds.Errorf(diag.CodeUnresolved, rangeOf(train.Decl), "train %s: model %q or cluster %q is not declared", train.Name, train.Model, train.Cluster)
		return nil, ds
	}
	shared := cluster.Device.Name == "cpu" && cluster.HostMemory > 0
	if shared {
		// A CPU "cluster" is one host whose ranks share its memory.
		cluster = localCluster(cluster, max(cluster.Ranks, cluster.GPUsPerNode, 1))
	}
	sm := program.StageModel(model, stage)
	a := trainAssumptions(train, cluster, sm)
	seqLen := train.SeqLen
	if seqLen <= 0 {
		seqLen = model.SeqLen
	}
	if seqLen <= 0 || train.TokensPerBatch < seqLen {
		ds.Errorf(diag.CodeBatchTooSmall, rangeOf(train.Decl), "tokens_per_batch %d is less than one sequence of %d tokens", train.TokensPerBatch, seqLen).
			Suggestion = fmt.Sprintf("set tokens_per_batch to a multiple of %d", max(seqLen, 1))
		return nil, ds
	}
	cc, budget, err := budgetCluster(cluster, opt)
	if err != nil {
		ds.Errorf(diag.CodePlanOptions, at, "planning %s stage %s: %v", train.Name, stage.Name, err)
		return nil, ds
	}
	strats, err := strategies(opt.Memory, train.Memory, cc.NVMe > 0)
	if err != nil {
		d := ds.Errorf(diag.CodePlanOptions, at, "planning %s stage %s: %v", train.Name, stage.Name, err)
		d.Suggestion = "use one of " + strings.Join(MemoryOptions(), ", ")
		return nil, ds
	}
	if opt.DelayedUpdate {
		if strats = delayable(strats); len(strats) == 0 {
			d := ds.Errorf(diag.CodePlanOptions, at, "planning %s stage %s: a delayed (one-step-late) parameter update needs optimizer states on the host, and memory strategy %s keeps them all on the GPU",
				train.Name, stage.Name, strategyName(opt.Memory, train.Memory))
			d.Suggestion = "use an offloading strategy (zero1-offload, zero2-offload, zero3-offload, zero3-nvme, unified_cache) or drop the delayed update"
			return nil, ds
		}
	}
	obj, err := objectiveOf(opt.Objective, "time")
	if err != nil {
		ds.Errorf(diag.CodePlanOptions, at, "planning %s stage %s: %v", train.Name, stage.Name, err).Suggestion = "use time, gpus or cost"
		return nil, ds
	}
	rc := program.RecomputeModes()
	if r := train.Memory.Recompute; r != "" && recomputeWritten(prog, train) {
		rc = []program.Recompute{r}
	}
	if d := cc.Device; d.PeakFLOPs[train.Precision] <= 0 && d.PeakFLOPs[program.FP32] <= 0 || d.HBMBandwidth <= 0 {
		ds.Errorf(diag.CodeDeviceIncomplete, rangeOf(cluster.Decl), "cluster %s: device %s has no peak FLOP/s at %s or no memory bandwidth to plan with",
			cluster.Name, d.Name, train.Precision).Suggestion = "set peak_flops and hbm_bandwidth in the cluster"
		return nil, ds
	}
	w := newWorkload(sm, seqLen, &a)
	w.sequences = int64(math.Round(float64(train.TokensPerBatch) / float64(seqLen)))
	if tm := teacherModel(train, stage, model); tm != nil {
		w.teacher = newWorkload(tm, seqLen, &a)
	}
	keep := opt.Alternatives
	if keep <= 0 {
		keep = 3
	}
	sp := &space{budget: budget, strategies: strats, recompute: rc, microBatch: train.MicroBatch, objective: obj, keep: keep}
	e := newEnv(w, cc, &a, train.Precision, true)
	e.sharedHost = shared
	e.delayedUpdate = opt.DelayedUpdate
	return &trainSetup{prog: prog, train: train, stage: stage, model: model, cluster: cc, env: e, space: sp, at: at}, ds
}

// totals turns a step time and the stage's steps into days, GPU-hours and money.
func totals(steps int64, gpus int, t Timing, price float64) Totals {
	var out Totals
	if steps <= 0 || t.TokensPerSecond <= 0 {
		return out
	}
	out.Steps = steps
	secs := float64(out.Steps) * t.StepSeconds
	out.Days = round9(secs / 86400)
	out.GPUHours = round9(secs / 3600 * float64(gpus))
	out.Cost = round9(out.GPUHours * price)
	return out
}

// buildPlan fills a Plan from a search result.
func (e *env) buildPlan(res result, sp *space) *Plan {
	b := res.best
	var comm []Comm
	t := e.stepTime(b.l, &b.mem, &comm)
	for i := range comm {
		comm[i].Bytes, comm[i].Seconds = math.Round(comm[i].Bytes), round9(comm[i].Seconds)
	}
	gpn := max(1, e.c.GPUsPerNode)
	p := &Plan{
		Schema:    Schema,
		Objective: sp.objective,
		Cluster:   clusterInfo(e.c, e.prec, e.peak),
		GPUs:      b.l.World(),
		Nodes:     (b.l.World() + gpn - 1) / gpn,
		Layout:    b.l,
		Memory:    tiers(&b.mem, e.sharedHost),
		Comm:      comm,
		Time:      roundTiming(t),
		Searched:  res.evaluated,
	}
	w := e.w
	p.Workload = WorkloadInfo{
		Precision: string(e.prec), Params: w.totalParams(), ActiveParams: w.counts.ActiveAll,
		ExpertParams: w.expertParams(), Experts: w.experts, TopK: w.topK, SeqLen: w.seqLen,
		TokensPerBatch: w.sequences * w.seqLen, BatchTokens: int64(b.l.Batch) * w.seqLen,
		TrainFLOPs: round9(w.flops.TrainPerToken),
	}
	for _, alt := range res.alts {
		p.Alternatives = append(p.Alternatives, Alternative{
			Layout: alt.l, GPUs: alt.l.World(), Fits: true, StepSeconds: round9(alt.t.StepSeconds),
			Why: whyLost(sp.objective, e.c.Device.Name, b, alt),
		})
	}
	if m := res.fastMiss; m != nil && m.perSeq() < b.perSeq() {
		p.Alternatives = append(p.Alternatives, Alternative{
			Layout: m.l, GPUs: m.l.World(), Fits: false, StepSeconds: round9(m.t.StepSeconds),
			Why: fmt.Sprintf("%.0f%% faster per token but does not fit: %s", 100*(1-m.perSeq()/b.perSeq()), overflowText(m)),
		})
	}
	if p.Alternatives == nil {
		p.Alternatives = []Alternative{}
	}
	p.Assumptions = e.a.List()
	return p
}

// stepParts names the parts of a step for comparisons.
func stepParts(t Timing) [][2]any {
	critical := t.ComputeSeconds + t.TPSeconds + t.EPSeconds + t.PPSeconds
	if t.TeacherSeconds > 0 {
		return append([][2]any{{"compute (student)", t.ComputeSeconds - t.TeacherSeconds}, {"compute (teacher forward)", t.TeacherSeconds}},
			stepPartsAfterCompute(t, critical)...)
	}
	return append([][2]any{{"compute", t.ComputeSeconds}}, stepPartsAfterCompute(t, critical)...)
}

// stepPartsAfterCompute are the parts of a step after its compute.
func stepPartsAfterCompute(t Timing, critical float64) [][2]any {
	return [][2]any{
		{"pipeline bubble", critical * t.BubbleFraction},
		{"tensor-parallel all-reduce", t.TPSeconds},
		{"expert all-to-all", t.EPSeconds},
		{"pipeline send-recv", t.PPSeconds},
		{"exposed data-parallel traffic", t.DPExposed},
		{"exposed offload traffic", t.OffloadExposed},
		{"exposed optimizer step", t.OptimizerExposed},
	}
}

// whyLost explains in one line why alt ranked below best; device is the cluster's.
func whyLost(objective Objective, device string, best, alt *candidate) string {
	var lead string
	switch {
	case objective == "gpus" && alt.l.World() > best.l.World():
		lead = fmt.Sprintf("needs %s, %d more; ", devices(alt.l.World(), device), alt.l.World()-best.l.World())
	case objective == "cost" && alt.cost() > best.cost():
		lead = fmt.Sprintf("%.0f%% more GPU-hours; ", 100*(alt.cost()/best.cost()-1))
	}
	bt, at := best.t, alt.t
	cmp := fmt.Sprintf("step %.3g s for %s vs %.3g s for %d", at.StepSeconds, plural(alt.l.Batch, "sequence"), bt.StepSeconds, best.l.Batch)
	if alt.perSeq() <= best.perSeq()*(1+1e-9) {
		if lead == "" {
			return fmt.Sprintf("same throughput (%s) with less memory headroom: %.0f%% of the fullest tier vs %.0f%%", cmp, 100*alt.ratio, 100*best.ratio)
		}
		return lead + "throughput as good or better (" + cmp + ")"
	}
	loss := fmt.Sprintf("%s%.0f%% less throughput (%s)", lead, 100*(1-best.perSeq()/alt.perSeq()), cmp)
	if at.StepSeconds <= bt.StepSeconds {
		return loss + ": a shorter step that runs fewer sequences"
	}
	type delta struct {
		name string
		d    float64
	}
	var ds []delta
	bp, ap := stepParts(bt), stepParts(at)
	for i := range bp {
		if d := ap[i][1].(float64) - bp[i][1].(float64); d > 0 {
			ds = append(ds, delta{bp[i][0].(string), d})
		}
	}
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].d > ds[j].d })
	var parts []string
	for i := 0; i < len(ds) && i < 2; i++ {
		parts = append(parts, fmt.Sprintf("%s +%.3g s", ds[i].name, ds[i].d))
	}
	return loss + ": " + strings.Join(parts, ", ")
}

// overflowText says which tier of a candidate overflows, by how much, and in what.
func overflowText(c *candidate) string {
	m := &c.mem
	tb, capacity, per := &m.gpu, m.gpuCap, "device"
	switch c.tier {
	case "host":
		tb, capacity, per = &m.host, m.hostCap, "node"
	case "nvme":
		tb, capacity, per = &m.nvme, m.nvmeCap, "node"
	}
	used := tb.sum()
	big := tb.largest()
	names := componentNames
	if c.l.Memory == "weights" {
		names = serveNames
	}
	of := human.Bytes(int64(capacity))
	if c.tier == "gpu" && m.hostShare > 0 {
		// CPU ranks: the host tier's bytes come out of the same share of memory.
		of = fmt.Sprintf("the %s left of its share once the host tier holds %s", human.Bytes(int64(max(capacity, 0))), human.Bytes(int64(m.hostShare)))
	}
	return fmt.Sprintf("%s per %s needs %s of %s (over by %s), largest component %s %s",
		c.tier, per, human.Bytes(int64(used)), of, human.Bytes(int64(math.Ceil(used-capacity))),
		names[big], human.Bytes(int64(tb[big])))
}

// layoutText is a layout in one line.
func layoutText(l ParallelLayout) string {
	mem := string(l.Memory)
	if l.Memory == program.MemoryZeRO {
		mem = fmt.Sprintf("ZeRO-%d", l.ZeRO)
		if l.Offload != program.OffloadNone {
			mem += " offload " + string(l.Offload)
		}
	}
	return fmt.Sprintf("dp=%d ep=%d tp=%d pp=%d, %s, micro-batch %s × grad_accum %d, recompute %s", l.DP, l.EP, l.TP, l.PP, mem, plural(l.MicroBatch, "sequence"), l.GradAccum, l.Recompute)
}
