// Package llvmrt runs compiled LLVM kernels from Go through cgo.
//
// In: a shared library linked from the .ll that codegen/llvm generates (codegen.Emit
// writes it when clang is installed) and the kernel descriptions of package kernels.
// Out: Library.Kernel(desc).Run(env, workers) calls moe_<name>_packed on env's buffers,
// splitting the grid into ranges across goroutines. The library is loaded with dlopen,
// so the Go binary does not need it at build time; the runtime switches from the Go
// reference kernels to these when a library is present.
package llvmrt
