package main

import (
	"github.com/moec-dev/moec/compiler/analysis"
	"github.com/moec-dev/moec/compiler/program"
)

// trainFLOPsPerToken is the useful work of one training token as moec's own counter
// (compiler/analysis) states it: 2 per multiply-add of every matrix product a token takes
// part in (Q/K/V/output projections, router, the top_k chosen experts, head, and causal
// attention over (T+1)/2 keys on average), times three for forward plus backward. Norms,
// softmaxes and activations are left out, the usual way to state achieved GFLOP/s against
// a GEMM peak; so is AdamW.
func trainFLOPsPerToken(m *program.Model) float64 {
	return analysis.CountFLOPs(m, 0).TrainPerToken
}

// forwardFLOPsPerToken is the useful work of one inference-forward token, counted as
// trainFLOPsPerToken counts it.
func forwardFLOPsPerToken(m *program.Model) float64 {
	return analysis.CountFLOPs(m, 0).ForwardPerToken
}

// decodeBytesPerToken is the float32 weight bytes one batch-1 decoding token reads: every
// parameter it touches (attention, router, its top_k experts, norms, head) except the
// input lookups, of which it reads one row (compiler/analysis's ActiveNoInput). The KV
// cache's reads are left out (under 1% at the large size).
func decodeBytesPerToken(m *program.Model) float64 {
	return 4 * float64(analysis.Count(m).ActiveNoInput)
}
