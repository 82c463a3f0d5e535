package exec

import (
	"fmt"
	"sync"
	"time"

	"github.com/moec-dev/moec/compiler/params"
	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/compiler/step"
	"github.com/moec-dev/moec/runtime/optim"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Local runs every rank of a layout in this process, one goroutine per rank, over a
// shared-memory World. It moves whole tensors (a checkpoint's, in the single-rank layout)
// in and out of the ranks' slices and shards.
type Local struct {
	Progs []*step.Program
	Ranks []*Executor
	world *World
	m     *program.Model
	walk  []params.Param
	shape map[params.ID][]int
}

// NewLocal lowers m at l for the batch b and prepares an executor per rank.
func NewLocal(m *program.Model, b step.Batch, l step.Layout, timeout time.Duration) (*Local, error) {
	progs, err := step.Lower(m, b, l)
	if err != nil {
		return nil, err
	}
	walk, err := params.Walk(m)
	if err != nil {
		return nil, err
	}
	lc := &Local{Progs: progs, world: NewWorld(timeout), m: m, walk: walk, shape: map[params.ID][]int{}}
	for _, p := range walk {
		lc.shape[p.ID] = p.Shape
	}
	for r, p := range progs {
		ex, err := New(p, m, lc.world.Rank(r))
		if err != nil {
			return nil, err
		}
		lc.Ranks = append(lc.Ranks, ex)
	}
	return lc, nil
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
					errs[r] = fmt.Errorf("rank %d panicked: %v", r, p)
					lc.world.Fail(errs[r])
				}
			}()
			c, M := ex.p.Coord, ex.p.Batch.Micro
			if (c.DP+1)*M > len(micro) {
				errs[r] = fmt.Errorf("rank %d: %d micro-batches for %d replicas of %d", r, len(micro), ex.p.Layout.DP, M)
				lc.world.Fail(errs[r])
				return
			}
			stats[r], errs[r] = ex.Run(micro[c.DP*M:(c.DP+1)*M], o)
			if errs[r] != nil {
				lc.world.Fail(fmt.Errorf("rank %d failed: %w", r, errs[r]))
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
		if ex.p.Coord.TP != 0 {
			continue
		}
		out.CE += stats[r].CE
		out.Balance += stats[r].Balance
		out.ZLoss += stats[r].ZLoss
		out.Dropped += stats[r].Dropped
	}
	out.Loss = out.CE
	if moe := lc.m.MoE; moe != nil {
		out.Loss += moe.BalanceLoss*out.Balance + moe.ZLoss*out.ZLoss
	}
	out.GradNorm, out.LR = stats[0].GradNorm, stats[0].LR
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
// in the single-rank layout (names as the checkpoint stores them).
func (lc *Local) Tensors() (model, moments []safetensors.Tensor) {
	whole := map[params.ID][]float32{}
	m, v := map[params.ID][]float32{}, map[params.ID][]float32{}
	for _, p := range lc.walk {
		whole[p.ID] = make([]float32, p.Elements())
		m[p.ID] = make([]float32, p.Elements())
		v[p.ID] = make([]float32, p.Elements())
	}
	for _, ex := range lc.Ranks {
		for i, b := range ex.p.Buffers {
			if b.Kind != step.KindParam || b.Param == nil || ex.f32[i] == nil {
				continue
			}
			id := *b.Param
			shard := id.Shard
			id.Shard = params.Shard{}
			placeRange(whole[id], ex.f32[i], lc.shape[id], shard, 0, len(ex.f32[i]))
		}
		// ZeRO-3 parameters, and every rank's moments, come in pieces.
		var state []safetensors.Tensor
		if ex.opt != nil {
			state = ex.opt.State()
		}
		for k, pc := range ex.pieces {
			local := make([]float32, elements(pc.shape))
			if ex.p.Groups[groupIndex(ex.p, pc.id)].ZeRO == 3 {
				copy(local[pc.lo:pc.hi], ex.optParams[k].W)
				placeRange(whole[pc.id], local, lc.shape[pc.id], pc.shard, int(pc.lo), int(pc.hi))
			}
			if state != nil {
				copy(local[pc.lo:pc.hi], state[2*k].Data)
				placeRange(m[pc.id], local, lc.shape[pc.id], pc.shard, int(pc.lo), int(pc.hi))
				copy(local[pc.lo:pc.hi], state[2*k+1].Data)
				placeRange(v[pc.id], local, lc.shape[pc.id], pc.shard, int(pc.lo), int(pc.hi))
			}
		}
	}
	for _, p := range lc.walk {
		model = append(model, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: whole[p.ID]})
		if lc.Ranks[0].opt != nil {
			moments = append(moments,
				safetensors.Tensor{Name: p.Name + optim.ExpAvg, Shape: p.Shape, Data: m[p.ID]},
				safetensors.Tensor{Name: p.Name + optim.ExpAvgSq, Shape: p.Shape, Data: v[p.ID]})
		}
	}
	return model, moments
}

// LoadMoments sets every rank's AdamW moments from whole tensors (a checkpoint's) and its
// update count.
func (lc *Local) LoadMoments(ts []safetensors.Tensor, step int64) error {
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
