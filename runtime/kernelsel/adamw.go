package kernelsel

import (
	"errors"
	"fmt"
	"math"

	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/optim"
)

// AdamW is optim.AdamW's update with the per-element work in the compiled adamw kernel:
// the same learning-rate schedule, global-norm clipping and decoupled weight decay on
// matrices only, with the moments kept in float32 as optim keeps them. The gradient norm
// is taken in Go, in float64 and tensor order, exactly as optim takes it, so clipping
// decisions match; the update itself runs in float32 in the kernel where optim computes
// in float64, so the weights agree to a tolerance, not bit for bit.
type AdamW struct {
	lib     *LLVM
	cfg     optim.Config
	params  []optim.Param
	m, v    [][]float32
	decay   []bool
	scratch []float32 // the scaled gradient of one tensor
	step    int64
}

// NewAdamW returns an optimizer over params with zero moments whose updates run in the
// library's adamw kernel. cfg is checked as optim checks it.
func (l *LLVM) NewAdamW(cfg optim.Config, params []optim.Param) (*AdamW, error) {
	// optim owns the rules for a valid configuration; an empty parameter list keeps the
	// check from allocating moments.
	if _, err := optim.NewAdamW(cfg, nil); err != nil {
		return nil, err
	}
	o := &AdamW{lib: l, cfg: cfg, params: params}
	largest := 0
	for _, p := range params {
		if len(p.W) != len(p.G) {
			return nil, fmt.Errorf("kernelsel: %s has %d weights but %d gradients", p.Name, len(p.W), len(p.G))
		}
		o.m = append(o.m, make([]float32, len(p.W)))
		o.v = append(o.v, make([]float32, len(p.W)))
		o.decay = append(o.decay, len(p.Shape) >= 2)
		largest = max(largest, len(p.W))
	}
	o.scratch = make([]float32, largest)
	return o, nil
}

// StepCount is the number of updates applied.
func (o *AdamW) StepCount() int64 { return o.step }

// Step scales the gradients by gradScale, clips them to the global norm ClipNorm and
// applies one AdamW update, as optim.AdamW.Step does.
func (o *AdamW) Step(gradScale float64) (optim.StepInfo, error) {
	var sq float64
	for _, p := range o.params {
		var s float64
		for _, g := range p.G {
			x := float64(g) * gradScale
			s += x * x
		}
		sq += s
	}
	norm := math.Sqrt(sq)
	info := optim.StepInfo{LR: o.cfg.LRAt(o.step), GradNorm: norm}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return info, fmt.Errorf("kernelsel: gradient norm is %v at step %d", norm, o.step)
	}
	scale := gradScale
	if o.cfg.ClipNorm > 0 && norm > o.cfg.ClipNorm {
		scale *= o.cfg.ClipNorm / norm
		info.Clipped = true
	}
	o.step++
	bc1 := 1 - math.Pow(o.cfg.Beta1, float64(o.step))
	bc2 := 1 - math.Pow(o.cfg.Beta2, float64(o.step))
	var errs []error
	for i, p := range o.params {
		if len(p.W) == 0 {
			continue
		}
		g := o.scratch[:len(p.G)]
		for j, x := range p.G {
			g[j] = float32(float64(x) * scale)
		}
		wd := 0.0
		if o.decay[i] {
			wd = o.cfg.WeightDecay
		}
		env := kernels.Env{
			F: map[string][]float32{"param": p.W, "grad": g, "adam_m": o.m[i], "adam_v": o.v[i]},
			S: map[string]float64{"numel": float64(len(p.W)), "lr": info.LR, "beta1": o.cfg.Beta1, "beta2": o.cfg.Beta2,
				"eps": o.cfg.Eps, "wd": wd, "bc1": bc1, "bc2": bc2},
		}
		if err := o.lib.set.Run("adamw", env, o.lib.workers); err != nil {
			errs = append(errs, fmt.Errorf("kernelsel: adamw on %s: %w", p.Name, err))
		}
	}
	return info, errors.Join(errs...)
}
