package nn

import "github.com/moec-dev/moec/runtime/blas"

// SetBF16Products makes the products with the model's weight matrices (every linear
// layer and its two gradients, the experts', the router's and a tied or untied head's)
// multiply in bfloat16 with float32 sums (blas.GemmBF16): the float32 weights and
// activations are rounded to bfloat16 where a product reads them, and outputs and
// gradients stay float32, as the step programs' executor does under a train block's
// precision = bf16 (exec.Kernels.SetBF16Products). The attention core and the talking
// heads stay float32. Off (the default) the products are blas.Gemm's, bit for bit.
func (m *Model) SetBF16Products(on bool) {
	for _, t := range m.c.storage {
		t.bf16 = on && len(t.shape) == 2
	}
	for _, t := range m.c.params {
		t.bf16 = on && len(t.shape) == 2
	}
}

// weightGemm is blas.Gemm for a product with the weight w, in bfloat16 when w says so
// (float32 models only: a float64 model, the gradient checks', always multiplies in
// float64).
func weightGemm[F Float](w *tensor[F], transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	if w.bf16 {
		if a32, ok := any(a).([]float32); ok {
			blas.GemmBF16(transA, transB, m, n, k, float32(alpha), a32, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
			return
		}
	}
	blas.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
