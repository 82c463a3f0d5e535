package plan

import (
	"math"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/pagepool"
)

// The CPU runtime's memory, mirrored. A local plan (plan.Local, fp32 on the "cpu" device)
// predicts what each in-process rank of `moec run --ranks N` holds from the model's shapes
// alone, buffer by buffer, instead of the GPU formulas of memory.go (16-bit activations,
// Korthikanti's per-layer terms, gradient buckets), which do not describe it. The sizes are
// the model's one resolution (program.Model.Dims), its parameters the one walker's list
// (compiler/params, which nn's builder follows) and the unified cache's decisions the
// runtime's own (internal/pagepool). The compiler does not depend on the runtime, so the
// step buffers below restate the runtime's allocations; each term names the buffer it
// stands for (runtime/nn: step.go workspaceFor, moe.go newMoEWS, ffn.go newFFNWS,
// shard.go expertsParallel, units.go WorkspaceBytes; runtime/train/shard.go: newRank,
// acquire, setWorkspace). runtime/train's memory test holds the two against each other.

// defaultCPUWorkers is the number of kernel workers a rank is assumed to run when the
// caller does not say (the runtime sizes per-worker attention scratch by GOMAXPROCS): the
// two cores the project's examples are timed on.
const defaultCPUWorkers = 2

// Sizes of the runtime's element types: float32 for every tensor and activation, int32
// token and routing indices, Go's 64-bit int and float64 for routing counts.
const (
	f32Bytes = 4
	i32Bytes = 4
	intBytes = 8
	f64Bytes = 8
)

// cpuUnit is one of the runtime's parameter units (nn.Units: the embedding, each layer,
// the head) as flat float counts.
type cpuUnit struct {
	dense     int64 // the dense part, replicated over all ranks
	perExpert int64 // the expert part per routed expert the rank holds
}

// cpuModel is what the CPU runtime allocates for one stage's model.
type cpuModel struct {
	m       *program.Model // the stage's model
	ranks   int
	workers int64
	offload bool // optimizer states and fp32 weight and gradient copies in the host tier
	cache   *CacheOptions
	moments float64
	units   []cpuUnit
	d       cpuDims
}

// cpuDims are the model's shapes as the runtime resolves them (program.Dims, as int64s).
type cpuDims struct {
	V, D, L, H, KV, Dh, qDim, kvDim int64
	maxPos                          int64
	E, K                            int64
	hidden, eHidden, sHidden        int64
	shared, groups, topKGroups      int64
	routerIn                        int64
	shareKV                         int
	gated, expertGated              bool
	placement                       program.NormPlacement
}

func newCPUModel(m *program.Model, ranks, workers int, offload bool, a *Assumptions) (*cpuModel, error) {
	if workers <= 0 {
		workers = defaultCPUWorkers
	}
	c := &cpuModel{m: m, ranks: ranks, workers: int64(workers), offload: offload,
		moments: float64(a.Moments) * a.MomentBytes}
	dims, err := m.Dims()
	if err != nil {
		return nil, err
	}
	c.d = cpuDimsOf(dims)
	ps, err := params.Walk(m)
	if err != nil {
		return nil, err
	}
	c.units = unitSizes(ps, dims.L)
	return c, nil
}

// cpuDimsOf is the model's one resolution (program.Model.Dims) in the planner's int64s.
func cpuDimsOf(d program.Dims) cpuDims {
	c := cpuDims{V: int64(d.V), D: int64(d.D), L: int64(d.L), H: int64(d.H), KV: int64(d.KV), Dh: int64(d.Dh),
		qDim: int64(d.QDim), kvDim: int64(d.KVDim), maxPos: int64(d.MaxPos),
		hidden: int64(d.Hidden), gated: d.FFNActivation.Gated(), placement: d.Placement, shareKV: d.ShareKV}
	if d.E > 0 {
		c.E, c.K, c.shared = int64(d.E), int64(d.K), int64(d.Shared)
		c.eHidden, c.sHidden, c.routerIn = int64(d.EHidden), int64(d.SHidden), int64(d.RouterIn)
		c.groups, c.topKGroups = int64(d.Groups), int64(d.TopKGroups)
		c.expertGated = d.ExpertActivation.Gated()
	}
	return c
}

// unitSizes sums the model's parameters (params.Walk, the list nn's builder creates) into
// the runtime's units: the embedding (token and position tables, the router's token
// table), each layer, the head (final norm and lm_head). A routed expert's tensors go to
// the unit's expert part, counted once per expert; everything else is dense, replicated.
func unitSizes(ps []params.Param, layers int) []cpuUnit {
	units := make([]cpuUnit, layers+2)
	for _, p := range ps {
		u := &units[unitOf(p.ID, layers)]
		switch {
		case !p.ID.Role.Routed():
			u.dense += p.Elements()
		case p.ID.Expert == 0:
			u.perExpert += p.Elements()
		}
	}
	return units
}

// unitOf is the runtime unit (nn.Units) that holds the parameter id.
func unitOf(id params.ID, layers int) int {
	switch {
	case id.Layer >= 0:
		return id.Layer + 1
	case id.Role == params.RoleFinalNorm || id.Role == params.RoleHead:
		return layers + 1
	}
	return 0
}

// cpuPart is one unit part on one rank (runtime/train's part): n floats sharded over a
// group of size ranks, this rank holding [lo, hi).
type cpuPart struct {
	n, shard, lo, hi int64
}

func newCPUPart(n int64, size, rank int) cpuPart {
	p := cpuPart{n: n, shard: (n + int64(size) - 1) / int64(size)}
	p.lo, p.hi = min(n, int64(rank)*p.shard), min(n, int64(rank+1)*p.shard)
	return p
}

// padded is the gathered buffer (ZeRO-3 weights, ZeRO ≥ 2 gradients): shard × group size.
func (p cpuPart) padded(size int) int64 { return p.shard * int64(size) }

// rankBytes returns rank r's peak bytes per component in the device and host tiers under
// layout l (l.MicroBatch sequences per rank).
func (c *cpuModel) rankBytes(l ParallelLayout, seqLen int64, r int) (dev, host tierBytes) {
	ep := max(l.EP, 1)
	R := c.ranks
	edp := R / ep
	perRank := int64(0)
	if c.d.E > 0 {
		perRank = c.d.E / int64(ep)
	}
	var held, shard float64 // floats held whole and this rank's shard
	var phase float64       // the largest set of gathered buffers at once (floats)
	wGather, gGather := 0.0, 0.0
	if l.ZeRO >= 3 {
		wGather = 1 // acquire: tmpW, the unit's all-gathered weights
	}
	if l.ZeRO >= 2 {
		gGather = 1 // acquire(grads): tmpG, the unit's full gradients until reduce-scatter
	}
	padded := make([]float64, len(c.units))
	for u, cu := range c.units {
		for _, part := range []struct {
			n          int64
			size, rank int
		}{{cu.dense, R, r}, {cu.perExpert * perRank, edp, r / ep}} {
			if part.n == 0 {
				continue
			}
			p := newCPUPart(part.n, part.size, part.rank)
			held += float64(p.n)
			shard += float64(p.hi - p.lo)
			padded[u] += float64(p.padded(part.size))
		}
	}
	// forwardBackward's phases: each layer alone, the embedding alone, the head with the
	// embedding when they are tied. Backward phases gather weights and gradients.
	for u := range padded {
		set := padded[u]
		if u == len(padded)-1 && c.m.TieEmbeddings {
			set += padded[0]
		}
		phase = math.Max(phase, set*(wGather+gGather))
	}
	at := func(stage int) float64 {
		if l.ZeRO >= stage {
			return shard
		}
		return held
	}
	dev[compParams] = f32Bytes * at(3)
	dev[compGrads] = f32Bytes * at(2)
	states := c.moments * at(1)
	if c.cache != nil {
		// The unified cache: the rank's weight and gradient shards and the moments are the
		// host-tier backing store; the device holds the page pool of gathered units.
		host[compParams] = f32Bytes * shard
		host[compGrads] = f32Bytes * shard
		host[compOptimizer] = states
		pages, temp := c.cache.replay(padded, c.m.TieEmbeddings)
		dev[compParams] = float64(pages * c.cache.Page)
		dev[compGrads] = 0
		phase = temp // gathered units leave the temporary buffers once cached
	} else if c.offload {
		// The fp32 master weights and the gradient shard the optimizer reads (part.host,
		// part.hostG), and the moments, live in the host tier.
		host[compParams] = f32Bytes * shard
		host[compGrads] = f32Bytes * shard
		host[compOptimizer] = states
	} else {
		dev[compOptimizer] = states
	}
	act, disp, logits := c.workspace(int64(l.MicroBatch), seqLen, ep)
	dev[compActivations] = act
	dev[compDispatch] = disp
	dev[compTemp] = logits + f32Bytes*phase
	return dev, host
}

// workspace returns the bytes of one rank's step buffers for a micro-batch of B sequences
// of T tokens, split as nn's WorkspaceBytes splits them: activations (everything kept for
// backward, gradient scratch, routing state), MoE dispatch buffers (expert-sorted rows and,
// with expert parallelism, the rows received and their outputs) and the logits.
func (c *cpuModel) workspace(B, T int64, ep int) (act, disp, logits float64) {
	m, d := c.m, c.d
	n := B * T
	bhtt := B * d.H * T * T
	var f, other int64 // float32 elements; bytes of other element types
	// workspace: x, the final norm (xhatF, rstdF, hF), dx, dh, tmp; tok; the step's flags.
	f += n*d.D + n*d.D + n + n*d.D + 3*n*d.D
	other += i32Bytes*n + d.L /* recompute []bool */ + intBytes*d.L /* owner []int */
	if c.tokenRouted() {
		f += 2 * n * d.routerIn // the tokens' router-table rows and their gradient, shared by the layers
	}
	// attnGrads: do, dq, dk, dv (+ dqPre, dkPre with qk_norm).
	f += 2*n*d.qDim + 2*n*d.kvDim
	if m.Attention.QKNorm {
		f += n*d.qDim + n*d.kvDim
	}
	sharing := m.Attention.SharesWeights()
	var dispF int64
	for i := 0; i < int(d.L); i++ {
		// layerWS: the two norms' xhat, rstd and outputs, kept whatever the placement.
		f += 4*n*d.D + 2*n
		if d.placement != program.PreNorm {
			f += 2 * (n*d.D + n) // xhatPA/rstdPA and xhatPF/rstdPF
		}
		// attnWS: q and o; k and v (and their cross-layer gradient sums) on owners only.
		owner := i%d.shareKV == 0
		f += 2 * n * d.qDim
		if owner {
			f += 2 * n * d.kvDim
			if d.shareKV > 1 {
				f += 2 * n * d.kvDim
			}
		}
		if m.Attention.QKNorm {
			f += n*d.qDim + n*d.H // qhat, qrstd
			if owner {
				f += n*d.kvDim + n*d.KV // khat, krstd
			}
		}
		f += bhtt // p (also a without talking heads)
		if m.Attention.TalkingHeads {
			f += 2 * bhtt // sRaw and the mixed weights a
		}
		if sharing {
			f += bhtt // dAacc
		}
		moeLayer := m.IsMoELayer(i)
		if !moeLayer || m.MoE.ParallelDense {
			f += ffnWSFloats(n, d.hidden, d.gated) // newFFNWS
		}
		if moeLayer {
			nk := n * d.K
			// newMoEWS: router logits, scores, their gradient, log-sum-exp; gates and
			// their gradient; the router input's gradient (and gathered router
			// embeddings); the experts' activations over all n·K sorted rows; shared experts.
			f += 3*n*d.E + n + 2*nk + n*d.routerIn
			f += d.groups
			other += i32Bytes*d.topKGroups + 2*i32Bytes*nk /* idx, rowOf */ +
				intBytes*(4*d.E+1) /* routed, cursor, kept, offs */ + f64Bytes*d.E /* fe */
			f += ffnWSFloats(nk, d.eHidden, d.expertGated)
			f += d.shared * ffnWSFloats(n, d.sHidden, d.expertGated)
			dispF += 2 * nk * d.D // xs, out
			// shard.go's per-layer routing state over all ranks: routedG, keptBy, keptG.
			R := int64(c.ranks)
			other += f64Bytes*d.E + intBytes*R*d.E + intBytes*d.E
			if ep > 1 {
				P, per := int64(ep), d.E/int64(ep)
				// sendCnt, sendOf, recvCnt, recvOf; seg and segN per source and expert.
				other += intBytes * (4*P + 2*P*per)
				rows := c.receivedRows(n)
				dispF += 2 * rows * d.D // recv, recvOut
				f += ffnWSFloats(rows, d.eHidden, d.expertGated)
			}
		}
	}
	// Per worker: two [H, T, T] attention scratch buffers and the talking-heads gradients.
	f += c.workers * (2*d.H*T*T + 2*d.H*d.H + d.H)
	if m.Position == program.Rotary {
		f += T * (d.Dh / 2) * 2 // rope cos and sin
	}
	logits = float64(f32Bytes * n * d.V)
	return float64(f32Bytes*f + other), float64(f32Bytes * dispF), logits
}

// receivedRows is the rows an expert-parallel rank receives for its experts per MoE layer
// (shard.go's recv, sized by the largest exchange seen): with balanced routing every rank
// sends each expert n·K/E assignments, of which the capacity keeps at most capacity_factor
// of the mean, so the rank's E/ep experts receive n·K·min(1, capacity_factor) rows from
// its ep group.
func (c *cpuModel) receivedRows(n int64) int64 {
	moe := c.m.MoE
	rows := float64(n * c.d.K)
	if !moe.Dropless() && moe.CapacityFactor < 1 {
		rows *= moe.CapacityFactor
	}
	return int64(math.Ceil(rows))
}

// ffnWSFloats is newFFNWS: pre-activation and activated rows, and the gated branch.
func ffnWSFloats(rows, hidden int64, gated bool) int64 {
	if gated {
		return 3 * rows * hidden
	}
	return 2 * rows * hidden
}

// memory is the worst rank's use for the search; capacities are each rank's share of the
// host (the device tier) and the whole usable host (the host tier, summed over ranks).
// Host-tier bytes come out of the same memory as the device tier, so they shrink it.
func (c *cpuModel) memory(l ParallelLayout, seqLen int64, share float64) memoryUse {
	var best memoryUse
	bestRatio := -1.0
	var hostAll tierBytes
	for r := 0; r < c.ranks; r++ {
		_, host := c.rankBytes(l, seqLen, r)
		for k := range hostAll {
			hostAll[k] += host[k]
		}
	}
	for r := 0; r < c.ranks; r++ {
		dev, host := c.rankBytes(l, seqLen, r)
		m := memoryUse{gpu: dev, host: hostAll, gpuCap: share - host.sum()}
		if c.offload || c.cache != nil {
			m.hostCap = share * float64(c.ranks)
		}
		if ratio, _ := m.overflow(); ratio > bestRatio {
			best, bestRatio = m, ratio
		}
	}
	return best
}

// CacheOptions is the unified cache a local run executes: a device page pool of Budget
// bytes in pages of Page bytes, evicting by Eviction ("lru", "lfu", "fifo").
type CacheOptions struct {
	Budget, Page int64
	Eviction     string
	accum        int // micro-batches per step (the pool empties at each update)
}

// replay plays one step's unit requests through the runtime's page pool
// (internal/pagepool, which runtime/train runs: same requests, same pinning, same
// eviction) and returns the most pages it held and the most floats of temporary buffers at
// once (a unit's gathered weights until the pool takes them, its gradients until its
// backward ends). units are the gathered units' floats (padded); the requests are those of
// forwardBackward: embedding, each layer, the head (with the embedding when tied) forward,
// then the head, the layers in reverse and the embedding backward, once per micro-batch,
// with the pool emptied after the optimizer update. An unknown eviction policy is the
// runtime's error, and the default (lru) here.
func (o *CacheOptions) replay(units []float64, tied bool) (int64, float64) {
	policy, err := pagepool.ParsePolicy(o.Eviction)
	if err != nil {
		policy = pagepool.LRU
	}
	pool := pagepool.New[struct{}](o.Budget/o.Page, policy)
	var peak int64
	var temp, tempPeak float64
	// acquire returns whether u's gathered weights stay in a temporary buffer.
	acquire := func(u int, grads bool) bool {
		if grads {
			temp += units[u]
		}
		if pool.Get(u) != nil {
			tempPeak = max(tempPeak, temp)
			return false
		}
		temp += units[u]
		tempPeak = max(tempPeak, temp)
		if ok, _ := pool.Put(u, pagepool.PagesFor(int64(units[u])*f32Bytes, o.Page), struct{}{}); !ok {
			return true
		}
		peak = max(peak, pool.Used())
		temp -= units[u]
		return false
	}
	phase := func(grads bool, us ...int) {
		var kept []int
		for _, u := range us {
			if acquire(u, grads) {
				kept = append(kept, u)
			}
		}
		for _, u := range us {
			pool.Unpin(u)
			if grads {
				temp -= units[u]
			}
		}
		for _, u := range kept {
			temp -= units[u]
		}
	}
	last := len(units) - 1
	head := []int{last}
	if tied {
		head = append(head, 0)
	}
	for range max(o.accum, 1) {
		phase(false, 0)
		for u := 1; u < last; u++ {
			phase(false, u)
		}
		phase(false, head...)
		phase(true, head...)
		for u := last - 1; u >= 1; u-- {
			phase(true, u)
		}
		phase(true, 0)
	}
	return peak, tempPeak
}

// tokenRouted reports whether the model routes on its token-embedding router table (and
// has an MoE layer to use it).
func (c *cpuModel) tokenRouted() bool {
	m := c.m
	if m.MoE == nil || m.MoE.Router != program.RouteTokenEmbedding {
		return false
	}
	for i := 0; i < int(c.d.L); i++ {
		if m.IsMoELayer(i) {
			return true
		}
	}
	return false
}
