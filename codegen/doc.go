// Package codegen writes the generated kernels of one training stage.
//
// In: the stage's model (program.StageModel), the model and stage names, an output
// directory. Out: Emit writes cuda/ (kernels, host launchers, header, clang prelude)
// and llvm/moe_kernels.ll, compiles the LLVM kernels to an object and a shared library
// when clang is installed, and returns a Result saying what was written and compiled.
// Every file is written atomically and is deterministic byte for byte. Names from the
// .moe file reach generated code only through Ident. Result.Gaps lists the model's
// features the kernels do not honour or only approximate (the kernel columns of
// compiler/features), which the caller reports: the kernels never drop one silently.
//
// The kernels themselves are described once in package kernels and lowered by
// codegen/cuda and codegen/llvm; runtime/llvmrt loads the compiled library at run time.
package codegen
