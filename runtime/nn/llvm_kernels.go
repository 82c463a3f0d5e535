package nn

import "fmt"

// Kernels are compiled replacements for some of the runtime's Go kernels, used by a
// Schedule begun with BeginStepWith. runtime/kernelsel implements them with the LLVM
// kernels `moec build` compiles for a stage (codegen/llvm, loaded by llvmrt); nn itself
// stays free of cgo and of any library loading.
//
// The compiled kernels are specialised to one stage's shapes (d_model, padded vocabulary,
// norm epsilon are constants in them), so an implementation is bound to one model and
// reports an error for anything else rather than computing with the wrong sizes. They
// compute in float32 where the Go kernels accumulate in float64: a step with Kernels
// agrees with one without to about 1e-6 relative, not bit for bit.
type Kernels interface {
	// RMSNorm writes out = x·rstd·w and rstd = 1/sqrt(mean(x²)+eps) for rows rows of
	// d_model values.
	RMSNorm(out, rstd, x, w []float32, rows int) error
	// CrossEntropy writes each row's loss logsumexp(logits) − logits[target] and its
	// logsumexp, for rows rows of padded-vocabulary logits.
	CrossEntropy(loss, lse, logits []float32, targets []int32, rows int) error
	// CrossEntropyGrad writes dlogits = scale·(softmax(logits) − onehot(target)), given the
	// logsumexp CrossEntropy returned.
	CrossEntropyGrad(dlogits, logits, lse []float32, targets []int32, rows int, scale float32) error
}

// BeginStepWith is BeginStep with compiled kernels for the pre-norm RMSNorms (the
// sublayer inputs and the final norm) and the cross-entropy and its gradient. Norms the
// compiled set does not describe (LayerNorm, post and sandwich norms, qk_norm) keep
// their Go kernels. k == nil is BeginStep.
func (m *Model) BeginStepWith(b Batch, o StepOptions, k Kernels) (*Schedule, error) {
	s, err := m.BeginStep(b, o)
	if err != nil || k == nil {
		return s, err
	}
	s.k = k
	n := b.B * b.T
	s.kx = &kernelScratch{targets: make([]int32, n), loss: make([]float32, n), lse: make([]float32, n),
		dlogits: make([]float32, n*m.c.d.V)}
	for i := range s.kx.targets {
		s.kx.targets[i] = b.Tokens[(i/b.T)*(b.T+1)+i%b.T+1]
	}
	return s, nil
}

// kernelScratch holds what the compiled cross-entropy reads and writes besides the
// workspace: int32 targets, per-row losses and logsumexps, and the logits gradient
// (written apart from the logits, which it reads: the compiled kernels may assume their
// buffers do not alias).
type kernelScratch struct {
	targets   []int32
	loss, lse []float32
	dlogits   []float32
}

// kernelNorm runs a pre-norm RMSNorm with k when it can (float32, RMSNorm, no bias,
// d_model wide) and reports whether it did. It also fills x̂ = x·rstd, which the Go
// backward reads.
func kernelNorm[F Float](k Kernels, h, xhat, rstd, x []F, n, d int, w, b *tensor[F], ln bool) (bool, error) {
	if k == nil || w == nil || b != nil || ln {
		return false, nil
	}
	h32, ok1 := any(h).([]float32)
	xhat32, ok2 := any(xhat).([]float32)
	rstd32, ok3 := any(rstd).([]float32)
	x32, ok4 := any(x).([]float32)
	w32, ok5 := any(w.w).([]float32)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return false, nil
	}
	if err := k.RMSNorm(h32[:n*d], rstd32[:n], x32[:n*d], w32, n); err != nil {
		return true, fmt.Errorf("nn: compiled RMSNorm: %w", err)
	}
	parallel(n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			r := rstd32[i]
			for j, v := range x32[i*d : (i+1)*d] {
				xhat32[i*d+j] = v * r
			}
		}
	})
	return true, nil
}
