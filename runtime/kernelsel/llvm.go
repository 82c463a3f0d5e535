package kernelsel

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/moec-dev/moec/compiler/program"
	"github.com/moec-dev/moec/kernels"
	"github.com/moec-dev/moec/runtime/llvmrt"
	"github.com/moec-dev/moec/runtime/nn"
)

// LibraryName is the compiled library's file name inside a stage's llvm/ directory.
const LibraryName = "libmoe_kernels.so"

// LLVM runs a stage's compiled kernels. It implements nn.Kernels.
type LLVM struct {
	set     *llvmrt.Set
	sh      kernels.Shape
	workers int
}

var _ nn.Kernels = (*LLVM)(nil)

// Open loads the compiled library at path for model m (the stage's model). It fails,
// naming the cause, when the file is missing or was generated for other shapes.
func Open(path string, m *program.Model) (*LLVM, error) {
	sh, err := kernels.ShapeOf(m)
	if err != nil {
		return nil, fmt.Errorf("kernelsel: %w", err)
	}
	ks, err := kernels.Set(sh)
	if err != nil {
		return nil, fmt.Errorf("kernelsel: %w", err)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("kernelsel: no compiled kernels (moec build writes them when clang is installed): %w", err)
	}
	set, err := llvmrt.LoadSet(path, ks)
	if err != nil {
		return nil, fmt.Errorf("kernelsel: %w", err)
	}
	return &LLVM{set: set, sh: sh}, nil
}

// OpenStage loads stageDir/llvm/libmoe_kernels.so.
func OpenStage(stageDir string, m *program.Model) (*LLVM, error) {
	return Open(filepath.Join(stageDir, "llvm", LibraryName), m)
}

// Close unloads the library; the LLVM must not be used afterwards.
func (l *LLVM) Close() error { return l.set.Close() }

func (l *LLVM) checkRows(rows int) error {
	if rows <= 0 {
		return fmt.Errorf("kernelsel: %d rows", rows)
	}
	return nil
}

// RMSNorm runs rmsnorm_fwd (rows of d_model values).
func (l *LLVM) RMSNorm(out, rstd, x, w []float32, rows int) error {
	if len(w) != int(l.sh.DModel) {
		return fmt.Errorf("kernelsel: rmsnorm over %d values; the compiled kernel normalises d_model = %d", len(w), l.sh.DModel)
	}
	if err := l.checkRows(rows); err != nil {
		return err
	}
	env := kernels.Env{
		F: map[string][]float32{"norm_in": x, "norm_w": w, "norm_out": out, "norm_rstd": rstd},
		S: map[string]float64{"n": float64(rows)},
	}
	return l.set.Run("rmsnorm_fwd", env, l.workers)
}

// CrossEntropy runs xent_fwd (rows of padded-vocabulary logits).
func (l *LLVM) CrossEntropy(loss, lse, logits []float32, targets []int32, rows int) error {
	if err := l.checkTargets(targets, rows); err != nil {
		return err
	}
	env := kernels.Env{
		F: map[string][]float32{"ce_logits": logits, "ce_loss": loss, "ce_lse": lse},
		I: map[string][]int32{"targets": targets},
		S: map[string]float64{"n": float64(rows)},
	}
	return l.set.Run("xent_fwd", env, l.workers)
}

// CrossEntropyGrad runs xent_bwd.
func (l *LLVM) CrossEntropyGrad(dlogits, logits, lse []float32, targets []int32, rows int, scale float32) error {
	if err := l.checkTargets(targets, rows); err != nil {
		return err
	}
	env := kernels.Env{
		F: map[string][]float32{"ce_logits": logits, "ce_lse": lse, "d_ce_logits": dlogits},
		I: map[string][]int32{"targets": targets},
		S: map[string]float64{"n": float64(rows), "ce_scale": float64(scale)},
	}
	return l.set.Run("xent_bwd", env, l.workers)
}

// checkTargets keeps every target inside the compiled vocabulary: the kernel indexes the
// logits row with it, in C, without a bounds check.
func (l *LLVM) checkTargets(targets []int32, rows int) error {
	if err := l.checkRows(rows); err != nil {
		return err
	}
	if len(targets) < rows {
		return fmt.Errorf("kernelsel: %d targets for %d rows", len(targets), rows)
	}
	for i, t := range targets[:rows] {
		if t < 0 || int64(t) >= l.sh.Vocab {
			return fmt.Errorf("kernelsel: target %d of row %d is outside the vocabulary [0, %d)", t, i, l.sh.Vocab)
		}
	}
	return nil
}
