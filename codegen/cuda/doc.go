// Package cuda lowers the kernel IR of package kernels to CUDA C++.
//
// In: a checked kernel set (kernels.Set) and its Shape. Out: the text of
// moe_kernels.cu (Source: one __global__ function per kernel, shapes baked in as
// constants, one thread per grid point), moe_kernels.h (HeaderFile: shape macros and the
// host API), moe_host.cu (Host: one launcher per kernel) and the clang prelude that
// lets all of them compile to PTX without a CUDA SDK; Harness writes the host program
// of the GPU check. Device math uses NVVM builtins only (__nvvm_ex2_approx_f for exp,
// ...), so no libdevice or libm is needed. Vector loops are unrolled by four over
// 16-byte-aligned buffers so that the row accesses become ld.global.v4.f32.
package cuda
