// Package vec holds all of moec's CPU vector C for runtime/nn and runtime/exec, with one
// CPU-feature detection: the float32 kernels Go cannot vectorise and the profiles showed to
// matter. For runtime/nn (the MoE benchmark, bench/cmd/moebench): SwiGLU's SiLU forward and
// backward, the product of a few rows with a weight matrix (generation, where sgemm's
// packing moves every weight through memory twice per token), e^x with the softmax and
// log-sum-exp built on it, attention's scores and weighted sums of cached values. For
// runtime/exec's kernels: the GELU and SiLU activations forward and backward (the GELU
// forward shared with runtime/nn), the causal softmax, its backward and the exponential
// sums of the cross-entropy, the expert combine, its backward and the permutation's
// backward, the norms' backward and the sum of squares. The norm forward (NormRows) is
// one kernel for both.
//
// In: float32 slices. Out: the results in place, and whether the kernel ran: with cgo on
// amd64 CPUs that have AVX2 and FMA it does (C with AVX2 intrinsics, chosen at start-up
// by the CPU); otherwise, or built with -tags noopenblas, every function declines and the
// caller keeps its Go loop, so both packages compute the same numbers (within rounding)
// everywhere. Keeping the C here leaves packages nn and exec themselves free of cgo.
package vec
