package exec

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/dist"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
	"github.com/moec-dev/moec/runtime/weights"
)

// Local runs the ranks of a layout that live in this process: every rank, one goroutine
// each, over a shared-memory World (NewLocal), or one rank whose peers run in other
// processes, over a dist.Comm (NewRankOf). It moves whole tensors (a checkpoint's, in the
// single-rank layout) in and out of the ranks' slices and shards.
type Local struct {
	Progs []*step.Program // every rank's program
	Ranks []*Executor     // the ranks of this process
	world *World          // the in-process ranks' (nil for one rank over a dist.Comm)
	// across is the world of a rank whose peers are other processes: steps and Tensors
	// reduce over it.
	across dist.Comm
	m      *program.Model
	walk   []params.Param
	shape  map[params.ID][]int
}

// NewLocal lowers m at l for the batch b and prepares an executor per rank.
func NewLocal(m *program.Model, b step.Batch, l step.Layout, timeout time.Duration) (*Local, error) {
	lc, err := lowerLocal(m, b, l)
	if err != nil {
		return nil, err
	}
	lc.world = NewWorld(timeout)
	for r, p := range lc.Progs {
		ex, err := New(p, m, lc.world.Rank(r))
		if err != nil {
			return nil, err
		}
		lc.Ranks = append(lc.Ranks, ex)
	}
	return lc, nil
}

// NewRankOf lowers m at l for the batch b and prepares world rank world.Rank()'s
// executor, its peers being the other processes of world (one rank each). Every rank of
// world must call it at the same time, and make every later call (Step, Tensors) together.
func NewRankOf(m *program.Model, b step.Batch, l step.Layout, world dist.Comm) (*Local, error) {
	lc, err := lowerLocal(m, b, l)
	if err != nil {
		return nil, err
	}
	if world.Size() != len(lc.Progs) {
		return nil, fmt.Errorf("exec: a layout of %d ranks (%s) on a world of %d", len(lc.Progs), l, world.Size())
	}
	lc.across = world
	ex, err := NewOver(lc.Progs[world.Rank()], m, world)
	if err != nil {
		return nil, err
	}
	lc.Ranks = []*Executor{ex}
	return lc, nil
}

// lowerLocal lowers m at l for the batch b: every rank's program and the model's
// parameter shapes, which both kinds of Local share.
func lowerLocal(m *program.Model, b step.Batch, l step.Layout) (*Local, error) {
	progs, err := step.Lower(m, b, l)
	if err != nil {
		return nil, err
	}
	walk, err := params.Walk(m)
	if err != nil {
		return nil, err
	}
	lc := &Local{Progs: progs, m: m, walk: walk, shape: map[params.ID][]int{}}
	for _, p := range walk {
		lc.shape[p.ID] = p.Shape
	}
	return lc, nil
}

// fail stops the other ranks after this process's rank r failed with err.
func (lc *Local) fail(err error) {
	if lc.world != nil {
		lc.world.Fail(err)
		return
	}
	var de *dist.Error
	if !errors.As(err, &de) { // a failed collective has stopped the others already
		lc.across.Abort(err)
	}
}

// Load fills every rank from whole tensors by parameter name (a checkpoint's).
func (lc *Local) Load(ts []safetensors.Tensor) error {
	byName := map[string]safetensors.Tensor{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	byID := map[params.ID][]float32{}
	for _, p := range lc.walk {
		t, ok := byName[p.Name]
		if !ok {
			return fmt.Errorf("exec: no tensor %s", p.Name)
		}
		if int64(len(t.Data)) != p.Elements() {
			return fmt.Errorf("exec: tensor %s has %d values, the model's %d", p.Name, len(t.Data), p.Elements())
		}
		byID[p.ID] = t.Data
	}
	for _, ex := range lc.Ranks {
		if err := ex.LoadParams(func(id params.ID) ([]float32, []int) { return byID[id], lc.shape[id] }); err != nil {
			return err
		}
	}
	return nil
}

// LoadInitial fills every rank with the model's fresh initialisation for seed, the values
// weights.Initial draws (train.InitialWeights, runtime/nn's New), one tensor at a time:
// each is drawn into one reused scratch slice and sliced into the arenas, so the process
// never holds a second copy of the model beside them, as Load of weights.Initial's
// tensors would.
func (lc *Local) LoadInitial(seed int64) error {
	d, err := lc.m.Dims()
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	index := make(map[params.ID]int, len(lc.walk))
	for i, p := range lc.walk {
		index[p.ID] = i
	}
	var scratch []float32
	drawn := -1 // the walk index scratch holds
	get := func(id params.ID) ([]float32, []int) {
		i, ok := index[id]
		if !ok {
			return nil, nil
		}
		p := lc.walk[i]
		if drawn != i {
			w := grow(&scratch, int(p.Elements()))
			clear(w)
			weights.Fill(w, p.Shape, weights.InitOf(p.ID), seed, i, d.L)
			drawn = i
		}
		return scratch, p.Shape
	}
	for _, ex := range lc.Ranks {
		if err := ex.LoadParams(get); err != nil {
			return err
		}
	}
	return nil
}

// SetHostOverlap turns the unified cache's asynchronous host update on or off on every
// rank (SetOptimizer first) and reports whether it applies (Executor.SetHostOverlap).
func (lc *Local) SetHostOverlap(on bool) (bool, error) {
	applies := len(lc.Ranks) > 0
	for _, ex := range lc.Ranks {
		ok, err := ex.SetHostOverlap(on)
		if err != nil {
			return false, err
		}
		applies = applies && ok
	}
	if on && !applies { // every rank or none
		for _, ex := range lc.Ranks {
			if _, err := ex.SetHostOverlap(false); err != nil {
				return false, err
			}
		}
	}
	return applies, nil
}

// Settle waits for every rank's pending asynchronous host update to land (Executor.Settle).
func (lc *Local) Settle() error {
	var errs []error
	for _, ex := range lc.Ranks {
		errs = append(errs, ex.Settle())
	}
	return errors.Join(errs...)
}

// SetOptimizer gives every rank the optimizer.
func (lc *Local) SetOptimizer(cfg optim.Config) error {
	for _, ex := range lc.Ranks {
		if err := ex.SetOptimizer(cfg); err != nil {
			return err
		}
	}
	return nil
}

// Step runs one step on every rank: micro holds every replica's micro-batches in turn
// (replica r takes micro[r·M:(r+1)·M]). The stats are the step's.
func (lc *Local) Step(micro [][]int32, o Options) (Stats, error) {
	stats := make([]Stats, len(lc.Ranks))
	errs := make([]error, len(lc.Ranks))
	var wg sync.WaitGroup
	for r, ex := range lc.Ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[r] = fmt.Errorf("rank %d panicked: %v", ex.p.Rank, p)
					lc.fail(errs[r])
				}
			}()
			c, M := ex.p.Coord, ex.p.Batch.Micro
			if (c.DP+1)*M > len(micro) {
				errs[r] = fmt.Errorf("rank %d: %d micro-batches for %d replicas of %d", ex.p.Rank, len(micro), ex.p.Layout.DP, M)
				lc.fail(errs[r])
				return
			}
			stats[r], errs[r] = ex.Run(micro[c.DP*M:(c.DP+1)*M], o)
			if errs[r] != nil {
				lc.fail(fmt.Errorf("rank %d failed: %w", ex.p.Rank, errs[r]))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Stats{}, err
		}
	}
	var out Stats
	for r, ex := range lc.Ranks {
		out.CacheMoved += stats[r].CacheMoved
		out.DeferredUnits += stats[r].DeferredUnits
		out.UpdateWaits += stats[r].UpdateWaits
		out.UpdateWaitSeconds += stats[r].UpdateWaitSeconds
		if ex.p.Coord.TP != 0 {
			continue
		}
		out.CE += stats[r].CE
		out.Balance += stats[r].Balance
		out.ZLoss += stats[r].ZLoss
		out.Dropped += stats[r].Dropped
		out.Distill += stats[r].Distill
	}
	if lc.across != nil {
		v := []float64{out.CE, out.Balance, out.ZLoss, float64(out.Dropped), out.Distill}
		if err := lc.across.AllReduceF64(v); err != nil {
			return Stats{}, fmt.Errorf("exec: summing the step's loss over the ranks: %w", err)
		}
		out.CE, out.Balance, out.ZLoss, out.Dropped, out.Distill = v[0], v[1], v[2], int(v[3]), v[4]
	}
	out.Loss = distilledLoss(lc.Ranks[0].p.Layout.Distill, out.CE, out.Distill)
	if moe := lc.m.MoE; moe != nil {
		out.Loss += moe.BalanceLoss*out.Balance + moe.ZLoss*out.ZLoss
	}
	out.GradNorm, out.LR, out.Skipped = stats[0].GradNorm, stats[0].LR, stats[0].Skipped
	return out, nil
}

// OptStep is the number of updates applied.
func (lc *Local) OptStep() int64 {
	if o := lc.Ranks[0].opt; o != nil {
		return o.StepCount()
	}
	return 0
}

// Tensors assembles the whole model, and the AdamW moments when there is an optimizer,
// in the single-rank layout (names as the checkpoint stores them). Over a dist.Comm
// (NewRankOf) it is collective: every rank calls it, and rank 0 gets the tensors, the
// others nil.
func (lc *Local) Tensors() (model, moments []safetensors.Tensor, err error) {
	if err := lc.Settle(); err != nil {
		return nil, nil, err
	}
	zeros := func() map[params.ID][]float32 {
		out := map[params.ID][]float32{}
		for _, p := range lc.walk {
			out[p.ID] = make([]float32, p.Elements())
		}
		return out
	}
	withOpt := lc.Ranks[0].opt != nil
	whole, m, v := zeros(), zeros(), zeros()
	var cover *coverage
	if lc.across != nil {
		cover = &coverage{model: zeros(), moments: zeros()}
	}
	for _, ex := range lc.Ranks {
		lc.place(ex, whole, m, v, cover)
	}
	if lc.across != nil {
		if err := lc.combine(cover, withOpt, whole, m, v); err != nil {
			return nil, nil, err
		}
		if lc.across.Rank() != 0 {
			return nil, nil, nil
		}
	}
	for _, p := range lc.walk {
		model = append(model, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: whole[p.ID]})
		if withOpt {
			moments = append(moments,
				safetensors.Tensor{Name: p.Name + optim.ExpAvg, Shape: p.Shape, Data: m[p.ID]},
				safetensors.Tensor{Name: p.Name + optim.ExpAvgSq, Shape: p.Shape, Data: v[p.ID]})
		}
	}
	return model, moments, nil
}

// coverage counts, per element of the whole tensors, how many of the ranks wrote it: the
// replicas of a parameter (data- and tensor-parallel copies) write the same values.
type coverage struct {
	model, moments map[params.ID][]float32
	ones           []float32
}

// mark counts elements [lo, hi) of slice s of a tensor as written.
func (c *coverage) mark(count []float32, shape []int, s params.Shard, lo, hi int) {
	if c == nil {
		return
	}
	for len(c.ones) < hi {
		c.ones = append(c.ones, 1)
	}
	placeRange(count, c.ones, shape, s, lo, hi)
}

// place writes what ex holds into the whole tensors: its parameters and slices (later
// ranks overwrite the same values), its ZeRO-3 pieces and its moments.
func (lc *Local) place(ex *Executor, whole, m, v map[params.ID][]float32, cover *coverage) {
	for i, b := range ex.p.Buffers {
		if b.Kind != step.KindParam || b.Param == nil || ex.f32[i] == nil {
			continue
		}
		id := *b.Param
		shard := id.Shard
		id.Shard = params.Shard{}
		placeRange(whole[id], ex.weights(i), lc.shape[id], shard, 0, len(ex.f32[i]))
		if cover != nil {
			cover.mark(cover.model[id], lc.shape[id], shard, 0, len(ex.f32[i]))
		}
	}
	// ZeRO-3 parameters, and every rank's moments, come in pieces.
	var state []safetensors.Tensor
	if ex.opt != nil {
		state = ex.opt.State()
	}
	for k, pc := range ex.pieces {
		local := make([]float32, elements(pc.shape))
		lo, hi := int(pc.lo), int(pc.hi)
		if ex.p.Groups[groupIndex(ex.p, pc.id)].ZeRO == 3 {
			copy(local[lo:hi], ex.pieceWeights(k))
			placeRange(whole[pc.id], local, lc.shape[pc.id], pc.shard, lo, hi)
			if cover != nil {
				cover.mark(cover.model[pc.id], lc.shape[pc.id], pc.shard, lo, hi)
			}
		}
		if state != nil {
			copy(local[lo:hi], state[2*k].Data)
			placeRange(m[pc.id], local, lc.shape[pc.id], pc.shard, lo, hi)
			copy(local[lo:hi], state[2*k+1].Data)
			placeRange(v[pc.id], local, lc.shape[pc.id], pc.shard, lo, hi)
			if cover != nil {
				cover.mark(cover.moments[pc.id], lc.shape[pc.id], pc.shard, lo, hi)
			}
		}
	}
}

// combine sums every rank's placed tensors and coverage over the world, a tensor at a
// time, in float64 so that a sum of equal replicas divided by their count is exact, and
// leaves the whole tensors on every rank. An element no rank wrote is an error.
func (lc *Local) combine(cover *coverage, withOpt bool, whole, m, v map[params.ID][]float32) error {
	type field struct {
		vals, count map[params.ID][]float32
		what        string
	}
	fields := []field{{whole, cover.model, "parameter"}}
	if withOpt {
		fields = append(fields, field{m, cover.moments, "first moment"}, field{v, cover.moments, "second moment"})
	}
	var buf []float64
	for _, p := range lc.walk {
		n := int(p.Elements())
		buf = grow(&buf, 2*n*len(fields))
		for i, f := range fields {
			sums, counts := buf[2*i*n:(2*i+1)*n], buf[(2*i+1)*n:(2*i+2)*n]
			for k, x := range f.vals[p.ID] {
				sums[k], counts[k] = float64(x), float64(f.count[p.ID][k])
			}
		}
		if err := lc.across.AllReduceF64(buf); err != nil {
			return fmt.Errorf("exec: assembling %s: %w", p.Name, err)
		}
		for i, f := range fields {
			sums, counts := buf[2*i*n:(2*i+1)*n], buf[(2*i+1)*n:(2*i+2)*n]
			dst := f.vals[p.ID]
			for k := range dst {
				if counts[k] == 0 {
					return fmt.Errorf("exec: no rank holds element %d of %s's %s", k, p.Name, f.what)
				}
				dst[k] = float32(sums[k] / counts[k])
			}
		}
	}
	return nil
}

// LoadMoments sets every rank's AdamW moments from whole tensors (a checkpoint's) and its
// update count.
func (lc *Local) LoadMoments(ts []safetensors.Tensor, step int64) error {
	if err := lc.Settle(); err != nil {
		return err
	}
	byName := map[string][]float32{}
	for _, t := range ts {
		byName[t.Name] = t.Data
	}
	name := map[params.ID]string{}
	for _, p := range lc.walk {
		name[p.ID] = p.Name
	}
	for _, ex := range lc.Ranks {
		if ex.opt == nil {
			return fmt.Errorf("exec: moments without an optimizer")
		}
		var state []safetensors.Tensor
		for k, pc := range ex.pieces {
			for _, suffix := range []string{optim.ExpAvg, optim.ExpAvgSq} {
				whole, ok := byName[name[pc.id]+suffix]
				if !ok {
					return fmt.Errorf("exec: optimizer state has no %s%s", name[pc.id], suffix)
				}
				local := make([]float32, elements(pc.shape))
				if err := slice(local, whole, lc.shape[pc.id], pc.shard); err != nil {
					return err
				}
				state = append(state, safetensors.Tensor{Name: ex.optParams[k].Name + suffix, Shape: pc.shape, Data: local[pc.lo:pc.hi]})
			}
		}
		if err := ex.opt.LoadState(state, step); err != nil {
			return fmt.Errorf("exec: rank %d: %w", ex.p.Rank, err)
		}
	}
	return nil
}

func groupIndex(p *step.Program, id params.ID) int {
	if id.Role.Routed() && len(p.Groups) > 1 {
		return 1
	}
	return 0
}

func elements(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// placeRange copies elements [lo, hi) of a tensor-parallel slice s (row-major over the
// slice's shape) to their places in the whole tensor of shape.
func placeRange(whole, part []float32, shape []int, s params.Shard, lo, hi int) {
	if s.Whole() {
		copy(whole[lo:hi], part[lo:hi])
		return
	}
	rows := shape[0]
	cols := 1
	if len(shape) > 1 {
		cols = shape[1]
	}
	if s.Dim == 0 {
		per := rows / s.Count
		off := s.Index * per * cols
		copy(whole[off+lo:off+hi], part[lo:hi])
		return
	}
	per := cols / s.Count
	for k := lo; k < hi; k++ {
		r, c := k/per, k%per
		whole[r*cols+s.Index*per+c] = part[k]
	}
}
