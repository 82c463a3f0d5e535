package train

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/internal/human"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/nn"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Sharding is how a sharded run places the model on its ranks: the plan's choice for them.
type Sharding struct {
	Ranks   int  // ranks of the run (in-process ranks unless a Comm is given)
	EP      int  // expert-parallel group size (1 = none); must divide Ranks and the experts
	ZeRO    int  // 0: replicated states; 1: optimizer states, 2: + gradients, 3: + parameters partitioned
	Offload bool // optimizer states (with fp32 gradient and weight copies) live in the host tier
	// Cache runs the unified cache: ZeRO-3 with offload, the partitioned states in the host
	// tier, and a device page pool of gathered units.
	Cache *CacheConfig
	// TP and PP are the tensor- and pipeline-parallel sizes (0 or 1: none); Ranks is then
	// dp × tp × pp. A layout with either, or with Program set, trains through step
	// programs (compiler/step executed by runtime/exec).
	TP, PP int
	// Program runs the layout through step programs even without tp or pp.
	Program bool
	// SP splits the tp ranks' norms, residual sums and router input by token (sequence
	// parallelism; needs TP > 1).
	SP bool
	// GradBucket is the bytes of each data-parallel gradient all-reduce bucket of the
	// step programs (the train block's zero(bucket = …); 0: step.DefaultGradBucket).
	GradBucket int64
}

// StepPrograms reports whether l trains through step programs.
func (l Sharding) StepPrograms() bool { return l.Program || l.TP > 1 || l.PP > 1 }

func (l Sharding) String() string {
	ranks := fmt.Sprintf("%d ranks", l.Ranks)
	if l.Ranks == 1 {
		ranks = "1 rank"
	}
	s := fmt.Sprintf("%s, ep %d, zero %d", ranks, max(l.EP, 1), l.ZeRO)
	if l.StepPrograms() {
		s = fmt.Sprintf("%s: dp %d × ep %d × tp %d × pp %d, zero %d, step programs", ranks, max(l.Ranks, 1)/(max(l.TP, 1)*max(l.PP, 1)), max(l.EP, 1), max(l.TP, 1), max(l.PP, 1), l.ZeRO)
		if l.SP && l.TP > 1 {
			s += ", sequence parallel"
		}
	}
	if l.Cache != nil {
		s += fmt.Sprintf(", unified cache of %s in %s pages (%s)", human.Bytes(l.Cache.Budget), human.Bytes(l.Cache.Page), l.Cache.Eviction)
	} else if l.Offload {
		s += ", optimizer offloaded to host"
	}
	return s
}

// part is one unit's dense or expert parameters on one rank, flat, with the rank's shard
// of them: a contiguous range of the flat vector padded to a multiple of the group size.
type part struct {
	unit   int
	expert bool
	comm   dist.Comm // the ranks that hold the same tensors: all ranks (dense) or the expert-data-parallel group
	n      int       // floats
	shard  int       // floats per rank after padding
	lo, hi int       // this rank's range, clipped to n
	w      []float32 // full weights (ZeRO < 3), else nil
	wShard []float32 // ZeRO 3: the rank's weights; else w[lo:hi]
	g      []float32 // full gradients (ZeRO < 2), else nil
	gShard []float32 // ZeRO ≥ 2: the rank's accumulated gradient shard
	host   []float32 // offload: fp32 master weights in the host tier
	hostG  []float32 // offload: the gradient shard copied to the host
	tmpW   []float32 // ZeRO 3: the gathered weights while the unit is in use
	tmpG   []float32 // ZeRO ≥ 2: the unit's gradients while its backward runs
	pad    []float32 // the rank's shard padded to the group's shard size (collective scratch)
}

// padded is the floats of the whole part once padded to a multiple of the group size.
func (p *part) padded() int { return p.shard * p.comm.Size() }

// gather all-gathers every rank's local shard of a part-shaped vector (at most p.shard
// floats) into dst (p.padded() floats).
func (p *part) gather(local, dst []float32) error {
	if p.pad == nil {
		p.pad = make([]float32, p.shard)
	}
	clear(p.pad[copy(p.pad, local):])
	return dist.AllGatherOf(p.comm, p.pad, dst)
}

// buffers keeps released temporary buffers by length, so the next unit of the same size
// reuses one instead of allocating: the meter counts what is in use, this keeps what the
// peak needed.
type buffers map[int][][]float32

func (b buffers) take(n int) []float32 {
	if l := b[n]; len(l) > 0 {
		buf := l[len(l)-1]
		b[n] = l[:len(l)-1]
		return buf
	}
	return make([]float32, n)
}

func (b buffers) give(buf []float32) {
	if buf != nil {
		b[len(buf)] = append(b[len(buf)], buf)
	}
}

// rank is one rank of a sharded run: its model, its shard of the states, and its meter.
type rank struct {
	layout  Sharding
	world   dist.Comm
	ep, edp dist.Comm
	model   *nn.Model
	units   []nn.Unit
	parts   [][]*part // per unit: dense and expert part (nil when empty)
	opt     *optim.AdamW
	pieces  []piece
	meter   *dist.Meter
	cache   *unitCache // nil unless the layout runs the unified cache
	spare   buffers    // released temporary buffers, by length
	tied    bool
	logits  int64 // bytes of the logits buffer already metered under Temp
}

// piece is the optimizer's view of one parameter's slice of a shard.
type piece struct {
	p      *part
	param  int // index into model.Params()
	lo, hi int // range within the part
}

// newRank builds rank world.Rank()'s model and states. world is the run's communicator.
func newRank(m *program.Model, seed int64, cfg optim.Config, world dist.Comm, l Sharding) (*rank, error) {
	if l.Cache != nil && l.Cache.Page <= 0 {
		c := *l.Cache
		c.Page = 4 << 20
		l.Cache = &c
	}
	r := &rank{layout: l, world: world, meter: &dist.Meter{}, tied: m.TieEmbeddings, spare: buffers{}}
	// The unified cache's backing store is the host: the partitioned weights and gradients
	// live there, and only cached pages and working buffers take device memory.
	stateTier := dist.Device
	if l.Cache != nil {
		var err error
		if r.cache, err = newUnitCache(*l.Cache); err != nil {
			return nil, err
		}
		stateTier = dist.Host
	}
	if err := r.joinGroups(); err != nil {
		return nil, err
	}
	sh := nn.Shard{World: world}
	if l.EP > 1 {
		sh.EP = r.ep
	}
	var err error
	if r.model, err = nn.NewSharded(m, seed, sh); err != nil {
		return nil, err
	}
	r.units = r.model.Units()
	for u := range r.units {
		r.parts = append(r.parts, []*part{r.newPart(u, false, stateTier), r.newPart(u, true, stateTier)})
		r.release(u, false)
	}
	if err := r.newOptimizer(cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// joinGroups checks the layout against the world and splits the expert-parallel groups
// (consecutive ranks) and the expert-data-parallel groups (the ranks holding the same
// experts: the same position in their groups).
func (r *rank) joinGroups() error {
	l, world := r.layout, r.world
	ep := max(l.EP, 1)
	if world.Size()%ep != 0 {
		return fmt.Errorf("train: expert-parallel size %d does not divide %d ranks", ep, world.Size())
	}
	if l.ZeRO < 0 || l.ZeRO > 3 {
		return fmt.Errorf("train: ZeRO stage %d is not 0..3", l.ZeRO)
	}
	me := world.Rank()
	var err error
	if r.ep, err = world.Split(me/ep, me%ep, "ep"); err != nil {
		return err
	}
	r.edp, err = world.Split(me%ep, me/ep, "edp")
	return err
}

// newPart is unit u's dense or expert part (nil when the unit has none), from the model's
// initial values: whole or sharded weights and gradients as the ZeRO stage says, in
// stateTier, with the host copies offload keeps.
func (r *rank) newPart(u int, expert bool, stateTier dist.Tier) *part {
	l, unit, params := r.layout, r.units[u], r.model.Params()
	n, comm := unit.DenseLen, r.world
	if expert {
		n, comm = unit.ExpertLen, r.edp
	}
	if n == 0 {
		return nil
	}
	p := &part{unit: u, expert: expert, comm: comm, n: n}
	p.shard = (n + comm.Size() - 1) / comm.Size()
	p.lo, p.hi = min(n, comm.Rank()*p.shard), min(n, (comm.Rank()+1)*p.shard)
	// Start from the model's initial values.
	full := make([]float32, n)
	for _, up := range unit.Params {
		if up.Expert == expert {
			copy(full[up.Offset:], params[up.Index].W)
		}
	}
	if l.ZeRO >= 3 {
		p.wShard = append([]float32(nil), full[p.lo:p.hi]...)
		r.meter.Alloc(stateTier, dist.Params, 4*int64(len(p.wShard)))
	} else {
		p.w = full
		p.wShard = full[p.lo:p.hi]
		r.meter.Alloc(dist.Device, dist.Params, 4*int64(n))
	}
	if l.ZeRO >= 2 {
		p.gShard = make([]float32, p.hi-p.lo)
		r.meter.Alloc(stateTier, dist.Grads, 4*int64(len(p.gShard)))
	} else {
		p.g = make([]float32, n)
		r.meter.Alloc(dist.Device, dist.Grads, 4*int64(n))
	}
	// Offload keeps fp32 master weights and gradients in the host tier, as ZeRO-Offload
	// does next to the device's working copy. Under the unified cache the shards already
	// live in the host tier and are updated in place.
	if l.Offload && l.Cache == nil {
		p.host = append([]float32(nil), full[p.lo:p.hi]...)
		p.hostG = make([]float32, p.hi-p.lo)
		r.meter.Alloc(dist.Host, dist.Params, 4*int64(len(p.host)))
		r.meter.Alloc(dist.Host, dist.Grads, 4*int64(len(p.hostG)))
	}
	return p
}

// newOptimizer makes the AdamW that updates the rank's shard (all of it without ZeRO): one
// piece per parameter that meets the shard, keeping the parameter's name and shape so
// weight decay and the checkpoint names follow the parameter; its moments are metered in
// the device tier, or the host's under offload.
func (r *rank) newOptimizer(cfg optim.Config) error {
	params := r.model.Params()
	var ops []optim.Param
	for u, unit := range r.units {
		for _, up := range unit.Params {
			p := r.parts[u][b2i(up.Expert)]
			n := len(params[up.Index].G)
			if n == 0 {
				n = elems(params[up.Index].Shape)
			}
			lo, hi := p.lo, p.hi
			if r.layout.ZeRO == 0 {
				lo, hi = 0, p.n
			}
			a, b := max(lo, up.Offset), min(hi, up.Offset+n)
			if a >= b {
				continue
			}
			w, g := r.optBuffers(p)
			base := lo
			r.pieces = append(r.pieces, piece{p: p, param: up.Index, lo: a, hi: b})
			ops = append(ops, optim.Param{Name: params[up.Index].Name, Shape: params[up.Index].Shape, W: w[a-base : b-base], G: g[a-base : b-base]})
		}
	}
	var err error
	if r.opt, err = optim.NewAdamW(cfg, ops); err != nil {
		return err
	}
	var moments int64
	for _, op := range ops {
		moments += 8 * int64(len(op.W))
	}
	tier := dist.Device
	if r.layout.Offload {
		tier = dist.Host
	}
	r.meter.Alloc(tier, dist.Optimizer, moments)
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func elems(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// optBuffers are the weights and gradients the optimizer updates for p: the host copies
// under offload, else the rank's shard (or, without ZeRO, the whole part).
func (r *rank) optBuffers(p *part) (w, g []float32) {
	switch {
	case r.layout.Cache != nil:
		return p.wShard, p.gShard
	case r.layout.Offload:
		if r.layout.ZeRO == 0 {
			panic("train: offload needs ZeRO ≥ 1") // refused by the caller's checks
		}
		return p.host, p.hostG
	case r.layout.ZeRO == 0:
		return p.w, p.g
	case r.layout.ZeRO >= 2:
		return p.wShard, p.gShard
	}
	return p.wShard, p.g[p.lo:p.hi]
}

// acquire makes unit u's weights (and, for backward, gradient buffers) usable: under
// ZeRO 3 the weights are all-gathered into a temporary buffer, under ZeRO ≥ 2 the
// gradients get a temporary full-size buffer until release reduce-scatters them.
func (r *rank) acquire(u int, grads bool) error {
	var bufs [2][2][]float32
	var hit *cached
	if r.cache != nil {
		hit = r.cache.Get(u)
	}
	for i, p := range r.parts[u] {
		if p == nil {
			continue
		}
		w, g := p.w, p.g
		if hit != nil {
			w = hit.Value[i][:p.n]
		} else if r.layout.ZeRO >= 3 {
			if p.tmpW == nil {
				p.tmpW = r.spare.take(p.padded())
				r.meter.Alloc(dist.Device, dist.Temp, 4*int64(len(p.tmpW)))
				if err := p.gather(p.wShard, p.tmpW); err != nil {
					return fmt.Errorf("train: gathering %s: %w", r.units[u].Name, err)
				}
			}
			w = p.tmpW[:p.n]
		}
		if r.layout.ZeRO >= 2 {
			g = nil
			if grads {
				if p.tmpG == nil {
					p.tmpG = r.spare.take(p.padded())
					clear(p.tmpG)
					r.meter.Alloc(dist.Device, dist.Temp, 4*int64(len(p.tmpG)))
				}
				g = p.tmpG[:p.n]
			}
		}
		bufs[i] = [2][]float32{w, g}
	}
	if r.cache != nil && hit == nil {
		r.cachePut(u)
	}
	r.model.Bind(u, bufs[0][0], bufs[0][1], bufs[1][0], bufs[1][1])
	return nil
}

// cachePut moves unit u's freshly gathered weights from temporary buffers into the device
// page pool, evicting what the policy says; a unit larger than the pool stays temporary.
func (r *rank) cachePut(u int) {
	var gathered [2][]float32
	var bytes int64
	for i, p := range r.parts[u] {
		if p != nil {
			gathered[i] = p.tmpW
			bytes += 4 * int64(len(p.tmpW))
		}
	}
	ok, evicted := r.cache.put(u, bytes, gathered)
	r.uncache(evicted)
	if !ok {
		return
	}
	r.meter.Alloc(dist.Device, dist.Params, r.cache.pagesFor(bytes)*r.cache.cfg.Page)
	for _, p := range r.parts[u] {
		if p != nil {
			r.meter.Free(dist.Device, dist.Temp, 4*int64(len(p.tmpW)))
			p.tmpW = nil // owned by the cache now
		}
	}
}

// uncache returns evicted or dropped units' pages to the meter and their buffers to the
// spares.
func (r *rank) uncache(gone []*cached) {
	for _, e := range gone {
		r.meter.Free(dist.Device, dist.Params, e.Pages*r.cache.cfg.Page)
		for _, b := range e.Value {
			r.spare.give(b)
		}
	}
}

// release ends unit u's use: under ZeRO ≥ 2 its gradients are reduce-scattered into the
// rank's shard, and temporary buffers are dropped (the tensors are unbound, so a stray
// use fails loudly).
func (r *rank) release(u int, grads bool) error {
	var bufs [2][2][]float32
	for i, p := range r.parts[u] {
		if p == nil {
			continue
		}
		if grads && p.tmpG != nil {
			if p.pad == nil {
				p.pad = make([]float32, p.shard)
			}
			if err := dist.ReduceScatterF32(p.comm, p.tmpG, p.pad); err != nil {
				return fmt.Errorf("train: reducing %s: %w", r.units[u].Name, err)
			}
			for j := range p.gShard {
				p.gShard[j] += p.pad[j]
			}
		}
		if p.tmpG != nil {
			r.meter.Free(dist.Device, dist.Temp, 4*int64(len(p.tmpG)))
			r.spare.give(p.tmpG)
			p.tmpG = nil
		}
		if p.tmpW != nil {
			r.meter.Free(dist.Device, dist.Temp, 4*int64(len(p.tmpW)))
			r.spare.give(p.tmpW)
			p.tmpW = nil
		}
		bufs[i] = [2][]float32{p.w, p.g}
	}
	if r.cache != nil {
		r.cache.Unpin(u)
	}
	r.model.Bind(u, bufs[0][0], bufs[0][1], bufs[1][0], bufs[1][1])
	return nil
}

// zeroGrad clears the rank's gradients before a step.
func (r *rank) zeroGrad() {
	for _, ps := range r.parts {
		for _, p := range ps {
			if p != nil {
				clear(p.g)
				clear(p.gShard)
			}
		}
	}
}

// forwardBackward runs one micro-batch unit by unit, so ZeRO can gather and release
// around each part of the schedule.
func (r *rank) forwardBackward(b nn.Batch, o nn.StepOptions) (nn.Stats, error) {
	last := len(r.units) - 1
	around := func(units []int, grads bool, f func() error) error {
		for _, u := range units {
			if err := r.acquire(u, grads); err != nil {
				return err
			}
		}
		err := f()
		for _, u := range units {
			if e := r.release(u, grads); e != nil && err == nil {
				err = e
			}
		}
		return err
	}
	head := []int{last}
	if r.tied {
		head = []int{last, 0}
	}
	var s *nn.Schedule
	var st nn.Stats
	err := around([]int{0}, false, func() (err error) { s, err = r.model.BeginStep(b, o); return err })
	for l := 0; err == nil && l < s.Layers(); l++ {
		err = around([]int{l + 1}, false, func() error { return s.LayerForward(l) })
	}
	if err == nil {
		err = around(head, false, func() (err error) { st, err = s.HeadForward(); return err })
	}
	if err == nil {
		err = around(head, true, s.HeadBackward)
	}
	for l := s.Layers() - 1; err == nil && l >= 0; l-- {
		err = around([]int{l + 1}, true, func() error { return s.LayerBackward(l) })
	}
	if err == nil {
		err = around([]int{0}, true, s.EmbedBackward)
	}
	if err == nil {
		r.setWorkspace(r.model.WorkspaceBytes())
	}
	return st, err
}

// setWorkspace records the activation, dispatch and logits buffers the model holds now.
// The logits are what the plan calls temporary buffers, with ZeRO's gathered units and
// gradient buffers (metered as they come and go).
func (r *rank) setWorkspace(act, disp, logits int64) {
	r.meter.Alloc(dist.Device, dist.Activations, act-r.meter.Current(dist.Device, dist.Activations))
	r.meter.Alloc(dist.Device, dist.Dispatch, disp-r.meter.Current(dist.Device, dist.Dispatch))
	r.meter.Alloc(dist.Device, dist.Temp, logits-r.logits)
	r.logits = logits
}

// update reduces the gradients, clips them by the global norm and applies AdamW to the
// rank's shard, then brings every rank's weights up to date.
func (r *rank) update(accum int) (optim.StepInfo, error) {
	R := r.world.Size()
	if r.layout.ZeRO < 2 {
		for _, ps := range r.parts {
			for _, p := range ps {
				if p != nil {
					if err := p.comm.AllReduceF32(p.g); err != nil {
						return optim.StepInfo{}, fmt.Errorf("train: gradient all-reduce: %w", err)
					}
				}
			}
		}
	}
	scale := 1 / float64(accum*R)
	// The global norm: every float counted once, by the rank whose shard holds it.
	var sq float64
	for _, ps := range r.parts {
		for _, p := range ps {
			if p == nil {
				continue
			}
			g := p.gShard
			if g == nil {
				g = p.g[p.lo:p.hi]
			}
			for _, v := range g {
				x := float64(v) * scale
				sq += x * x
			}
			if p.hostG != nil {
				copy(p.hostG, g)
			}
		}
	}
	reduce := func(float64) (float64, error) {
		v := []float64{sq}
		if err := r.world.AllReduceF64(v); err != nil {
			return 0, fmt.Errorf("train: gradient norm: %w", err)
		}
		return v[0], nil
	}
	info, err := r.opt.StepReduced(scale, reduce)
	if err != nil {
		return info, err
	}
	if r.cache != nil { // the cached pages hold the old weights
		r.uncache(r.cache.Drop())
	}
	for _, ps := range r.parts {
		for _, p := range ps {
			if p == nil {
				continue
			}
			if p.host != nil {
				copy(p.wShard, p.host)
			}
			if r.layout.ZeRO >= 1 && r.layout.ZeRO < 3 {
				full := r.spare.take(p.padded())
				err := p.gather(p.wShard, full)
				copy(p.w, full[:p.n])
				r.spare.give(full)
				if err != nil {
					return info, fmt.Errorf("train: weight all-gather: %w", err)
				}
			}
		}
	}
	return info, nil
}

// expertIndex matches the expert number in a parameter name.
var expertIndex = regexp.MustCompile(`\.experts\.(\d+)\.`)

// tensors assembles the whole model's weights and optimizer moments on world rank 0, in
// the single-rank checkpoint layout (every rank must call it; the others get nil). Each
// expert tensor comes from exactly one rank; a missing, duplicated or mis-shaped tensor
// is an error, never a checkpoint.
func (r *rank) tensors() (model, moments []safetensors.Tensor, err error) {
	params := r.model.Params()
	first, _ := r.model.ExpertRange()
	info, err := dist.AllGatherRows(r.world, []int64{int64(first), int64(r.edp.Rank())})
	if err != nil {
		return nil, nil, err
	}
	state := r.opt.State()
	var out, outM []safetensors.Tensor
	have := map[string]int{} // name → world rank that supplied it
	for u, unit := range r.units {
		for i, p := range r.parts[u] {
			if p == nil {
				continue
			}
			full := func(local []float32) ([]float32, error) { // the whole part from shards
				if r.layout.ZeRO == 0 && local != nil && len(local) == p.n {
					return local, nil
				}
				all := make([]float32, p.padded())
				if err := p.gather(local, all); err != nil {
					return nil, err
				}
				return all[:p.n], nil
			}
			w := p.w
			if w == nil {
				if w, err = full(p.wShard); err != nil {
					return nil, nil, err
				}
			}
			m, v := make([]float32, p.hi-p.lo), make([]float32, p.hi-p.lo)
			if r.layout.ZeRO == 0 {
				m, v = make([]float32, p.n), make([]float32, p.n)
			}
			base := p.lo
			if r.layout.ZeRO == 0 {
				base = 0
			}
			for k, pc := range r.pieces {
				if pc.p == p {
					copy(m[pc.lo-base:], state[2*k].Data)
					copy(v[pc.lo-base:], state[2*k+1].Data)
				}
			}
			if m, err = full(m); err != nil {
				return nil, nil, err
			}
			if v, err = full(v); err != nil {
				return nil, nil, err
			}
			// Dense parts are the same on every rank; expert parts differ by expert-parallel
			// rank and travel to rank 0 from every rank.
			blocks := [][3][]float32{{w, m, v}}
			owners := []int{r.world.Rank()}
			if i == 1 {
				blocks, owners = nil, nil
				for k, x := range [][]float32{w, m, v} {
					all := make([]float32, len(x)*r.world.Size())
					if err := dist.AllGatherOf(r.world, x, all); err != nil {
						return nil, nil, err
					}
					for q := 0; q < r.world.Size(); q++ {
						if k == 0 {
							blocks = append(blocks, [3][]float32{})
							owners = append(owners, q)
						}
						blocks[q][k] = all[q*len(x) : (q+1)*len(x)]
					}
				}
			}
			if r.world.Rank() != 0 {
				continue
			}
			for bi, blk := range blocks {
				q := owners[bi]
				if i == 1 && info[q][1] != 0 {
					continue // a replica of experts another rank already supplies
				}
				for _, up := range unit.Params {
					if up.Expert != (i == 1) {
						continue
					}
					prm := params[up.Index]
					name := prm.Name
					if i == 1 {
						name = expertIndex.ReplaceAllStringFunc(name, func(s string) string {
							e, _ := strconv.Atoi(s[len(".experts.") : len(s)-1])
							return fmt.Sprintf(".experts.%d.", e-first+int(info[q][0]))
						})
					}
					if prev, dup := have[name]; dup {
						return nil, nil, fmt.Errorf("train: tensor %s is supplied by ranks %d and %d", name, prev, q)
					}
					have[name] = q
					n := elems(prm.Shape)
					out = append(out, safetensors.Tensor{Name: name, Shape: prm.Shape, Data: append([]float32(nil), blk[0][up.Offset:up.Offset+n]...)})
					outM = append(outM,
						safetensors.Tensor{Name: name + optim.ExpAvg, Shape: prm.Shape, Data: append([]float32(nil), blk[1][up.Offset:up.Offset+n]...)},
						safetensors.Tensor{Name: name + optim.ExpAvgSq, Shape: prm.Shape, Data: append([]float32(nil), blk[2][up.Offset:up.Offset+n]...)})
				}
			}
		}
	}
	if r.world.Rank() != 0 {
		return nil, nil, nil
	}
	if err := checkManifest(r.model.Config(), out); err != nil {
		return nil, nil, err
	}
	return out, outM, nil
}

// checkManifest holds assembled tensors against the whole model's layout: every tensor
// exactly once, with its shape.
func checkManifest(m *program.Model, ts []safetensors.Tensor) error {
	want, err := nn.ParamList(m)
	if err != nil {
		return err
	}
	got := map[string]safetensors.Tensor{}
	for _, t := range ts {
		if _, dup := got[t.Name]; dup {
			return fmt.Errorf("train: checkpoint manifest: tensor %s appears twice", t.Name)
		}
		got[t.Name] = t
	}
	var errs []error
	for _, p := range want {
		t, ok := got[p.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("tensor %s (shape %v) is missing", p.Name, p.Shape))
		case !slices.Equal(t.Shape, p.Shape):
			errs = append(errs, fmt.Errorf("tensor %s has shape %v, the model expects %v", p.Name, t.Shape, p.Shape))
		}
		delete(got, p.Name)
	}
	for name := range got {
		errs = append(errs, fmt.Errorf("tensor %s is not part of the model", name))
	}
	if len(errs) > 0 {
		return fmt.Errorf("train: checkpoint manifest check failed: %w", errors.Join(errs...))
	}
	return nil
}

// load sets the rank's weights (and moments, when given) from single-rank-layout tensors:
// any layout's checkpoint loads into any other.
func (r *rank) load(model, moments []safetensors.Tensor, step int64) error {
	byName := map[string][]float32{}
	for _, t := range model {
		byName[t.Name] = t.Data
	}
	for _, t := range moments {
		byName[t.Name] = t.Data
	}
	params := r.model.Params()
	state := r.opt.State()
	for u, unit := range r.units {
		for i, p := range r.parts[u] {
			if p == nil {
				continue
			}
			w := make([]float32, p.n)
			for _, up := range unit.Params {
				if up.Expert != (i == 1) {
					continue
				}
				prm := params[up.Index]
				src, ok := byName[prm.Name]
				if !ok || len(src) != elems(prm.Shape) {
					return fmt.Errorf("train: checkpoint has no tensor %s of shape %v", prm.Name, prm.Shape)
				}
				copy(w[up.Offset:], src)
			}
			if p.w != nil {
				copy(p.w, w)
			} else {
				copy(p.wShard, w[p.lo:p.hi])
			}
			if p.host != nil {
				copy(p.host, w[p.lo:p.hi])
			}
		}
	}
	for k, pc := range r.pieces {
		name := params[pc.param].Name
		var off int
		for _, up := range r.units[pc.p.unit].Params {
			if up.Index == pc.param {
				off = up.Offset
			}
		}
		for j, suffix := range []string{optim.ExpAvg, optim.ExpAvgSq} {
			dst := state[2*k+j].Data
			if moments == nil {
				clear(dst)
				continue
			}
			src, ok := byName[name+suffix]
			if !ok {
				return fmt.Errorf("train: checkpoint has no optimizer state %s%s", name, suffix)
			}
			copy(dst, src[pc.lo-off:pc.hi-off])
		}
	}
	if moments == nil {
		step = 0
	}
	return r.opt.LoadState(state, step)
}

// ValidLayout checks a layout against a model before any rank starts.
func ValidLayout(m *program.Model, l Sharding) error {
	switch {
	case l.Ranks < 1:
		return fmt.Errorf("%d ranks: need at least one", l.Ranks)
	case l.StepPrograms():
		return validStepLayout(m, l)
	case m.MoE != nil && m.MoE.Experts > 0 && m.MoE.AuxFreeBias > 0:
		return fmt.Errorf("auxiliary-loss-free bias balancing (aux_free_bias) moves the routing bias by the whole step's expert loads, which the hand-written engine's ranks do not gather: train the layout through step programs (the default engine)")
	case l.EP < 1 || l.Ranks%l.EP != 0:
		return fmt.Errorf("expert-parallel size %d must divide the %d ranks", l.EP, l.Ranks)
	case l.EP > 1 && (m.MoE == nil || m.MoE.Experts%l.EP != 0):
		return fmt.Errorf("expert-parallel size %d must divide the model's experts", l.EP)
	case l.ZeRO < 0 || l.ZeRO > 3:
		return fmt.Errorf("ZeRO stage %d is not 0..3", l.ZeRO)
	case l.Cache != nil && (l.ZeRO != 3 || !l.Offload):
		return fmt.Errorf("the unified cache partitions every state (ZeRO 3) with the host as backing store (offload)")
	case l.Offload && l.ZeRO < 1:
		return fmt.Errorf("offloading optimizer states needs ZeRO stage 1 or more (the states are partitioned before they move)")
	}
	return nil
}
