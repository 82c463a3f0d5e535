package plan

import (
	"fmt"
	"maps"
	"math"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/lang/diag"
)

// Placement is what each in-process rank of a local run holds and allocates: the
// runtime reads it to build its communicators, place experts and size its arenas.
type Placement struct {
	TokensPerMicroBatch int64  `json:"tokens_per_micro_batch"` // per rank
	ExpertCapacity      int64  `json:"expert_capacity"`        // tokens one rank may send to one expert per micro-batch and MoE layer
	DispatchRows        int64  `json:"dispatch_rows"`          // rows of a rank's receive buffer per MoE layer: experts × capacity
	Ranks               []Rank `json:"ranks"`
}

// Rank is one rank's share.
type Rank struct {
	Rank        int     `json:"rank"`
	DPRank      int     `json:"dp_rank"`
	EPRank      int     `json:"ep_rank"`      // position in its expert-parallel group
	EPGroup     []int   `json:"ep_group"`     // ranks exchanging tokens with this one
	EDPGroup    []int   `json:"edp_group"`    // ranks holding the same experts (ZeRO group of expert states)
	ExpertFirst int     `json:"expert_first"` // first routed expert held, in every MoE layer
	ExpertCount int     `json:"expert_count"` // routed experts held per MoE layer
	Params      int64   `json:"params"`       // parameters held before ZeRO partitioning
	TPRank      int     `json:"tp_rank,omitempty"`
	PPRank      int     `json:"pp_rank,omitempty"`
	Bytes       []Bytes `json:"bytes"` // predicted bytes per component (device and host tiers together)
	Predicted   int64   `json:"predicted_total"`
	// ArenaDevice and ArenaHost are the arenas the rank's step program allocates (0
	// where the memory is not a step program's: a model the step program does not lower).
	ArenaDevice int64 `json:"arena_device,omitempty"`
	ArenaHost   int64 `json:"arena_host,omitempty"`
}

// LocalOptions fix what a local plan would otherwise choose, so that the plan describes
// the layout a run actually uses (`moec run --ep E --zero Z --offload --tp T --pp P`).
type LocalOptions struct {
	EP      int  // expert-parallel size (0: the largest that divides both the data-parallel ranks and experts)
	ZeRO    int  // ZeRO stage, when ZeROSet
	ZeROSet bool // ZeRO overrides the declared stage (0 is a valid choice)
	// Offload keeps the optimizer states with fp32 copies of the rank's weight and gradient
	// shards in the host tier, as the runtime does when the train block offloads; it needs
	// ZeRO ≥ 1 and raises stage 0 to 1, as the runtime does.
	Offload bool
	// TP and PP are the tensor- and pipeline-parallel sizes (0 or 1: none); the ranks are
	// then dp × tp × pp.
	TP, PP int
	// Cache runs the unified cache. Its memory is predicted as what the step program lowers
	// for it today: every state partitioned (ZeRO-3) with the optimizer in the host tier;
	// the device page pool is not modelled yet. nil keeps the declared memory block's meaning.
	Cache *CacheOptions
	// StepCache is the unified cache as step programs run it (the device budget bounds the
	// whole device arena; states live in the host tier; units are fetched into pages): the
	// plan lowers it into each candidate's programs and predicts their memory plans. Its
	// zero value is none. Cache, above, is the hand-written engine's.
	StepCache step.Cache
	// SequenceParallel splits the tp ranks' norms, residuals and router input by token.
	SequenceParallel bool
	// MicroBatch is the run's micro-batch in sequences over all data-parallel replicas
	// (`moec run --micro-batch`); 0 keeps the train block's, else up to 8, as the runtime does.
	MicroBatch int
}

// CacheOptions is the unified cache a local run executes: a device page pool of Budget
// bytes in pages of Page bytes, evicting by Eviction ("lru", "lfu", "fifo"). The local
// plan predicts it as ZeRO-3 with the optimizer offloaded (see LocalOptions.Cache).
type CacheOptions struct {
	Budget, Page int64
	Eviction     string
}

// Local plans a stage for ranks in-process CPU ranks: data parallel over all of them, the
// largest expert-parallel group that divides both ranks and experts, the declared ZeRO
// stage (the unified cache becomes ZeRO-3: host and device are the same memory; declared
// offload keeps the optimizer states in the host tier), and the micro-batch the runtime
// runs. In fp32 each rank's memory is its step program's memory plan (local_step.go).
func Local(prog *program.Program, train *program.Train, stage *program.Stage, ranks int) (p *Plan, ds diag.List) {
	return LocalWith(prog, train, stage, ranks, LocalOptions{})
}

// LocalWith is Local with the layout's choices fixed by o.
func LocalWith(prog *program.Program, train *program.Train, stage *program.Stage, ranks int, o LocalOptions) (p *Plan, ds diag.List) {
	defer func() {
		if r := recover(); r != nil {
			p = nil
			ds.Errorf(diag.CodeInternalPlanError, rangeOf(train.Decl), "internal error planning %s stage %s locally: %v", train.Name, stage.Name, r)
		}
	}()
	if ranks < 1 {
		ds.Errorf(diag.CodeLocalLayout, rangeOf(train.Decl), "local plan for %d ranks: need at least one", ranks)
		return nil, ds
	}
	local := *prog
	local.Clusters = maps.Clone(prog.Clusters)
	local.Clusters[train.Cluster] = localCluster(prog.Clusters[train.Cluster], ranks)
	tr, offload := localMemory(train, o)
	s, ds := setupTrain(&local, tr, stage, Options{})
	if ds.HasErrors() {
		return nil, ds
	}
	lp := &localPlan{s: s, train: train, stage: stage, ranks: ranks, o: o, offload: offload}
	if !lp.layout(&ds) {
		return nil, ds
	}
	if train.RunsOnCPU() && !lp.onCPU(&ds) {
		return nil, ds
	}
	// Local batches are small: any per-rank share is allowed, rounded to whole sequences,
	// and any split the request fixes is searched (the features check above decided it).
	s.env.a.BatchTolerance = math.Inf(1)
	s.space.anyLayout = true
	res := s.env.search(s.space)
	if res.best == nil {
		lp.noFit(&ds, res)
		return nil, ds
	}
	p = s.env.buildPlan(res, s.space)
	p.Kind, p.Model, p.Train, p.Stage = "local", train.Model, train.Name, stage.Name
	p.setBudget(train, stage, 0)
	p.Placement = s.env.placement(res.best)
	p.Notes = append(p.Notes, lp.notes(prog, p)...)
	return p, ds
}

// localMemory is the train block with its memory strategy as CPU ranks run it (no
// offload tier of its own: offload, when asked for, is reported back; the unified cache as
// ZeRO 3), and whether the optimizer is offloaded.
func localMemory(train *program.Train, o LocalOptions) (*program.Train, bool) {
	tr := *train
	offload := o.Offload || train.Memory.Offload != "" && train.Memory.Offload != "none"
	tr.Memory.Offload = "none"
	if tr.Memory.Kind == "unified_cache" || o.Cache != nil {
		tr.Memory.Kind, tr.Memory.ZeROStage = "zero", 3
	}
	if o.ZeROSet {
		tr.Memory.Kind, tr.Memory.ZeROStage = "zero", o.ZeRO
	}
	if o.Cache != nil {
		tr.Memory.Kind, tr.Memory.ZeROStage = "zero", 3
	}
	if offload && tr.Memory.ZeROStage == 0 {
		tr.Memory.ZeROStage = 1 // the runtime partitions the states before they move
	}
	return &tr, offload
}

// localPlan is one LocalWith's state between its steps.
type localPlan struct {
	s       *trainSetup
	train   *program.Train
	stage   *program.Stage
	ranks   int
	o       LocalOptions
	offload bool
	refused string // what the step program does not lower (the hand-written engine runs it)
}

// layout fixes the search space's tp, pp, dp and ep from the options, or says why not.
func (lp *localPlan) layout(ds *diag.List) bool {
	s, o, train, stage := lp.s, lp.o, lp.train, lp.stage
	tp, pp := max(o.TP, 1), max(o.PP, 1)
	if lp.ranks%(tp*pp) != 0 {
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: %d local ranks are not a multiple of tp %d × pp %d", train.Name, stage.Name, lp.ranks, tp, pp)
		return false
	}
	dp := lp.ranks / (tp * pp)
	sp := s.space
	sp.tp, sp.pp, sp.dp = tp, pp, dp
	if s.env.w.isMoE() {
		sp.ep = gcd(dp, s.env.w.experts)
	}
	if o.EP > 0 {
		if dp%o.EP != 0 || s.env.w.experts%o.EP != 0 && o.EP > 1 {
			ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: expert-parallel size %d must divide the %d data-parallel ranks and the %d experts", train.Name, stage.Name, o.EP, dp, s.env.w.experts)
			return false
		}
		sp.ep = o.EP
	}
	if o.Cache != nil && (o.Cache.Budget <= 0 || o.Cache.Page <= 0) {
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: the unified cache needs a positive device budget and page size", train.Name, stage.Name)
		return false
	}
	return true
}

// onCPU fixes what CPU ranks run: each data-parallel replica's equal slice of the
// micro-batch, the train block's recompute, and each rank's memory from its step program
// (local_step.go) where the step program lowers the model.
func (lp *localPlan) onCPU(ds *diag.List) bool {
	s, o, train, stage := lp.s, lp.o, lp.train, lp.stage
	sp := s.space
	// The runtime runs each data-parallel replica on an equal slice of every micro-batch
	// (the train block's micro_batch, else up to 8 sequences).
	micro := o.MicroBatch
	if micro <= 0 {
		micro = int(train.MicroBatch)
	}
	if micro <= 0 {
		micro = int(min(max(s.env.w.sequences, 1), 8))
	}
	if micro%sp.dp != 0 {
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: %d data-parallel ranks do not divide the micro-batch of %d sequences; each runs an equal slice of it",
			train.Name, stage.Name, sp.dp, micro).Suggestion = "use a number of ranks that divides micro_batch"
		return false
	}
	sp.microBatch = micro / sp.dp
	// A model no CPU runtime can build (the parameter walker refuses it) gets no
	// prediction for buffers that will never exist.
	if _, err := s.env.w.model.Dims(); err != nil {
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: the CPU runtime cannot run this model: %v", train.Name, stage.Name, err)
		return false
	}
	if _, err := params.Walk(s.env.w.model); err != nil {
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: the CPU runtime cannot run this model: %v", train.Name, stage.Name, err)
		return false
	}
	// Step programs lower every recompute mode (full: each layer's forward again before
	// its backward; selective: the attention core), and the step engine runs the train
	// block's.
	recompute := train.Memory.Recompute
	if recompute == "" {
		recompute = program.RecomputeNone
	}
	sp.recompute = []program.Recompute{recompute}
	lp.refused = stepRefusals(s.env.w.model, sp.tp, sp.pp)
	switch {
	case lp.refused == "":
		// Each rank's memory is its step program's memory plan (local_step.go).
		s.env.cpu = &stepMemory{m: s.env.w.model, seqLen: int(s.env.w.seqLen), offload: lp.offload || o.Cache != nil,
			cache: o.StepCache, sequenceParallel: o.SequenceParallel, gradBucket: train.Memory.GradBucket,
			recompute: recompute, distill: stepDistill(stage), lowered: map[ParallelLayout]*loweredMemory{}}
	case sp.tp > 1 || sp.pp > 1:
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: the step program does not lower %s at tp %d × pp %d, so no CPU rank can run this layout", train.Name, stage.Name, lp.refused, sp.tp, sp.pp)
		return false
	}
	return true
}

// noFit says why the search found no local layout.
func (lp *localPlan) noFit(ds *diag.List, res result) {
	s, train, stage := lp.s, lp.train, lp.stage
	switch {
	case s.env.cpu != nil && s.env.cpu.lowerErr != nil:
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s on %d local ranks: %v", train.Name, stage.Name, lp.ranks, s.env.cpu.lowerErr)
	case res.miss != nil:
		ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s does not fit %d local ranks: %s", train.Name, stage.Name, lp.ranks, overflowText(res.miss)).
			Suggestion = "lower micro_batch or seq_len, or use fewer ranks"
	default:
		d := ds.Errorf(diag.CodeLocalLayout, s.at, "%s stage %s: %d local ranks cannot run the batch of %d sequences as equal whole micro-batches", train.Name, stage.Name, lp.ranks, s.env.w.sequences)
		if train.MicroBatch > 0 {
			d.Notes = append(d.Notes, fmt.Sprintf("micro_batch = %d per rank: ranks × micro_batch × grad_accum must be %d", train.MicroBatch, s.env.w.sequences))
		}
		d.Suggestion = "use a number of ranks and a micro_batch whose product divides the batch's sequences"
	}
}

// notes are what a local plan says beside its numbers.
func (lp *localPlan) notes(prog *program.Program, p *Plan) []string {
	var notes []string
	train, o := lp.train, lp.o
	if o.StepCache.On() {
		notes = append(notes, fmt.Sprintf("each rank runs the %s lowered into its step program: the memory is its programs' plan, page moves included", o.StepCache))
	} else if train.Memory.Kind == "unified_cache" || o.Cache != nil {
		notes = append(notes, "on CPU ranks host and device memory are one: the unified cache's memory is predicted as ZeRO-3 (with the optimizer offloaded when the run caches), its device page pool not modelled")
	}
	if r := train.Memory.Recompute; lp.refused != "" && r != "" && r != "none" && recomputeWritten(prog, train) {
		notes = append(notes, fmt.Sprintf("recompute = %s is not run by the hand-written engine: it keeps every activation, and the plan counts them kept", r))
	}
	if lp.offload {
		notes = append(notes, "offload keeps the optimizer states and fp32 copies of each rank's weight and gradient shards in the host tier of the same memory")
	}
	if lp.refused != "" {
		notes = append(notes, fmt.Sprintf("the step program does not lower %s: CPU ranks train through the hand-written engine, and each rank's memory is the GPU formulas' estimate", lp.refused))
	}
	if n := distillNote(prog, train, lp.stage, p.Workload.BatchTokens, train.Precision, false); n != "" {
		notes = append(notes, n)
	}
	return notes
}

// localCluster is the CPU host as a cluster of ranks devices sharing its memory.
func localCluster(c *program.Cluster, ranks int) *program.Cluster {
	out := program.Cluster{Name: "local", Nodes: 1, GPUsPerNode: ranks, HostUsable: 0.8, Ranks: ranks}
	if c != nil {
		out = *c
		out.Nodes, out.GPUsPerNode, out.Ranks = 1, ranks, ranks
	}
	if out.Device.Name != "cpu" {
		d, _ := catalog.Lookup("cpu")
		out.Device = d
	}
	// The ranks share the host: each gets its share of memory, none is reserved twice.
	if out.HostMemory > 0 {
		usable := out.HostUsable
		if usable <= 0 {
			usable = 0.8
		}
		out.Device.Memory = int64(float64(out.HostMemory) * usable / float64(ranks))
	} else {
		out.Device.Memory /= int64(ranks)
	}
	// HostMemory stays as declared: it is what the plan shows, and the host tier (offload,
	// the unified cache) is that same memory; env.sharedHost keeps the two tiers from
	// counting it twice. Calling localCluster on its own result changes nothing.
	out.NVMe = 0
	return &out
}

// placement spells out each rank's experts, groups and buffers. Ranks are numbered as
// the step programs number them (step.Layout.CoordOf): tensor-parallel fastest, then
// data-parallel, then pipeline stages.
func (e *env) placement(c *candidate) *Placement {
	w, l := e.w, c.l
	p := &Placement{TokensPerMicroBatch: int64(l.MicroBatch) * w.seqLen}
	if w.isMoE() {
		p.ExpertCapacity = int64(math.Ceil(w.routeFactor * float64(w.topK) * float64(p.TokensPerMicroBatch) / float64(w.experts)))
		p.DispatchRows = p.ExpertCapacity * int64(w.experts)
	}
	sl := step.Layout{DP: l.DP, EP: max(l.EP, 1), TP: max(l.TP, 1), PP: max(l.PP, 1)}
	per := max(1, w.experts/sl.EP)
	stages := e.stageShapes(sl.PP)
	for r := 0; r < l.World(); r++ {
		co := sl.CoordOf(r)
		rk := Rank{Rank: r, DPRank: co.DP, EPRank: co.EP, TPRank: co.TP, PPRank: co.PP}
		for i := 0; i < sl.EP; i++ {
			rk.EPGroup = append(rk.EPGroup, sl.RankOf(step.Coord{TP: co.TP, PP: co.PP, DP: co.EDP*sl.EP + i}))
		}
		for i := 0; i < sl.DP/sl.EP; i++ {
			rk.EDPGroup = append(rk.EDPGroup, sl.RankOf(step.Coord{TP: co.TP, PP: co.PP, DP: i*sl.EP + co.EP}))
		}
		if w.isMoE() {
			rk.ExpertFirst, rk.ExpertCount = co.EP*per, per
		}
		st := stages[min(co.PP, len(stages)-1)]
		rk.Params = (st.dense + st.experts/int64(sl.EP)) / int64(sl.TP)
		bytes := c.mem.gpu
		if e.cpu != nil {
			// Ranks differ by their ZeRO shards, expert groups, tensor slices and
			// pipeline stages: each gets its own program's memory, device and host tiers
			// together (what the runtime reports).
			dev, host, _ := e.cpu.rankBytes(l, r)
			for k := range bytes {
				bytes[k] = dev[k] + host[k]
			}
			arena := e.cpu.arena(l, r)
			rk.ArenaDevice, rk.ArenaHost = arena[step.Device], arena[step.Host]
		}
		var total int64
		for k := component(0); k < nComp; k++ {
			b := int64(math.Ceil(bytes[k]))
			if k == compReserve || !shown(k, bytes[k]) {
				continue
			}
			rk.Bytes = append(rk.Bytes, Bytes{componentNames[k], b})
			total += b
		}
		rk.Predicted = total
		p.Ranks = append(p.Ranks, rk)
	}
	return p
}

// String names a rank for messages.
func (r Rank) String() string {
	return fmt.Sprintf("rank %d (dp %d, ep %d, experts %d..%d)", r.Rank, r.DPRank, r.EPRank, r.ExpertFirst, r.ExpertFirst+r.ExpertCount-1)
}
