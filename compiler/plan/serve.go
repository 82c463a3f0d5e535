package plan

import (
	"fmt"
	"math"
	"sort"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/lang/diag"
)

// serveNames label the serving memory components (same slots as training).
var serveNames = [nComp]string{"weights", "unused", "unused", "kv cache", "moe dispatch buffers", "workspace", "reserve", "unused"}

// serveSetup resolves a serve block.
type serveSetup struct {
	serve   *program.Serve
	model   *program.Model
	cluster *program.Cluster
	env     *env
	budget  int
	batch   int64
	context int64
	// expertBytes and denseBytes are what a routed expert's parameter and any other
	// parameter weigh on the device: the precision's bytes, or a compress block's
	// quantised bytes with their scales (compressed.go).
	expertBytes, denseBytes float64
	// compression says what the compress block did ("" when serving uncompressed).
	compression string
}

// ForServe plans a serving deployment: the fewest devices (or fastest decoding) among
// expert-parallel placements (dense parts replicated on every device, routed experts spread
// evenly) and Megatron-style tensor × pipeline layouts, as the serve block's layout allows.
func ForServe(prog *program.Program, s *program.Serve, opt Options) (p *Plan, ds diag.List) {
	defer func() {
		if r := recover(); r != nil {
			p = nil
			ds.Errorf(diag.CodeInternalPlanError, rangeOf(s.Decl), "internal error planning serve %s: %v", s.Name, r)
		}
	}()
	ss, ds := setupServe(prog, s, opt)
	if ds.HasErrors() {
		return nil, ds
	}
	obj, err := objectiveOf(opt.Objective, "gpus")
	if err != nil {
		ds.Errorf(diag.CodePlanOptions, rangeOf(s.Decl), "planning serve %s: %v", s.Name, err).Suggestion = "use time, gpus or cost"
		return nil, ds
	}
	layouts := []string{"expert", "tensor_pipeline"}
	if s.Layout == "expert" || s.Layout == "tensor_pipeline" {
		layouts = []string{s.Layout}
	}
	var all []*candidate
	var miss *candidate
	evaluated := 0
	for _, kind := range layouts {
		for _, l := range ss.serveLayouts(kind) {
			evaluated++
			c := &candidate{l: l, mem: ss.memory(l)}
			c.ratio, c.tier = c.mem.overflow()
			if c.ratio > 1 {
				if miss == nil || c.ratio < miss.ratio {
					miss = c
				}
				continue
			}
			c.t = ss.decodeTime(l, nil)
			all = append(all, c)
		}
	}
	if len(all) == 0 {
		d := ds.Errorf(diag.CodeServeNoFit, rangeOf(s.Decl), "serve %s: %s does not fit %d × %s in any layout", s.Name, s.Model, ss.budget, ss.cluster.Device.Name)
		if miss != nil {
			d.Notes = append(d.Notes, "closest: "+serveLayoutText(miss.l)+": "+overflowText(miss))
		}
		d.Suggestion = "use more nodes, a smaller batch or context, or precision = int8"
		if n, c := ss.devicesToFit(layouts); c != nil {
			gpn := max(1, ss.cluster.GPUsPerNode)
			d.Suggestion = fmt.Sprintf("plan for %d nodes: %s fits on %d GPUs", (n+gpn-1)/gpn, serveLayoutText(c.l), n)
		}
		return nil, ds
	}
	sort.Slice(all, func(i, j int) bool { return better(obj, all[i], all[j]) })
	best := all[0]
	var comm []Comm
	t := ss.decodeTime(best.l, &comm)
	gpn := max(1, ss.cluster.GPUsPerNode)
	w := ss.env.w
	p = &Plan{
		Schema: Schema, Kind: "serve", Model: s.Model, Serve: s.Name, Stage: s.Stage, Objective: obj,
		Cluster: clusterInfo(ss.cluster, ss.env.prec, ss.env.peak),
		Workload: WorkloadInfo{
			Precision: string(ss.env.prec), Compression: ss.compression, Params: w.totalParams(), ActiveParams: w.counts.ActiveAll,
			ExpertParams: w.expertParams(), Experts: w.experts, TopK: w.topK, SeqLen: ss.context,
		},
		GPUs: best.l.World(), Nodes: (best.l.World() + gpn - 1) / gpn, Layout: best.l,
		Memory: serveTiers(&best.mem), Comm: comm, Time: roundTiming(t), Searched: evaluated,
		Assumptions: ss.env.a.ServeList(),
	}
	p.Alternatives = []Alternative{}
	seen := map[string]bool{serveKind(best.l): true}
	for _, c := range all[1:] {
		// The best of each other family, then the runners-up.
		if k := serveKind(c.l); !seen[k] || len(p.Alternatives) < 2 {
			seen[k] = true
			p.Alternatives = append(p.Alternatives, Alternative{Layout: c.l, GPUs: c.l.World(), Fits: true,
				StepSeconds: round9(c.t.StepSeconds), Why: serveLayoutText(c.l) + ": " + whyLost(obj, ss.cluster.Device.Name, best, c)})
		}
		if len(p.Alternatives) >= 3 {
			break
		}
	}
	return p, ds
}

func serveKind(l ParallelLayout) string {
	if l.EP > 1 {
		return "expert"
	}
	return "tensor_pipeline"
}

func serveLayoutText(l ParallelLayout) string {
	if l.EP > 1 {
		return fmt.Sprintf("expert-parallel over %d devices (dense parts replicated)", l.EP)
	}
	return fmt.Sprintf("tensor %d × pipeline %d", l.TP, l.PP)
}

func setupServe(prog *program.Program, s *program.Serve, opt Options) (*serveSetup, diag.List) {
	var ds diag.List
	model, cluster := prog.Models[s.Model], prog.Clusters[s.Cluster]
	if model == nil || cluster == nil {
		ds.Errorf(diag.CodeUnresolved, rangeOf(s.Decl), "serve %s: model %q or cluster %q is not declared", s.Name, s.Model, s.Cluster)
		return nil, ds
	}
	if s.Stage != "" {
		for _, name := range prog.TrainOrder {
			t := prog.Trains[name]
			if t == nil || t.Model != s.Model {
				continue
			}
			for _, st := range t.Stages {
				if st.Name == s.Stage {
					model = program.StageModel(model, st)
				}
			}
		}
	}
	cc, budget, err := budgetCluster(cluster, opt)
	if err != nil {
		ds.Errorf(diag.CodePlanOptions, rangeOf(s.Decl), "planning serve %s: %v", s.Name, err)
		return nil, ds
	}
	prec := s.Precision
	if prec == "" {
		prec = program.FP16
	}
	a := assumptionsFor(prec, cc, model, nil)
	a.WeightBytes = prec.Bytes()
	a.ActivationBytes = math.Max(prec.Bytes(), 2) // KV caches stay 16-bit unless quantised separately
	ctx := s.ContextLen
	if ctx <= 0 {
		ctx = model.SeqLen
	}
	ss := &serveSetup{serve: s, model: model, cluster: cc, budget: budget, context: ctx,
		expertBytes: a.WeightBytes, denseBytes: a.WeightBytes}
	if s.Compressed {
		if ss.model, err = ss.compress(prog.Compresses[s.Model], a.WeightBytes); err != nil {
			ds.Errorf(diag.CodePlanOptions, rangeOf(s.Decl), "planning serve %s: %v", s.Name, err)
			return nil, ds
		}
	}
	w := newWorkload(ss.model, ctx, &a)
	w.sequences = int64(max(1, s.Batch))
	ss.env, ss.batch = newEnv(w, cc, &a, prec, false), w.sequences
	return ss, ds
}

// serveLayouts enumerates one family's layouts within the budget.
func (ss *serveSetup) serveLayouts(kind string) []ParallelLayout {
	w := ss.env.w
	var out []ParallelLayout
	base := ParallelLayout{DP: 1, EP: 1, EDP: 1, TP: 1, PP: 1, Memory: "weights", Offload: "none", MicroBatch: int(ss.batch), GradAccum: 1, Batch: int(ss.batch), Recompute: "none"}
	if kind == "expert" {
		if !w.isMoE() {
			return nil
		}
		for _, n := range divisors(w.experts) {
			if n > 1 && n <= ss.budget {
				l := base
				l.DP, l.EP = n, n
				out = append(out, l)
			}
		}
		return out
	}
	for _, tp := range ss.env.tensorSizes(&space{}) {
		for _, pp := range divisors(max(len(w.layers), 1)) {
			if tp*pp <= ss.budget {
				l := base
				l.TP, l.PP = tp, pp
				out = append(out, l)
			}
		}
	}
	return out
}

// memory is one device's memory when serving: weights, KV cache, dispatch buffers,
// workspace and reserve.
func (ss *serveSetup) memory(l ParallelLayout) memoryUse {
	e, w, a := ss.env, ss.env.w, ss.env.a
	m := memoryUse{gpuCap: float64(ss.cluster.Device.Memory)}
	m.gpu[compReserve] = float64(a.Reserve)
	m.gpu[compTemp] = float64(a.ServeWorkspace)
	kvPerLayer := float64(ss.context) * 2 * float64(w.kvDim) * a.ActivationBytes
	if w.model.Attention.MLA {
		kvPerLayer = float64(ss.context) * float64(w.model.Attention.KVLoraRank+w.model.Attention.QKRopeHeadDim) * a.ActivationBytes
	}
	if sk := w.model.Attention.ShareKV; sk > 1 {
		kvPerLayer /= float64(sk)
	}
	if l.EP > 1 {
		// Dense parts on every device; each device serves its share of the sequences.
		st := e.stageShapes(1)[0]
		m.gpu[compParams] = float64(st.dense)*ss.denseBytes + float64(st.experts)/float64(l.EP)*ss.expertBytes
		seqs := math.Ceil(float64(ss.batch) / float64(l.EP))
		m.gpu[compActivations] = seqs * kvPerLayer * float64(len(w.layers))
		m.gpu[compDispatch] = 2 * seqs * float64(w.topK) * w.routeFactor * float64(w.d) * a.ActivationBytes * float64(l.EP)
		return m
	}
	// The pipeline stage that needs the most: its weights and its layers' KV cache, each
	// split over the tensor-parallel ranks.
	worst := -1.0
	for _, st := range e.stageShapes(l.PP) {
		weights := (float64(st.dense)*ss.denseBytes + float64(st.experts)*ss.expertBytes) / float64(l.TP)
		kv := float64(ss.batch) * kvPerLayer * float64(st.layers) / float64(l.TP)
		if weights+kv > worst {
			worst = weights + kv
			m.gpu[compParams], m.gpu[compActivations] = weights, kv
		}
	}
	return m
}

// decodeTime is one decoding step (one token for each sequence): reading the weights the
// batch touches and the KV cache from HBM, plus the collectives on the critical path.
func (ss *serveSetup) decodeTime(l ParallelLayout, comm *[]Comm) Timing {
	e, w, a := ss.env, ss.env.w, ss.env.a
	lk := e.link()
	var t Timing
	b := float64(ss.batch)
	st := e.stageShapes(l.PP)[0]
	var read float64
	if l.EP > 1 {
		tokens := math.Ceil(b/float64(l.EP)) * float64(l.EP) * float64(w.topK)
		hit := float64(w.experts) * (1 - math.Pow(1-1/float64(w.experts), tokens)) // distinct experts touched
		perExpert := float64(st.experts) / float64(w.experts)
		read = float64(st.dense)*ss.denseBytes + hit/float64(l.EP)*perExpert*ss.expertBytes
	} else {
		touched := 1.0 // the share of the experts' weights a step reads
		if w.isMoE() {
			hit := float64(w.experts) * (1 - math.Pow(1-1/float64(w.experts), b*float64(w.topK)))
			touched = hit / float64(w.experts)
		}
		read = (float64(st.dense)*ss.denseBytes + float64(st.experts)*touched*ss.expertBytes) / float64(l.TP)
	}
	kv := ss.memory(l).gpu[compActivations]
	flops := 2 * float64(w.counts.ActiveAll) * b / float64(l.World())
	t.ComputeSeconds = math.Max((read+kv)/ss.cluster.Device.HBMBandwidth, flops/(e.peak*a.MatmulEfficiency)) * float64(l.PP)
	add := func(c Comm) {
		if comm != nil && c.Bytes > 0 {
			*comm = append(*comm, c)
		}
	}
	act := b * float64(w.d) * a.ActivationBytes
	if l.TP > 1 {
		g := group{l.TP, 1}
		n := 2 * float64(len(w.layers))
		t.TPSeconds = n * lk.allReduce(act, g)
		add(Comm{"all-reduce", "tensor-parallel activations", l.TP, lk.tier(g), math.Round(n * ringVolume(act, l.TP)), round9(t.TPSeconds), true})
	}
	if l.EP > 1 {
		g := group{l.EP, 1}
		per := math.Ceil(b/float64(l.EP)) * float64(w.d) * a.ActivationBytes * float64(w.topK)
		n := 2 * float64(len(w.layers)) * float64(countMoE(w)) / float64(max(1, len(w.layers)))
		t.EPSeconds = n * lk.allToAll(per, g)
		add(Comm{"all-to-all", "expert dispatch + combine", l.EP, lk.tier(g), math.Round(n * per), round9(t.EPSeconds), true})
	}
	if l.PP > 1 {
		g := group{l.PP, l.TP}
		t.PPSeconds = float64(l.PP-1) * lk.p2p(act, g)
		add(Comm{"send-recv", "pipeline activations", 2, lk.tier(g), math.Round(float64(l.PP-1) * act), round9(t.PPSeconds), true})
	}
	t.StepSeconds = t.ComputeSeconds + t.TPSeconds + t.EPSeconds + t.PPSeconds
	if t.StepSeconds > 0 {
		t.TokensPerSecond = b / t.StepSeconds
	}
	return t
}

func countMoE(w *workload) int {
	n := 0
	for _, l := range w.layers {
		if l.moe {
			n++
		}
	}
	return n
}

func serveTiers(m *memoryUse) []Tier {
	t := Tier{Tier: "gpu", Per: "device", Capacity: int64(m.gpuCap), Used: int64(math.Ceil(m.gpu.sum()))}
	for c := component(0); c < nComp; c++ {
		if serveNames[c] == "unused" {
			continue
		}
		t.Components = append(t.Components, Bytes{serveNames[c], int64(math.Ceil(m.gpu[c]))})
	}
	return []Tier{t}
}

// devicesToFit returns the fewest devices (up to maxGrowth times the budget) on which one
// of the layout families fits, and that layout.
func (ss *serveSetup) devicesToFit(families []string) (int, *candidate) {
	saved := ss.budget
	defer func() { ss.budget = saved }()
	ss.budget = saved * maxGrowth
	var best *candidate
	for _, kind := range families {
		for _, l := range ss.serveLayouts(kind) {
			if best != nil && l.World() >= best.l.World() {
				continue
			}
			c := &candidate{l: l, mem: ss.memory(l)}
			if c.mem.fits() {
				best = c
			}
		}
	}
	if best == nil {
		return 0, nil
	}
	return best.l.World(), best
}
