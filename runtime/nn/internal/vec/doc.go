// Package vec holds the few float32 kernels of runtime/nn that Go cannot vectorise and
// that the profile of the MoE benchmark (bench/cmd/moebench) showed to matter: SwiGLU's
// SiLU forward and backward (a fifth of a training step's CPU time as Go loops), the
// product of a few rows with a weight matrix (generation, where sgemm's packing moves
// every weight through memory twice per token), and e^x with the softmax and
// log-sum-exp built on it (attention and cross-entropy: a tenth of the inference forward
// as scalar Go), plus the weighted sum of cached values of generation's attention.
//
// In: float32 slices. Out: the results in place, and whether the kernel ran: with cgo on
// amd64 CPUs that have AVX2 and FMA it does (C with AVX2 intrinsics, chosen at start-up
// by the CPU); otherwise, or built with -tags noopenblas, every function declines and the
// caller keeps its Go loop, so package nn computes the same numbers (within rounding)
// everywhere. Keeping the C here leaves package nn itself free of cgo.
package vec
