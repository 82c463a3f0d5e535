package exec

import "github.com/moec-dev/moec/runtime/blas"

// product is a float32 matrix product with blas.Gemm's arguments: blas.Gemm, or
// blas.GemmBF16 (blas.GemmFP16) when a rank's weight products run in bfloat16 (half).
type product func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)

// SetBF16Products makes the rank's weight products (matmul and its two gradients, the
// grouped expert products and theirs) multiply in bfloat16 with float32 sums
// (blas.GemmBF16): the float32 weights and activations are rounded to bfloat16 where the
// product reads them, and every output stays float32 (a train block's precision = bf16).
// The attention core, the talking heads and everything else stay float32. Off (the
// default), the products are blas.Gemm's, bit for bit.
func (k *Kernels) SetBF16Products(on bool) {
	k.bf16 = on
	if on {
		k.fp16 = false
	}
}

// BF16Products reports whether SetBF16Products turned bfloat16 products on.
func (k *Kernels) BF16Products() bool { return k.bf16 }

// product is the rank's weight product.
func (k *Kernels) product() product {
	switch {
	case k.bf16:
		return blas.GemmBF16
	case k.fp16:
		return k.gemmFP16
	}
	return blas.Gemm[float32]
}

// SetBF16Products sets every rank's weight products in bfloat16 or float32
// (Kernels.SetBF16Products).
func (l *Local) SetBF16Products(on bool) {
	for _, r := range l.Ranks {
		r.SetBF16Products(on)
	}
}

// gemmFP16 is blas.GemmFP16 rounding into copies kept between products (fp16Bufs), so a
// step allocates them once, not at every product.
func (k *Kernels) gemmFP16(transA, transB bool, m, n, kk int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	buf, _ := k.fp16Bufs.Get().(*blas.FP16Buffers)
	if buf == nil {
		buf = new(blas.FP16Buffers)
	}
	blas.GemmFP16Into(buf, transA, transB, m, n, kk, alpha, a, lda, b, ldb, beta, c, ldc)
	k.fp16Bufs.Put(buf)
}
