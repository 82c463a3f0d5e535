// Package llvm lowers the kernel IR of package kernels to LLVM IR for the CPU, built with
// github.com/llir/llvm.
//
// In: a checked kernel set (kernels.Set). Out: Module returns the text of one .ll module
// (deterministic byte for byte, starting with Header) defining moe_<kernel> over a range
// of grid points, moe_<kernel>_packed with one uniform signature for cgo and
// moe_fingerprint; CompileObject and LinkShared run clang on it when clang is installed
// (FindClang says which one was found).
//
// The lowering is deliberately simple: every scalar lives in an entry-block alloca and
// clang -O3 promotes them to registers; floating-point arithmetic carries reassoc and
// contract so that Vector loops (dot products, norms, softmax sums) vectorise for the
// host CPU (with glibc's libmvec for exp on x86-64 Linux). Package llvmrt loads the
// compiled kernels into a Go process.
package llvm
