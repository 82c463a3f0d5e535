package kernelsel

import (
	"fmt"

	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/optim"
)

// NewAdamW returns optim's AdamW over params with the per-element update in the library's
// compiled adamw kernel. Everything else is optim's, so the two cannot drift: the
// learning-rate schedule, the global gradient norm (float64, tensor order) and clipping,
// decoupled weight decay on matrices only, the update count, StepReduced for ZeRO shards,
// and the moments' State and LoadState. The kernel computes in float32 where the fused Go
// pass rounds its constants differently, so the weights agree with optim.NewAdamW's to a
// tolerance, not bit for bit. cfg is checked as optim checks it.
func (l *LLVM) NewAdamW(cfg optim.Config, params []optim.Param) (*optim.AdamW, error) {
	largest := 0
	for _, p := range params {
		largest = max(largest, len(p.G))
	}
	scratch := make([]float32, largest) // the scaled gradient of one tensor
	return optim.NewAdamWWith(cfg, params, func(p optim.Param, m, v []float32, u optim.Update) error {
		g := scratch[:len(p.G)]
		for j, x := range p.G {
			g[j] = float32(float64(x) * u.Scale)
		}
		bc1, bc2 := u.BiasCorrections()
		env := kernels.Env{
			F: map[string][]float32{"param": p.W, "grad": g, "adam_m": m, "adam_v": v},
			S: map[string]float64{"numel": float64(len(p.W)), "lr": u.LR, "beta1": u.Beta1, "beta2": u.Beta2,
				"eps": u.Eps, "wd": u.WeightDecay, "bc1": bc1, "bc2": bc2},
		}
		if err := l.set.Run("adamw", env, l.workers); err != nil {
			return fmt.Errorf("kernelsel: adamw kernel: %w", err)
		}
		return nil
	})
}
