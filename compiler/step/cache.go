package step

import (
	"fmt"
	"math"
	"slices"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/internal/pagepool"
)

// The unified cache (AngelPTM) in a step program. Every parameter, its gradient and the
// optimizer states live in the host tier (KindParam, KindGrad and KindOptimizer buffers);
// the device holds a working set of units — the embedding, each decoder layer, the head,
// as runtime/train's cache counts them — in pages of Cache.Page bytes. Before a unit's
// parameters are read in the forward or the backward, the unit is requested from a page
// pool (internal/pagepool, the one runtime/train and the planner use): a miss emits a
// cache_fetch that copies the unit's host tensors into device copies (KindGathered
// buffers), after cache_evict ops for the units the eviction policy gives up; a hit reads
// the copies already there. The pool is simulated while lowering, over the program's
// order of requests, so the listing shows every move and its bytes. The backward writes a
// unit's parameter gradients into device buffers, which a cache_writeback adds into the
// host gradients when the unit's use ends; the reduction and the optimizer update then
// run on the host tier. At the end of the backward every cached unit is evicted: the
// update changes the host weights the copies were taken from.
//
// Under ZeRO 3 (AngelPTM partitions the model states and pages them) a rank's host tier
// holds its shard of each reduction group's flat parameter vector, gradients and
// optimizer states: a miss all-gathers the unit's tensors from the members' host shards
// into the device copies, the write-backs fill the host gradients that the reduction
// then reduce-scatters into the rank's gradient shard, and the update runs on the shard.
//
// The budget bounds the whole device arena: the pool gets the pages left beside the
// step's other device buffers at their peak (activations, device gradients, inputs), so
// the device tier's peak of live bytes is at most the budget (and fewer, should the
// placement's arena exceed its peak).

// Cache is the unified cache of a layout; its zero value is none.
type Cache struct {
	Budget   int64           // the device arena's bytes: what the program's device peak may reach
	Page     int64           // page size in bytes (DefaultCachePage when 0)
	Eviction pagepool.Policy // the pool's eviction policy ("" is lru)
}

// DefaultCachePage is the language's page: memory = unified_cache(page = 4MiB).
const DefaultCachePage = 4 << 20

// On reports whether the layout runs the cache.
func (c Cache) On() bool { return c.Budget > 0 }

func (c Cache) String() string {
	return fmt.Sprintf("unified cache of %s in %s pages (%s)", human.Bytes(c.Budget), human.Bytes(c.page()), c.policy())
}

func (c Cache) page() int64 {
	if c.Page <= 0 {
		return DefaultCachePage
	}
	return c.Page
}

func (c Cache) policy() pagepool.Policy {
	if c.Eviction == "" {
		return pagepool.LRU
	}
	return c.Eviction
}

// Moves reports whether k moves data between a rank's host and device tiers.
func (k OpKind) Moves() bool {
	switch k {
	case OpToHost, OpToDevice, OpCacheFetch, OpCacheEvict, OpCacheWriteback:
		return true
	}
	return false
}

// CacheBudget says why a device budget cannot run a step: the largest set of units one
// use pins (the head with a tied embedding pins two) does not fit in the pages left
// beside the step's other device buffers.
type CacheBudget struct {
	Cache
	Unit      string // the use that does not fit
	UnitBytes int64  // its parameters' bytes on the device
	Pages     int64  // the pages it needs
	Working   int64  // the step's other device buffers at their peak
	Need      int64  // the smallest budget that runs the step
}

func (b CacheBudget) String() string {
	return fmt.Sprintf("the unified cache's device budget %s cannot hold %s (%s in %d page(s) of %s) beside the step's %s of other device buffers (activations, device gradients, inputs); the step needs at least %s",
		human.Bytes(b.Budget), b.Unit, human.Bytes(b.UnitBytes), b.Pages, human.Bytes(b.page()), human.Bytes(b.Working), human.Bytes(b.Need))
}

// Suggestion is the smallest change that runs the step.
func (b CacheBudget) Suggestion() string {
	return fmt.Sprintf("raise the cache budget to at least %s (--cache-budget %d), or use more tensor- or pipeline-parallel ranks so each holds less", human.Bytes(b.Need), b.Need)
}

// checkCache refuses what the cache does not lower.
func checkCache(l Layout) []Unsupported {
	c := l.Cache
	switch {
	case !c.On():
		return nil
	case c.Page < 0:
		return []Unsupported{{Feature: "the unified cache", Why: fmt.Sprintf("page size %d bytes is negative", c.Page)}}
	}
	if _, err := pagepool.ParsePolicy(string(c.Eviction)); err != nil {
		return []Unsupported{{Feature: "the unified cache", Why: err.Error()}}
	}
	return nil
}

// cacheState is the lowering's simulation of one rank's page pool.
type cacheState struct {
	cfg  Cache
	pool *pagepool.Pool[[]int] // a cached unit's device copies, in unitParams order
	// unitParams are each unit's parameters on this rank, in walk order.
	unitParams map[int][]params.ID
	fetches    map[int]int // fetches of each unit so far (names the copies)
	// section is the current use: its phase, micro-batch and unit; pinned the units it
	// holds (a use of the head with a tied embedding pins two).
	section    [3]int
	inSection  bool
	pinned     map[int]bool
	pinnedPage int64
	// devGrad are the device gradients of the current use, by parameter, in order.
	devGrad   map[params.ID]int
	gradOrder []params.ID
	gradCount map[params.ID]int
	// copies marks the device copies (the pool's pages); maxPinned is the most pages one
	// use pinned, and maxUse names it.
	copies    map[int]bool
	maxPinned int64
	maxUse    string
	maxBytes  int64
}

func newCacheState(cfg Cache, capacity int64) *cacheState {
	return &cacheState{cfg: cfg, pool: pagepool.New[[]int](capacity, cfg.policy()), unitParams: map[int][]params.ID{},
		fetches: map[int]int{}, pinned: map[int]bool{}, devGrad: map[params.ID]int{}, gradCount: map[params.ID]int{}, copies: map[int]bool{}}
}

// lowerCached lowers a rank under the unified cache: once with an unbounded pool, to find
// the peak of the device buffers the pool does not hold and the largest use, then with the
// pages the budget leaves.
func lowerCached(lw0 func() *lowerer) (*Program, error) {
	dry := lw0()
	dry.cache = newCacheState(dry.l.Cache, math.MaxInt64/2)
	dry.lower()
	lt := Lifetimes(dry.p)
	working := peakExcept(dry.p, lt, Device, dry.cache.copies)
	cfg := dry.l.Cache
	page := cfg.page()
	refuse := func() error {
		return &LayoutError{Budget: &CacheBudget{Cache: cfg, Unit: dry.cache.maxUse, UnitBytes: dry.cache.maxBytes, Pages: dry.cache.maxPinned,
			Working: working, Need: working + dry.cache.maxPinned*page}}
	}
	// The peak of live bytes is within the budget by construction; the arena the placement
	// needs can exceed its peak (fragmentation): the pool then gets fewer pages.
	for capacity := (cfg.Budget - working) / page; capacity >= dry.cache.maxPinned; {
		lw := lw0()
		lw.cache = newCacheState(cfg, capacity)
		lw.lower()
		lw.p.Memory = planMemory(lw.p)
		if over := lw.p.Memory.Arena[Device] - cfg.Budget; over > 0 {
			capacity -= max(1, pagepool.PagesFor(over, page))
			continue
		}
		hits, _, _ := lw.cache.pool.Stats()
		lw.p.CacheHits = int(hits)
		return lw.p, nil
	}
	return nil, refuse()
}

// peakExcept is tier's peak of live bytes over the buffers not in skip.
func peakExcept(p *Program, lt [][2]int, tier Tier, skip map[int]bool) int64 {
	delta := make([]int64, len(p.Ops)+1)
	for i, b := range p.Buffers {
		if b.Tier != tier || lt[i][0] < 0 || skip[i] {
			continue
		}
		delta[lt[i][0]] += align(b.Bytes())
		delta[lt[i][1]+1] -= align(b.Bytes())
	}
	var live, peak int64
	for op := 0; op < len(p.Ops); op++ {
		live += delta[op]
		peak = max(peak, live)
	}
	return peak
}

// Units: 0 the embedding (token and position tables, the router table), l+1 decoder
// layer l, L+1 the head (the final norm and the output projection).
func (lw *lowerer) unitOf(id params.ID) int {
	switch {
	case id.Layer >= 0:
		return id.Layer + 1
	case id.Role == params.RoleFinalNorm || id.Role == params.RoleHead:
		return lw.d.L + 1
	}
	return 0
}

func (lw *lowerer) unitName(u int) string {
	switch u {
	case 0:
		return "embedding"
	case lw.d.L + 1:
		return "head"
	}
	return fmt.Sprintf("layer %d", u-1)
}

func unitLayer(u int, L int) int {
	if u == 0 || u == L+1 {
		return -1
	}
	return u - 1
}

// cacheDeclare moves the rank's parameters, gradients and optimizer states to the host
// tier and groups the parameters into units.
func (lw *lowerer) cacheDeclare() {
	for i, b := range lw.p.Buffers {
		if b.Kind == KindParam || b.Kind == KindGrad || b.Kind == KindOptimizer || lw.paramGradBufs[i] {
			b.Tier = Host
		}
	}
	for _, id := range lw.order {
		u := lw.unitOf(id)
		lw.cache.unitParams[u] = append(lw.cache.unitParams[u], id)
	}
}

// cacheUseIDs requests the units holding ids for one use (section is its unit).
func (lw *lowerer) cacheUseIDs(section int, ids []params.ID) {
	var units []int
	for _, id := range ids {
		if u := lw.unitOf(id); !slices.Contains(units, u) {
			units = append(units, u)
		}
	}
	slices.Sort(units)
	lw.cacheUse(section, units)
}

// cacheUse makes units resident on the device for the current use: a new use (another
// unit, phase or micro-batch) first writes the last one's gradients back and unpins its
// units; a unit the pool holds is a hit, one it does not is fetched after the evictions
// the policy chooses.
func (lw *lowerer) cacheUse(section int, units []int) {
	cs := lw.cache
	key := [3]int{int(lw.phase), lw.micro, section}
	if !cs.inSection || cs.section != key {
		lw.cacheEndUse()
		cs.section, cs.inSection = key, true
	}
	for _, u := range units {
		ids := cs.unitParams[u]
		if cs.pinned[u] || len(ids) == 0 {
			continue
		}
		cs.pinned[u] = true
		if e := cs.pool.Get(u); e != nil {
			for i, id := range ids {
				lw.gathered[gatherKey{id, lw.phase, lw.micro}] = e.Value[i]
			}
			cs.pin(lw, u, e.Pages)
			continue
		}
		// A parameter this rank holds whole is copied from its host tensor; under ZeRO 3
		// the rank holds a shard of its group's flat vector in host memory, and the unit's
		// tensors are all-gathered from the members' host shards into the device copies.
		var host, copies, dev []int
		var bytes, aligned int64
		sharded := map[*group][]int{}
		var groups []*group
		for _, id := range ids {
			pid := id
			d := lw.buf(fmt.Sprintf("%s/c%d", id, cs.fetches[u]), KindGathered, lw.shapes[id]...)
			db := lw.p.Buffers[d]
			db.Flat, db.Param = lw.flat[id], &pid
			lw.paramOfBuf[d] = id
			lw.gathered[gatherKey{id, lw.phase, lw.micro}] = d
			cs.copies[d] = true
			dev = append(dev, d)
			aligned += align(db.Bytes())
			if h := lw.param[id]; h >= 0 {
				host, copies = append(host, h), append(copies, d)
				bytes += db.Bytes()
				continue
			}
			g := lw.groupOf(id)
			if _, seen := sharded[g]; !seen {
				groups = append(groups, g)
			}
			sharded[g] = append(sharded[g], d)
		}
		cs.fetches[u]++
		pages := pagepool.PagesFor(aligned, cs.cfg.page())
		ok, evicted := cs.pool.Put(u, pages, dev)
		if !ok {
			// lowerCached sized the pool for the largest use: a lowering bug.
			panic(fmt.Sprintf("step: internal error: %s (%d pages) does not fit the cache", lw.unitName(u), pages))
		}
		for _, e := range evicted { // in the policy's order
			lw.cacheEvict(e, "evicted ("+string(cs.cfg.policy())+")")
		}
		if len(host) > 0 {
			lw.emit(Op{Kind: OpCacheFetch, Phase: lw.phase, Layer: unitLayer(u, lw.d.L), In: host, Out: copies,
				Attr: fmt.Sprintf("%s into %d page(s)", lw.unitName(u), pages), Bytes: bytes})
		}
		for _, g := range groups {
			var gb int64
			for _, d := range sharded[g] {
				gb += lw.p.Buffers[d].Bytes()
			}
			lw.emit(Op{Kind: OpAllGather, Phase: lw.phase, Layer: unitLayer(u, lw.d.L), In: []int{g.paramShard}, Out: sharded[g], Group: g.axis, CacheFill: true,
				Attr:  fmt.Sprintf("%s %s parameters into %d page(s): the host shards gathered (unified cache, ZeRO 3)", lw.unitName(u), g.name, pages),
				Bytes: gb * int64(g.size-1) / int64(g.size)})
		}
		cs.pin(lw, u, pages)
	}
}

// pin counts u's pages toward the current use's, keeping the largest use.
func (cs *cacheState) pin(lw *lowerer, u int, pages int64) {
	cs.pinnedPage += pages
	if cs.pinnedPage > cs.maxPinned {
		cs.maxPinned = cs.pinnedPage
		var names []string
		var bytes int64
		for v := range lw.d.L + 2 {
			if cs.pinned[v] {
				names = append(names, lw.unitName(v))
				for _, id := range cs.unitParams[v] {
					bytes += align(lw.paramBytes(id))
				}
			}
		}
		cs.maxUse, cs.maxBytes = fmt.Sprint(names), bytes
		if len(names) == 1 {
			cs.maxUse = names[0]
		}
	}
}

func (lw *lowerer) cacheEvict(e *pagepool.Entry[[]int], why string) {
	lw.emit(Op{Kind: OpCacheEvict, Phase: lw.phase, Layer: unitLayer(e.Unit, lw.d.L), In: e.Value,
		Attr: fmt.Sprintf("%s %s, %d page(s); unchanged on the device, nothing written back", lw.unitName(e.Unit), why, e.Pages)})
}

// cacheEndUse ends the current use: the device gradients it wrote are added into the host
// gradients (the step's first contribution to one overwrites it), and its units unpinned.
func (lw *lowerer) cacheEndUse() {
	cs := lw.cache
	if len(cs.gradOrder) > 0 {
		op := Op{Kind: OpCacheWriteback, Phase: Backward, Layer: unitLayer(cs.section[2], lw.d.L)}
		for _, id := range cs.gradOrder {
			dev, host := cs.devGrad[id], lw.grad[id]
			op.In = append(op.In, dev)
			op.Out = append(op.Out, host)
			op.Acc = append(op.Acc, lw.paramWritten[host])
			lw.paramWritten[host] = true
			op.Bytes += lw.p.Buffers[dev].Bytes()
		}
		op.Attr = fmt.Sprintf("%s gradients into the host copies", lw.unitName(cs.section[2]))
		lw.emit(op)
		cs.gradOrder, cs.devGrad = cs.gradOrder[:0], map[params.ID]int{}
	}
	for u := range cs.pinned {
		cs.pool.Unpin(u)
	}
	clear(cs.pinned)
	cs.pinnedPage, cs.inSection = 0, false
}

// cacheGrad is the device gradient of parameter id for the current use.
func (lw *lowerer) cacheGrad(id params.ID) int {
	cs := lw.cache
	if g, ok := cs.devGrad[id]; ok {
		return g
	}
	if u := lw.unitOf(id); !cs.pinned[u] || cs.section[0] != int(lw.phase) || cs.section[1] != lw.micro {
		lw.cacheUse(u, []int{u}) // the gradient belongs to its unit's use in this backward
	}
	host := lw.p.Buffers[lw.grad[id]]
	g := lw.buf(fmt.Sprintf("%s/dev%d", host.Name, cs.gradCount[id]), KindActGrad, host.Shape...)
	cs.gradCount[id]++
	cs.devGrad[id] = g
	cs.gradOrder = append(cs.gradOrder, id)
	return g
}

// cacheDrop ends the last use and evicts every cached unit: the update is about to change
// the host weights.
func (lw *lowerer) cacheDrop() {
	lw.cacheEndUse()
	gone := lw.cache.pool.Drop()
	slices.SortFunc(gone, func(a, b *pagepool.Entry[[]int]) int { return a.Unit - b.Unit })
	for _, e := range gone {
		lw.cacheEvict(e, "dropped before the update")
	}
}

// cacheCopy is parameter id's device copy for the current use (w under the cache).
func (lw *lowerer) cacheCopy(id params.ID) int {
	u := lw.unitOf(id)
	if !lw.cache.pinned[u] {
		panic(fmt.Sprintf("step: internal error: rank %d reads %s while %s is not in use", lw.p.Rank, id, lw.unitName(u)))
	}
	return lw.gathered[gatherKey{id, lw.phase, lw.micro}]
}

// CacheMoves sums the bytes a program moves between its tiers: the unified cache's
// fetches (under ZeRO 3 the device copies its all-gathers fill) and write-backs, and an
// offloaded optimizer's moves.
func CacheMoves(p *Program) (fetched, written int64) {
	for _, op := range p.Ops {
		if op.CacheFill {
			for _, b := range op.Out {
				fetched += p.Buffers[b].Bytes()
			}
			continue
		}
		switch op.Kind {
		case OpCacheFetch, OpToDevice:
			fetched += op.Bytes
		case OpCacheWriteback, OpToHost:
			written += op.Bytes
		}
	}
	return fetched, written
}

// cacheModel requests the embedding (roles of the stage's input) or the head (with the
// embedding when the head reads the tied table) for the forward.
func (lw *lowerer) cacheModel(roles []params.Role) {
	head := slices.Contains(roles, params.RoleHead)
	section := 0
	if head {
		section = lw.d.L + 1
	}
	var ids []params.ID
	for _, id := range lw.order {
		if id.Layer >= 0 || !slices.Contains(roles, id.Role) || head && lw.unitOf(id) == 0 && !lw.m.TieEmbeddings {
			continue
		}
		ids = append(ids, id)
	}
	lw.cacheUseIDs(section, ids)
}

// cacheRemap points a backward op's parameter inputs at the device copies of the
// backward's use of their units (the forward's may have been evicted since).
func (lw *lowerer) cacheRemap(op *Op) {
	var ids []params.ID
	var at []int
	for i, x := range op.In {
		if id, ok := lw.paramOfBuf[x]; ok && lw.p.Buffers[x].Kind == KindGathered {
			ids, at = append(ids, id), append(at, i)
		}
	}
	if len(ids) == 0 {
		return
	}
	lw.cacheUseIDs(lw.unitOf(ids[0]), ids)
	for k, i := range at {
		op.In[i] = lw.cacheCopy(ids[k])
	}
}

// cacheSummary is the listing's line on the unified cache's moves.
func cacheSummary(p *Program) string {
	var fetches, evictions, writebacks int
	for _, op := range p.Ops {
		switch {
		case op.Kind == OpCacheFetch, op.CacheFill:
			fetches++
		case op.Kind == OpCacheEvict:
			evictions++
		case op.Kind == OpCacheWriteback:
			writebacks++
		}
	}
	fetched, written := CacheMoves(p)
	return fmt.Sprintf("# unified cache: %d fetches (%s to the device), %d evictions, %d write-backs (%s to the host)\n",
		fetches, human.Bytes(fetched), evictions, writebacks, human.Bytes(written))
}

// paramBytes is the bytes of parameter id's tensor on this rank (its tensor-parallel
// slice, whole even where ZeRO 3 keeps only a shard of it).
func (lw *lowerer) paramBytes(id params.ID) int64 {
	n := int64(lw.elem)
	for _, d := range lw.shapes[id] {
		n *= int64(d)
	}
	return n
}
