// Package cuda lowers the kernel IR of package kernels to CUDA C++.
//
// In: a checked kernel set (kernels.Set) and its Shape. Out: the text of
// moe_kernels.cu (Source: one __global__ function per kernel, shapes baked in as
// constants), moe_kernels.h (HeaderFile: shape macros, device math helpers and the host
// API), moe_host.cu (Host: one launcher per kernel), the clang prelude that lets all of
// them compile to PTX without a CUDA SDK, and Harness, the host program of the GPU check.
//
// Element-wise and row-wise kernels run one thread per grid point; their Vector loops
// are unrolled by four over 16-byte-aligned buffers so that row accesses become
// ld.global.v4.f32. Kernels described as a kernels.Contraction (router projection and
// its gradients, the expert FFN GEMMs and their gradients) are lowered as tiled grouped
// GEMMs with shared-memory staging. Device math uses NVVM builtins under clang
// (__nvvm_ex2_approx_f for exp, ...) and the same PTX instructions under nvcc: no
// libdevice, no libm.
//
// EmulationHeader runs the same CUDA source on the CPU (blocks in turn, a block's threads
// as real threads), which is how the tests check the CUDA lowering numerically against
// the Go references on machines without a GPU.
package cuda
