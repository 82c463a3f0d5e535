package plan

import (
	"fmt"
	"math"
	"sort"

	"github.com/moec-dev/moec/compiler/features"
	"github.com/moec-dev/moec/compiler/program"
)

// strategy is a memory strategy the search may use.
type strategy struct {
	memory  program.MemoryKind
	zero    int
	offload program.Offload
}

func (s strategy) String() string {
	if s.memory == "unified_cache" {
		return "unified_cache"
	}
	if s.offload != "none" {
		return fmt.Sprintf("zero%d-offload-%s", s.zero, s.offload)
	}
	return fmt.Sprintf("zero%d", s.zero)
}

// space bounds the search: the device budget, and any dimension the user fixed.
type space struct {
	budget     int                 // most devices to use
	strategies []strategy          // memory strategies to try
	recompute  []program.Recompute // recompute modes to try
	microBatch int                 // fixed micro-batch (0 = search)
	dp, ep     int                 // fixed sizes (0 = search); Local fixes them
	tp, pp     int
	// ignoreBatch lets dp be any size, not only a divisor of the sequences per batch:
	// the seed counts devices by memory alone.
	ignoreBatch bool
	// anyLayout lets the search take layouts the step program does not lower for the model
	// (the seed's capacity figures count memory, not what moec runs).
	anyLayout bool
	objective Objective
	keep      int // alternatives to keep
}

// candidate is an evaluated layout.
type candidate struct {
	l     ParallelLayout
	mem   memoryUse
	t     Timing
	ratio float64 // worst tier's used/capacity
	tier  string
}

func (c *candidate) cost() float64 { return float64(c.l.World()) * c.t.StepSeconds }

// perSeq is the step time per sequence of the batch.
func (c *candidate) perSeq() float64 { return c.t.StepSeconds / float64(max(c.l.Batch, 1)) }

// better reports whether a beats b under the objective, with a total order so the result
// never depends on enumeration order.
func better(objective Objective, a, b *candidate) bool {
	// Ties break towards fewer devices, then more memory headroom.
	key := func(c *candidate) [4]float64 {
		// Layouts may round the batch differently: compare time per sequence, not per step.
		perSeq := c.perSeq()
		switch objective {
		case "gpus":
			return [4]float64{float64(c.l.World()), perSeq, c.ratio, 0}
		case "cost":
			return [4]float64{c.cost() / float64(max(c.l.Batch, 1)), perSeq, float64(c.l.World()), c.ratio}
		}
		return [4]float64{perSeq, float64(c.l.World()), c.ratio, 0}
	}
	ka, kb := key(a), key(b)
	for i := range ka {
		if d := ka[i] - kb[i]; math.Abs(d) > 1e-9*math.Max(math.Abs(ka[i]), 1e-300) {
			return d < 0
		}
	}
	return layoutLess(a.l, b.l)
}

func layoutLess(a, b ParallelLayout) bool {
	x := [...]int{a.TP, a.PP, a.DP, a.EP, a.ZeRO, a.MicroBatch}
	y := [...]int{b.TP, b.PP, b.DP, b.EP, b.ZeRO, b.MicroBatch}
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	if a.Memory != b.Memory {
		return a.Memory < b.Memory
	}
	if a.Offload != b.Offload {
		return a.Offload < b.Offload
	}
	return a.Recompute < b.Recompute
}

// layoutKey identifies a family of layouts: alternatives differ in it. The data-parallel
// size is left out so that runners-up are not the best layout on one device fewer.
type layoutKey struct {
	ep, tp, pp, zero int
	memory           program.MemoryKind
	offload          program.Offload
}

// result is what a search found.
type result struct {
	best      *candidate
	alts      []*candidate // runners-up with distinct layouts, best first
	miss      *candidate   // the non-fitting candidate closest to fitting
	fastMiss  *candidate   // the fastest non-fitting candidate (why a faster plan was not chosen)
	evaluated int
}

// divisors returns the divisors of n in increasing order.
func divisors(n int) []int {
	var small, large []int
	for i := 1; i*i <= n; i++ {
		if n%i == 0 {
			small = append(small, i)
			if i != n/i {
				large = append(large, n/i)
			}
		}
	}
	for i := len(large) - 1; i >= 0; i-- {
		small = append(small, large[i])
	}
	return small
}

// divisorsOf memoises divisors for the micro-batch scan.
func (e *env) divisorsOf(n int) []int {
	d, ok := e.divs[n]
	if !ok {
		d = divisors(n)
		e.divs[n] = d
	}
	return d
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// tensorSizes are the tensor-parallel sizes that divide every dimension TP splits and stay
// inside a node.
func (e *env) tensorSizes(sp *space) []int {
	w := e.w
	if sp.tp > 0 {
		return []int{sp.tp}
	}
	var out []int
	for _, t := range divisors(int(max(w.heads, 1))) {
		if t > e.a.TPMax || (e.c.GPUsPerNode > 0 && e.c.GPUsPerNode%t != 0) {
			continue
		}
		if w.kvHeads%int64(t) != 0 || w.ffnHidden%int64(t) != 0 || (w.isMoE() && w.expertHidden%int64(t) != 0) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// stepLowers reports, for a tensor- and pipeline-parallel size, whether the step program
// lowers the model at that split as well as it does on one rank: the features table's
// layout-dependent cells (compiler/features) decide. A feature it refuses at every
// layout does not narrow the search; the build names it.
func (e *env) stepLowers() func(tp, pp int) bool {
	m := e.w.model
	if m == nil {
		return func(int, int) bool { return true }
	}
	base := map[string]bool{}
	for _, g := range features.Refusals(m, features.Step, features.Layout{TP: 1, PP: 1}) {
		base[g.Feature.Key] = true
	}
	memo := map[[2]int]bool{}
	return func(tp, pp int) bool {
		k := [2]int{tp, pp}
		if v, ok := memo[k]; ok {
			return v
		}
		ok := true
		for _, g := range features.Refusals(m, features.Step, features.Layout{TP: tp, PP: pp}) {
			if !base[g.Feature.Key] {
				ok = false
				break
			}
		}
		memo[k] = ok
		return ok
	}
}

// search enumerates layouts in sp and returns the best that fits.
func (e *env) search(sp *space) result {
	var res result
	w := e.w
	seqs := int(w.sequences)
	layers := len(w.layers)
	byKey := map[layoutKey]*candidate{}
	pps := divisors(max(layers, 1))
	if sp.pp > 0 {
		pps = []int{sp.pp}
	}
	lowers := e.stepLowers()
	for _, tp := range e.tensorSizes(sp) {
		for _, pp := range pps {
			if tp*pp > sp.budget {
				continue
			}
			if !sp.anyLayout && !lowers(tp, pp) {
				// The step program cannot run this model split this way (talking heads
				// over tp, attention sharing over pp, ...): no backend would run the plan.
				continue
			}
			for _, dp := range e.dataSizes(sp, seqs, sp.budget/(tp*pp)) {
				for _, ep := range e.expertSizes(sp, dp) {
					for _, st := range sp.strategies {
						for _, rc := range sp.recompute {
							e.searchMicroBatches(sp, &res, byKey, ParallelLayout{
								DP: dp, EP: ep, EDP: dp / ep, TP: tp, PP: pp,
								Memory: st.memory, ZeRO: st.zero, Offload: st.offload, Recompute: rc,
							}, seqs)
						}
					}
				}
			}
		}
	}
	for _, c := range byKey {
		if c != res.best {
			res.alts = append(res.alts, c)
		}
	}
	// Map order is random: put the runners-up in a fixed order before ranking them, so
	// near-ties (compared with a tolerance) always come out the same way.
	sort.Slice(res.alts, func(i, j int) bool { return layoutLess(res.alts[i].l, res.alts[j].l) })
	sort.SliceStable(res.alts, func(i, j int) bool { return better(sp.objective, res.alts[i], res.alts[j]) })
	if len(res.alts) > sp.keep {
		res.alts = res.alts[:sp.keep]
	}
	return res
}

// dataSizes are the data-parallel sizes up to limit whose per-rank share of the batch,
// rounded to whole sequences, stays within the batch tolerance.
func (e *env) dataSizes(sp *space, seqs, limit int) []int {
	if sp.dp > 0 {
		if sp.dp <= limit {
			return []int{sp.dp}
		}
		return nil
	}
	var out []int
	for d := 1; d <= limit; d++ {
		if sp.ignoreBatch || e.perRank(seqs, d) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// perRank is the sequences each of dp ranks runs per step, or 0 when rounding the batch
// to a multiple of dp moves it by more than the tolerance.
func (e *env) perRank(seqs, dp int) int {
	r := int(math.Round(float64(seqs) / float64(dp)))
	if r < 1 {
		return 0
	}
	if math.Abs(float64(r*dp-seqs)) > e.a.BatchTolerance*float64(seqs) {
		return 0
	}
	return r
}

// expertSizes are the expert-parallel sizes: divisors of both dp and the expert count.
func (e *env) expertSizes(sp *space, dp int) []int {
	if !e.w.isMoE() {
		return []int{1}
	}
	if sp.ep > 0 {
		if dp%sp.ep == 0 && e.w.experts%sp.ep == 0 {
			return []int{sp.ep}
		}
		return nil
	}
	return divisors(gcd(dp, e.w.experts))
}

// searchMicroBatches tries micro-batches in increasing order for one layout; memory grows
// with the micro-batch, so the first that does not fit ends the scan.
func (e *env) searchMicroBatches(sp *space, res *result, byKey map[layoutKey]*candidate, l ParallelLayout, seqs int) {
	perRank := e.perRank(seqs, l.DP)
	if sp.ignoreBatch {
		perRank = max(1, int(math.Round(float64(seqs)/float64(l.DP))))
	}
	if perRank == 0 {
		return
	}
	mbs := e.divisorsOf(max(perRank, 1))
	if sp.microBatch > 0 {
		if perRank%sp.microBatch != 0 {
			return
		}
		mbs = []int{sp.microBatch}
	}
	for _, mb := range mbs {
		l.MicroBatch = mb
		l.GradAccum = max(1, perRank/mb)
		l.Batch = l.DP * mb * l.GradAccum
		if l.PP > 1 && l.GradAccum < l.PP && e.cpu == nil {
			// 1F1B needs at least pp micro-batches to fill the pipeline (a local plan
			// runs what its step programs schedule, whatever the count).
			continue
		}
		res.evaluated++
		c := candidate{l: l, mem: e.memory(l)}
		c.ratio, c.tier = c.mem.overflow()
		if c.ratio > 1 {
			if res.miss == nil || c.ratio < res.miss.ratio ||
				(c.ratio == res.miss.ratio && layoutLess(c.l, res.miss.l)) {
				cc := c
				res.miss = &cc
			}
			if res.best != nil {
				c.t = e.stepTime(l, &c.mem, nil)
				if c.perSeq() < res.best.perSeq() && (res.fastMiss == nil || better("time", &c, res.fastMiss)) {
					cc := c
					res.fastMiss = &cc
				}
			}
			return
		}
		c.t = e.stepTime(l, &c.mem, nil)
		if math.IsInf(c.t.StepSeconds, 0) || math.IsNaN(c.t.StepSeconds) {
			// A link the layout needs has no bandwidth (no network, no host link).
			return
		}
		key := layoutKey{l.EP, l.TP, l.PP, l.ZeRO, l.Memory, l.Offload}
		old, ok := byKey[key]
		isBest := res.best == nil || better(sp.objective, &c, res.best)
		if !isBest && ok && !better(sp.objective, &c, old) {
			continue
		}
		cc := new(candidate)
		*cc = c
		if isBest {
			res.best = cc
		}
		if !ok || better(sp.objective, cc, old) {
			byKey[key] = cc
		}
	}
}
