package plan

import (
	"fmt"
	"math"

	"github.com/moec-dev/moec/compiler/catalog"
	"github.com/moec-dev/moec/compiler/program"
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
	Bytes       []Bytes `json:"bytes"`        // predicted bytes per component
	Predicted   int64   `json:"predicted_total"`
}

// LocalOptions fix what a local plan would otherwise choose, so that the plan describes
// the layout a run actually uses (`moec run --ep E --zero Z --offload`).
type LocalOptions struct {
	EP      int  // expert-parallel size (0: the largest that divides both ranks and experts)
	ZeRO    int  // ZeRO stage, when ZeROSet
	ZeROSet bool // ZeRO overrides the declared stage (0 is a valid choice)
	// Offload keeps the optimizer states with fp32 copies of the rank's weight and gradient
	// shards in the host tier, as the runtime does when the train block offloads; it needs
	// ZeRO ≥ 1 and raises stage 0 to 1, as the runtime does.
	Offload bool
	// Cache runs the unified cache: every state partitioned (ZeRO-3) in the host tier, and a
	// device page pool of gathered units; nil keeps the declared memory block's meaning.
	Cache *CacheOptions
	// Workers is the number of kernel workers each rank runs (the runtime's GOMAXPROCS),
	// which sizes per-worker attention scratch; 0 assumes 2.
	Workers int
	// MicroBatch is the run's micro-batch in sequences over all ranks (`moec run
	// --micro-batch`); 0 keeps the train block's, else up to 8, as the runtime does.
	MicroBatch int
}

// Local plans a stage for ranks in-process CPU ranks: data parallel over all of them, the
// largest expert-parallel group that divides both ranks and experts, the declared ZeRO
// stage (the unified cache becomes ZeRO-3: host and device are the same memory; declared
// offload keeps the optimizer states in the host tier), and the micro-batch the runtime
// runs. In fp32 each rank's memory is the CPU runtime's own buffers (local_memory.go).
func Local(prog *program.Program, train *program.Train, stage *program.Stage, ranks int) (p *Plan, ds diag.List) {
	return LocalWith(prog, train, stage, ranks, LocalOptions{})
}

// LocalWith is Local with the layout's choices fixed by o.
func LocalWith(prog *program.Program, train *program.Train, stage *program.Stage, ranks int, o LocalOptions) (p *Plan, ds diag.List) {
	defer func() {
		if r := recover(); r != nil {
			p = nil
			ds.Errorf(CodeInternal, rangeOf(train.Decl), "internal error planning %s stage %s locally: %v", train.Name, stage.Name, r)
		}
	}()
	if ranks < 1 {
		ds.Errorf(CodeLocal, rangeOf(train.Decl), "local plan for %d ranks: need at least one", ranks)
		return nil, ds
	}
	local := *prog
	clusters := map[string]*program.Cluster{}
	for k, v := range prog.Clusters {
		clusters[k] = v
	}
	c := localCluster(prog.Clusters[train.Cluster], ranks)
	clusters[train.Cluster] = c
	local.Clusters = clusters
	tr := *train
	offload := o.Offload || train.Memory.Offload != "" && train.Memory.Offload != "none"
	tr.Memory.Offload = "none"
	if tr.Memory.Kind == "unified_cache" {
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
	s, ds := setupTrain(&local, &tr, stage, Options{})
	if ds.HasErrors() {
		return nil, ds
	}
	sp := s.space
	sp.tp, sp.pp, sp.dp = 1, 1, ranks
	if s.env.w.isMoE() {
		sp.ep = gcd(ranks, s.env.w.experts)
	}
	if o.EP > 0 {
		if ranks%o.EP != 0 || s.env.w.experts%o.EP != 0 && o.EP > 1 {
			ds.Errorf(CodeLocal, s.at, "%s stage %s: expert-parallel size %d must divide the %d ranks and the %d experts", train.Name, stage.Name, o.EP, ranks, s.env.w.experts)
			return nil, ds
		}
		sp.ep = o.EP
	}
	workers := o.Workers
	if workers <= 0 {
		workers = defaultCPUWorkers
	}
	if train.Precision == program.FP32 {
		// The runtime runs each rank on an equal slice of every micro-batch (the train
		// block's micro_batch, else up to 8 sequences) and never recomputes activations.
		micro := o.MicroBatch
		if micro <= 0 {
			micro = int(train.MicroBatch)
		}
		if micro <= 0 {
			micro = int(min(max(s.env.w.sequences, 1), 8))
		}
		if micro%ranks != 0 {
			ds.Errorf(CodeLocal, s.at, "%s stage %s: %d local ranks do not divide the micro-batch of %d sequences; each rank runs an equal slice of it",
				train.Name, stage.Name, ranks, micro).Suggestion = "use a number of ranks that divides micro_batch"
			return nil, ds
		}
		sp.microBatch = micro / ranks
		sp.recompute = []program.Recompute{program.RecomputeNone}
		cpu, err := newCPUModel(s.env.w.model, ranks, workers, offload, s.env.a)
		if err != nil {
			ds.Errorf(CodeLocal, s.at, "%s stage %s: the CPU runtime cannot run this model: %v", train.Name, stage.Name, err)
			return nil, ds
		}
		s.env.cpu = cpu
		if o.Cache != nil {
			if o.Cache.Budget <= 0 || o.Cache.Page <= 0 {
				ds.Errorf(CodeLocal, s.at, "%s stage %s: the unified cache needs a positive device budget and page size", train.Name, stage.Name)
				return nil, ds
			}
			cc := *o.Cache
			cc.accum = max(1, int(s.env.w.sequences)/micro)
			s.env.cpu.cache = &cc
			s.env.cpu.offload = false // the shards themselves live in the host tier
		}
	}
	// Local batches are small: any per-rank share is allowed, rounded to whole sequences.
	s.env.a.BatchTolerance = math.Inf(1)
	res := s.env.search(sp)
	if res.best == nil {
		if res.miss != nil {
			ds.Errorf(CodeLocal, s.at, "%s stage %s does not fit %d local ranks: %s", train.Name, stage.Name, ranks, overflowText(res.miss)).
				Suggestion = "lower micro_batch or seq_len, or use fewer ranks"
		} else {
			d := ds.Errorf(CodeLocal, s.at, "%s stage %s: %d local ranks cannot run the batch of %d sequences as equal whole micro-batches", train.Name, stage.Name, ranks, s.env.w.sequences)
			if train.MicroBatch > 0 {
				d.Notes = append(d.Notes, fmt.Sprintf("micro_batch = %d per rank: ranks × micro_batch × grad_accum must be %d", train.MicroBatch, s.env.w.sequences))
			}
			d.Suggestion = "use a number of ranks and a micro_batch whose product divides the batch's sequences"
		}
		return nil, ds
	}
	p = s.env.buildPlan(res, sp)
	p.Kind, p.Model, p.Train, p.Stage = "local", train.Model, train.Name, stage.Name
	p.setBudget(train, stage, 0)
	p.Placement = s.env.placement(res.best)
	if train.Memory.Kind == "unified_cache" {
		p.Notes = append(p.Notes, "on CPU ranks host and device memory are one: the unified cache runs as ZeRO-3")
	}
	if r := train.Memory.Recompute; r != "" && r != "none" && recomputeWritten(prog, train) {
		p.Notes = append(p.Notes, fmt.Sprintf("recompute = %s is not run on CPU ranks: the runtime keeps every activation, and the plan counts them kept", r))
	}
	if offload {
		p.Notes = append(p.Notes, "offload keeps the optimizer states and fp32 copies of each rank's weight and gradient shards in the host tier of the same memory")
	}
	if s.env.cpu != nil {
		p.Assumptions = append(p.Assumptions, Assumption{"cpu_workers", fmt.Sprint(workers), "kernel workers per rank (GOMAXPROCS): per-worker attention scratch"})
	}
	return p, ds
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

// placement spells out each rank's experts, groups and buffers.
func (e *env) placement(c *candidate) *Placement {
	w, l := e.w, c.l
	p := &Placement{TokensPerMicroBatch: int64(l.MicroBatch) * w.seqLen}
	if w.isMoE() {
		p.ExpertCapacity = int64(math.Ceil(w.routeFactor * float64(w.topK) * float64(p.TokensPerMicroBatch) / float64(w.experts)))
		p.DispatchRows = p.ExpertCapacity * int64(w.experts)
	}
	per := max(1, w.experts/l.EP)
	st := e.stageShapes(1)[0]
	for r := 0; r < l.World(); r++ {
		epRank, edpRank := r%l.EP, r/l.EP
		rk := Rank{Rank: r, DPRank: r, EPRank: epRank}
		for i := 0; i < l.EP; i++ {
			rk.EPGroup = append(rk.EPGroup, edpRank*l.EP+i)
		}
		for i := 0; i < l.EDP; i++ {
			rk.EDPGroup = append(rk.EDPGroup, i*l.EP+epRank)
		}
		if w.isMoE() {
			rk.ExpertFirst, rk.ExpertCount = epRank*per, per
		}
		rk.Params = st.dense + st.experts/int64(l.EP)
		bytes := c.mem.gpu
		if e.cpu != nil {
			// Ranks differ by their ZeRO shards and expert groups: each gets its own
			// prediction, device and host tiers together (what the runtime meters).
			dev, host := e.cpu.rankBytes(l, w.seqLen, r)
			for k := range bytes {
				bytes[k] = dev[k] + host[k]
			}
		}
		var total int64
		for k := component(0); k < nComp; k++ {
			b := int64(math.Ceil(bytes[k]))
			if k == compReserve {
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
