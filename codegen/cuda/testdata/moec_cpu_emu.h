// CPU emulation of the CUDA subset moec generates, so that tests can run the generated
// CUDA code without a GPU and compare it with the Go references. Blocks run one after
// another; the threads of a block run as real threads (so __syncthreads is a real
// barrier); __shared__ variables are static, i.e. shared by the threads of the one block
// that runs at a time. Device math uses libm here (the GPU uses the approximations).
#ifndef MOEC_CPU_EMU_H
#define MOEC_CPU_EMU_H
#define MOEC_CPU_EMULATION 1

#include <math.h>
#include <pthread.h>
#include <stddef.h>

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
// Go slices are not always 16-byte aligned; the GPU's cudaMalloc buffers are.
#define __builtin_assume_aligned(p, a) (p)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline pthread_barrier_t moec_emu_barrier;
inline void __syncthreads() { pthread_barrier_wait(&moec_emu_barrier); }

typedef int cudaError_t;
typedef struct CUstream_st *cudaStream_t;
#define cudaSuccess 0

static inline float moe_ex2f_(float x) { return exp2f(x); }
static inline float moe_lg2f_(float x) { return log2f(x); }
static inline float moe_sqrtf_(float x) { return sqrtf(x); }
static inline float moe_fmaxf_(float a, float b) { return fmaxf(a, b); }
static inline float moe_fminf_(float a, float b) { return fminf(a, b); }
#endif
