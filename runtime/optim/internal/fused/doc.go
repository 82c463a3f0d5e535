// Package fused holds AdamW's per-element update as one float32 pass: read a gradient,
// its two moments and the weight once, write the moments and the weight once. It is the
// hot loop of package optim (about a fifth of a training step's CPU time in the MoE
// benchmark when it was float64 scalar Go with a square root per element).
//
// In: float32 slices of equal length and the step's coefficients (Coeffs). Out: the
// weights and moments updated in place.
//
// With cgo on amd64 CPUs that have AVX2 the update runs as C with AVX2 intrinsics, eight
// lanes at a time (chosen at start-up by the CPU); otherwise, or built with -tags
// noopenblas, it runs as a Go loop. Both evaluate the same float32 operations in the same
// order, each rounded once (the C is compiled without contraction into fused
// multiply-adds, and the Go converts every product explicitly), so the two give
// bit-identical results and a run does not depend on which one a machine takes.
package fused
