// Package optim updates parameters from their gradients: AdamW with decoupled weight
// decay, global-norm gradient clipping and a warmup + cosine (or linear, or constant)
// learning-rate schedule.
//
// In: the parameters (weights and accumulated gradients, sharing the model's memory), the
// train block's optimizer settings and the number of steps the stage runs.
// Out: updated weights, the step's learning rate and gradient norm, and the optimizer
// state (first and second moments, step count) as named tensors for a checkpoint.
//
// Conventions: weight decay applies to tensors with two or more dimensions (projections,
// experts, routers, embeddings and the output head) and not to norm scales and biases.
// Gradient accumulation is the caller's: ForwardBackward over several micro-batches adds
// gradients, and Step's gradScale (1/micro-batches) turns the sum into the mean before
// the norm is measured, so clipping sees the same gradient however the batch was split.
// StepReduced is Step for one shard of a model (ZeRO): the shard's sum of squares goes
// through a caller's all-reduce before the norm, so every rank clips by the global norm.
//
// Arithmetic: the gradient norm is summed in float64, each tensor sequentially and the
// tensors in order; the update is one fused float32 pass per element (internal/fused: AVX2
// where the CPU has it, a Go loop with bit-identical results elsewhere), with the step's
// constants computed in float64 and rounded once. It differs from an update in float64 by
// a few float32 roundings per step. Elements are updated independently in chunks spread
// over GOMAXPROCS goroutines, so results are bit-identical from run to run and across core
// counts.
package optim
