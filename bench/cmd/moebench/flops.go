package main

import "github.com/moec-dev/moec/compiler/program"

// trainFLOPsPerToken is the useful floating-point work of one training token: three times
// the forward (the backward computes the gradients of both operands of every product).
// The forward counts 2 per multiply-add of every matrix product a token takes part in:
// the Q/K/V/output projections, the router, the top_k chosen SwiGLU experts (gate, up,
// down), the head, and the causal attention's scores and weighted values, which on
// average see (T+1)/2 keys. Norms, softmaxes and activations are left out, as is the usual
// way to state achieved GFLOP/s against a GEMM peak.
func trainFLOPsPerToken(m *program.Model) float64 {
	return 3 * forwardFLOPsPerToken(m)
}

func forwardFLOPsPerToken(m *program.Model) float64 {
	d := float64(m.DModel)
	a := m.Attention
	qDim, kvDim := float64(a.Heads)*float64(a.HeadDim), float64(a.KVHeads)*float64(a.HeadDim)
	perLayer := d*qDim + 2*d*kvDim + qDim*d        // q, k, v, o
	perLayer += 2 * qDim * float64(m.SeqLen+1) / 2 // scores and weighted values over (T+1)/2 keys
	if moe := m.MoE; moe != nil {
		perLayer += d * float64(moe.Experts)                              // router
		perLayer += float64(moe.TopK) * 3 * d * float64(moe.ExpertHidden) // gate, up, down
	}
	return 2 * (float64(m.Layers)*perLayer + d*float64(m.PaddedVocab()))
}
