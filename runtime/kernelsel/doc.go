// Package kernelsel selects the kernels a training step runs: the runtime's Go kernels,
// or the LLVM kernels `moec build` compiled for the stage.
//
// In: the path of a compiled kernel library (<stage>/llvm/libmoe_kernels.so, written by
// codegen.Emit when clang is installed) and the stage's model. Out: an *LLVM that
// implements nn.Kernels by running the library's kernels through llvmrt (dlopen, cgo),
// after checking that the library was generated for exactly this model's shapes
// (kernels.Fingerprint). Pass it to nn.Model.BeginStepWith; the step then runs its
// pre-norm RMSNorms, cross-entropy and cross-entropy gradient in compiled code.
// LLVM.NewAdamW is optim.AdamW with the update in the compiled adamw kernel, and NewNet
// plugs a compiled-kernel model into train.Run (train.Options.NewNet).
//
// The choice is opt-in: without a library nothing changes. Compiled kernels compute in
// float32 where the Go kernels accumulate in float64, so the two agree to a stated
// tolerance (see the differential test), not bit for bit.
package kernelsel
