package optim

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/runtime/optim/internal/fused"
	"github.com/moec-dev/moec/runtime/safetensors"
)

// Param is one tensor the optimizer updates. W and G alias the model's memory.
type Param struct {
	Name  string
	Shape []int
	W, G  []float32
}

// Config holds the optimizer's settings for one stage.
type Config struct {
	LR, MinLR   float64
	WeightDecay float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	Warmup      int64  // warmup steps (linear from LR/Warmup to LR)
	TotalSteps  int64  // steps of the stage; the schedule reaches MinLR at the last
	Schedule    string // "cosine", "linear" or "constant"
	ClipNorm    float64
}

// FromProgram returns the Config of a train block's optimizer for a stage of total steps;
// lr overrides the learning rate when non-zero (a stage's own lr), scaling MinLR with it.
func FromProgram(o program.Optimizer, lr float64, total int64) Config {
	c := Config{LR: o.LR, MinLR: o.MinLR, WeightDecay: o.WeightDecay, Beta1: o.Beta1, Beta2: o.Beta2,
		Eps: o.Eps, Warmup: o.Warmup, TotalSteps: total, Schedule: o.Schedule, ClipNorm: o.ClipNorm}
	if lr > 0 && o.LR > 0 {
		c.MinLR = o.MinLR * lr / o.LR
		c.LR = lr
	} else if lr > 0 {
		c.LR = lr
	}
	return c
}

func (c Config) validate() error {
	switch {
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("optim: learning rate %v must be positive", c.LR)
	case c.MinLR < 0 || c.MinLR > c.LR:
		return fmt.Errorf("optim: min_lr %v must be in [0, lr = %v]", c.MinLR, c.LR)
	case c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("optim: betas (%v, %v) must be in [0, 1)", c.Beta1, c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("optim: eps %v must be positive", c.Eps)
	case c.WeightDecay < 0 || c.ClipNorm < 0 || c.Warmup < 0:
		return fmt.Errorf("optim: weight_decay, clip and warmup must not be negative")
	}
	switch c.Schedule {
	case "", "cosine", "linear", "constant":
		return nil
	}
	return fmt.Errorf("optim: unknown schedule %q (want cosine, linear or constant)", c.Schedule)
}

// LRAt returns the learning rate of update number step (0-based).
func (c Config) LRAt(step int64) float64 {
	if c.Warmup > 0 && step < c.Warmup {
		return c.LR * float64(step+1) / float64(c.Warmup)
	}
	if c.Schedule == "constant" {
		return c.LR
	}
	span := c.TotalSteps - c.Warmup - 1
	if span <= 0 {
		return c.LR
	}
	p := math.Min(float64(step-c.Warmup)/float64(span), 1)
	if c.Schedule == "linear" {
		return c.LR + (c.MinLR-c.LR)*p
	}
	return c.MinLR + 0.5*(c.LR-c.MinLR)*(1+math.Cos(math.Pi*p))
}

// AdamW is the optimizer with its state.
type AdamW struct {
	cfg    Config
	params []Param
	m, v   [][]float32
	decay  []bool
	step   int64        // updates applied
	tensor TensorUpdate // nil: the fused float32 pass
}

// Update is the constants of one AdamW update of one tensor: everything but the tensor's
// weights, gradient and moments. The step's rules (schedule, global-norm clipping, which
// tensors decay, the update count) are decided once, by AdamW; a TensorUpdate only does
// the per-element arithmetic.
type Update struct {
	Scale        float64 // gradient multiplier: gradScale times the clipping factor
	LR           float64
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64 // decoupled; 0 for tensors that are not matrices
	Step         int64   // the update's number, 1-based (bias corrections use it)
}

// BiasCorrections are the moments' bias corrections 1−β1^t and 1−β2^t.
func (u Update) BiasCorrections() (bc1, bc2 float64) {
	return 1 - math.Pow(u.Beta1, float64(u.Step)), 1 - math.Pow(u.Beta2, float64(u.Step))
}

// TensorUpdate applies one AdamW update to the parameter p (its weights p.W in place, from
// its raw gradient p.G) with the moments m and v:
//
//	g = p.G·Scale;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	p.W −= LR·WeightDecay·p.W + (LR/bc1)·m / (√(v/bc2) + Eps)
//
// AdamW calls it once per non-empty tensor, in order, from one goroutine.
type TensorUpdate func(p Param, m, v []float32, u Update) error

// NewAdamW returns an optimizer over params with zero moments, updating with the fused
// float32 pass.
func NewAdamW(cfg Config, params []Param) (*AdamW, error) {
	return NewAdamWWith(cfg, params, nil)
}

// NewAdamWWith is NewAdamW with the per-element arithmetic in update (runtime/kernelsel
// passes the compiled adamw kernel); everything else, the norm, clipping, schedule, decay
// rule, state and its checkpoint, is this optimizer's. A nil update is NewAdamW.
func NewAdamWWith(cfg Config, params []Param, update TensorUpdate) (*AdamW, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := &AdamW{cfg: cfg, params: params, tensor: update}
	for _, p := range params {
		if len(p.W) != len(p.G) {
			return nil, fmt.Errorf("optim: %s has %d weights but %d gradients", p.Name, len(p.W), len(p.G))
		}
		o.m = append(o.m, make([]float32, len(p.W)))
		o.v = append(o.v, make([]float32, len(p.W)))
		o.decay = append(o.decay, len(p.Shape) >= 2)
	}
	return o, nil
}

// NewAdamWOver is NewAdamW keeping its moments in m and v (one slice per parameter, each
// as long as its weights), which it zeroes, instead of its own memory: a caller that plans
// memory (runtime/exec places them in a rank's arena) owns them, and no second pair of
// moments is ever allocated (NewAdamW followed by UseMoments allocates one, twice the
// model's size, only to drop it).
func NewAdamWOver(cfg Config, params []Param, m, v [][]float32) (*AdamW, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(m) != len(params) || len(v) != len(params) {
		return nil, fmt.Errorf("optim: %d and %d moment slices for %d parameters", len(m), len(v), len(params))
	}
	o := &AdamW{cfg: cfg, params: params}
	for i, p := range params {
		if len(p.W) != len(p.G) {
			return nil, fmt.Errorf("optim: %s has %d weights but %d gradients", p.Name, len(p.W), len(p.G))
		}
		if len(m[i]) != len(p.W) || len(v[i]) != len(p.W) {
			return nil, fmt.Errorf("optim: moments of %s hold %d and %d values, the weights %d", p.Name, len(m[i]), len(v[i]), len(p.W))
		}
		clear(m[i])
		clear(v[i])
		o.decay = append(o.decay, len(p.Shape) >= 2)
	}
	o.m, o.v = m, v
	return o, nil
}

// UseMoments makes the optimizer keep its moments in m and v (one slice per parameter,
// each as long as its weights) instead of its own memory: a caller that plans memory
// (runtime/exec places them in a rank's arena) owns them. The current moments are copied
// over.
func (o *AdamW) UseMoments(m, v [][]float32) error {
	if len(m) != len(o.params) || len(v) != len(o.params) {
		return fmt.Errorf("optim: %d and %d moment slices for %d parameters", len(m), len(v), len(o.params))
	}
	for i, p := range o.params {
		if len(m[i]) != len(p.W) || len(v[i]) != len(p.W) {
			return fmt.Errorf("optim: moments of %s hold %d and %d values, the weights %d", p.Name, len(m[i]), len(v[i]), len(p.W))
		}
	}
	for i := range o.params {
		copy(m[i], o.m[i])
		copy(v[i], o.v[i])
		o.m[i], o.v[i] = m[i], v[i]
	}
	return nil
}

// StepCount is the number of updates applied.
func (o *AdamW) StepCount() int64 { return o.step }

// Config returns the optimizer's settings.
func (o *AdamW) Config() Config { return o.cfg }

// StepInfo reports one update.
type StepInfo struct {
	LR       float64
	GradNorm float64 // global L2 norm of the (scaled) gradient before clipping
	Clipped  bool
}

// Step scales the gradients by gradScale (1/micro-batches turns accumulated sums into
// means), clips them to the global norm ClipNorm, and applies one AdamW update. A
// non-finite gradient norm is an error and leaves weights and state untouched. An error of
// a TensorUpdate (NewAdamWWith) is returned after the update is counted.
func (o *AdamW) Step(gradScale float64) (StepInfo, error) {
	return o.StepReduced(gradScale, nil)
}

// StepReduced is Step for an optimizer that holds one shard of a model's parameters (ZeRO):
// the sum of squares of this shard's scaled gradients goes through reduce, which returns
// the sum over all shards, so every rank measures and clips by the same global norm.
// A nil reduce is the identity, which makes StepReduced(s, nil) exactly Step(s). An error
// from reduce is returned wrapped and leaves weights and state untouched.
func (o *AdamW) StepReduced(gradScale float64, reduce func(localSumSquares float64) (float64, error)) (StepInfo, error) {
	return o.apply(o.measure(gradScale, reduce))
}

// StepGlobal is StepReduced for a caller that has already summed the squares of the
// scaled gradients over every shard (a step program's grad_norm op and its reductions):
// sumSquares is that sum, and the optimizer makes no pass of its own over the gradients.
func (o *AdamW) StepGlobal(gradScale, sumSquares float64) (StepInfo, error) {
	return o.apply(o.settle(gradScale, sumSquares))
}

// apply counts and applies the update a measure or settle decided on (nothing after an
// error: weights and state stay as they are).
func (o *AdamW) apply(info StepInfo, scale float64, err error) (StepInfo, error) {
	if err != nil {
		return info, err
	}
	o.step++
	if o.tensor != nil {
		return info, o.updateEach(info.LR, scale)
	}
	o.update(info.LR, scale)
	return info, nil
}

// measure is a step's global gradient norm, learning rate and gradient multiplier
// (gradScale and clipping together), from the gradients as they are now.
func (o *AdamW) measure(gradScale float64, reduce func(localSumSquares float64) (float64, error)) (StepInfo, float64, error) {
	// Per-tensor sums of squares run in parallel and are added in tensor order, so the
	// norm does not depend on how many workers there are.
	sqs := make([]float64, len(o.params))
	forEach(len(o.params), func(i int) {
		var sq float64
		for _, g := range o.params[i].G {
			x := float64(g) * gradScale
			sq += x * x
		}
		sqs[i] = sq
	})
	var sq float64
	for _, v := range sqs {
		sq += v
	}
	if reduce != nil {
		global, err := reduce(sq)
		if err != nil {
			return StepInfo{LR: o.cfg.LRAt(o.step)}, 0, fmt.Errorf("optim: reducing the gradient norm at step %d: %w", o.step, err)
		}
		sq = global
	}
	return o.settle(gradScale, sq)
}

// settle is measure from the global sum of squares of the scaled gradients.
func (o *AdamW) settle(gradScale, sq float64) (StepInfo, float64, error) {
	norm := math.Sqrt(sq)
	info := StepInfo{LR: o.cfg.LRAt(o.step), GradNorm: norm}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return info, 0, &NonFiniteError{Norm: norm, Step: o.step}
	}
	scale := gradScale
	if o.cfg.ClipNorm > 0 && norm > o.cfg.ClipNorm {
		scale *= o.cfg.ClipNorm / norm
		info.Clipped = true
	}
	return info, scale, nil
}

// updateEach applies the update through the TensorUpdate, one tensor at a time.
func (o *AdamW) updateEach(lr, scale float64) error {
	var errs []error
	for i, p := range o.params {
		if len(p.W) == 0 {
			continue
		}
		u := Update{Scale: scale, LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, Step: o.step}
		if o.decay[i] {
			u.WeightDecay = o.cfg.WeightDecay
		}
		if err := o.tensor(p, o.m[i], o.v[i], u); err != nil {
			errs = append(errs, fmt.Errorf("optim: updating %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// update applies one AdamW update with the learning rate lr to gradients multiplied by
// scale (gradScale and clipping together); o.step already counts it. The arithmetic is
// float32 (package fused: the constants are computed in float64 and rounded once), and
// the work is cut into chunks of at most updateChunk elements so that two workers share
// a model whose parameters sit in a few large tensors evenly. Every element is updated
// on its own, so the chunking does not change any result.
func (o *AdamW) update(lr, scale float64) {
	u := Update{Scale: scale, LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps, Step: o.step}
	noDecay := fused.NewCoeffs(u.Scale, u.LR, u.Beta1, u.Beta2, u.Eps, 0, u.Step)
	decay := fused.NewCoeffs(u.Scale, u.LR, u.Beta1, u.Beta2, u.Eps, o.cfg.WeightDecay, u.Step)
	type chunk struct{ param, lo, hi int }
	var chunks []chunk
	for i, p := range o.params {
		for lo := 0; lo < len(p.W); lo += updateChunk {
			chunks = append(chunks, chunk{i, lo, min(lo+updateChunk, len(p.W))})
		}
	}
	forEach(len(chunks), func(k int) {
		ch := chunks[k]
		p, c := o.params[ch.param], noDecay
		if o.decay[ch.param] {
			c = decay
		}
		fused.Update(p.W[ch.lo:ch.hi], p.G[ch.lo:ch.hi], o.m[ch.param][ch.lo:ch.hi], o.v[ch.param][ch.lo:ch.hi], c)
	})
}

// updateChunk is the most elements one call of the update handles: large enough that the
// call and the scheduling cost nothing next to it (1 MiB of each of the four arrays),
// small enough to balance the workers.
const updateChunk = 1 << 18

// forEach calls f(0..n-1) on up to GOMAXPROCS goroutines. Each index is handled by exactly
// one call, so results written per index are the same whatever the scheduling.
func forEach(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// Moment tensor name suffixes, as PyTorch names AdamW's state.
const (
	ExpAvg   = ".exp_avg"
	ExpAvgSq = ".exp_avg_sq"
)

// State returns the moments as tensors named "<param>.exp_avg" and "<param>.exp_avg_sq".
// They alias the optimizer's memory; encode them before the next Step.
func (o *AdamW) State() []safetensors.Tensor {
	out := make([]safetensors.Tensor, 0, 2*len(o.params))
	for i, p := range o.params {
		out = append(out,
			safetensors.Tensor{Name: p.Name + ExpAvg, Shape: p.Shape, Data: o.m[i]},
			safetensors.Tensor{Name: p.Name + ExpAvgSq, Shape: p.Shape, Data: o.v[i]})
	}
	return out
}

// LoadState restores moments saved by State and the update count. Every parameter must
// have both moments with its shape; extra tensors are an error too, since they mean the
// state belongs to a different model.
func (o *AdamW) LoadState(ts []safetensors.Tensor, step int64) error {
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	for i, p := range o.params {
		for _, s := range []struct {
			suffix string
			dst    []float32
		}{{ExpAvg, o.m[i]}, {ExpAvgSq, o.v[i]}} {
			t, ok := byName[p.Name+s.suffix]
			if !ok {
				return fmt.Errorf("optimizer state has no %s%s", p.Name, s.suffix)
			}
			if !slices.Equal(t.Shape, p.Shape) {
				return fmt.Errorf("optimizer state %s%s has shape %v, parameter has %v", p.Name, s.suffix, t.Shape, p.Shape)
			}
			copy(s.dst, t.Data)
			delete(byName, p.Name+s.suffix)
		}
	}
	for name := range byName {
		return fmt.Errorf("optimizer state has %s, which matches no parameter", name)
	}
	if step < 0 {
		return fmt.Errorf("optimizer step %d is negative", step)
	}
	o.step = step
	return nil
}

// NonFiniteError is Step refusing a gradient whose norm is NaN or infinite (training has
// diverged); weights and state are left untouched.
type NonFiniteError struct {
	Norm float64
	Step int64
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("optim: gradient norm is %v at step %d", e.Norm, e.Step)
}
