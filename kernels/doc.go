// Package kernels describes every compute kernel moec generates, once.
//
// In: a Shape (the sizes of one stage's model, from program.StageModel via ShapeOf).
// Out: Set(shape) returns the kernels specialised to it. Each Kernel states its buffers
// and scalars (with sizes), its parallel iteration space (Grid) and the body run at every
// point, as a small typed IR: scalar locals, loads and stores, loops marked Serial or
// Vector, and expression trees over f32/i32/i64 with exp, log, sqrt, max, min and select.
// Grouped matrix products (the expert FFN, the router projection and their gradients)
// are described as a Contraction, from which the IR body is derived and which backends
// may lower as a tiled GEMM. Each kernel also carries a hand-written Go reference
// (Kernel.Ref), Interpret runs the IR itself, and Fingerprint identifies a set's
// interface so that compiled libraries cannot be bound to other shapes.
//
// codegen/cuda and codegen/llvm lower the same IR, so a new kernel is one description
// here, not a CUDA and an LLVM copy. Fixture builds consistent inputs for all kernels at
// once; tests and the GPU check compare every backend against the references on it.
package kernels
