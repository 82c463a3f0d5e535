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
#include <stdlib.h>
#include <string.h>
#include <thread>
#include <vector>

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

// Runs a kernel: blocks in order, each with `threads` real threads and a fresh barrier.
template <class F> void moec_emu_launch(unsigned blocks, unsigned threads, F kernel) {
  blockDim.x = threads;
  gridDim.x = blocks;
  for (unsigned b = 0; b < blocks; b++) {
    pthread_barrier_init(&moec_emu_barrier, 0, threads);
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; t++)
      ts.emplace_back([=] { blockIdx.x = b; threadIdx.x = t; kernel(); });
    for (auto &th : ts) th.join();
    pthread_barrier_destroy(&moec_emu_barrier);
  }
}

// The runtime API the harness uses, on host memory.
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
typedef struct { int unused; } *cudaEvent_t;
static inline cudaError_t cudaMalloc(void **p, size_t n) { *p = calloc(1, n ? n : 1); return *p ? 0 : 2; }
static inline cudaError_t cudaFree(void *p) { free(p); return 0; }
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return 0; }
static inline cudaError_t cudaDeviceSynchronize(void) { return 0; }
static inline cudaError_t cudaGetLastError(void) { return 0; }
static inline const char *cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
static inline cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = 0; return 0; }
static inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 0; return 0; }

static inline float moe_ex2f_(float x) { return exp2f(x); }
static inline float moe_lg2f_(float x) { return log2f(x); }
static inline float moe_sqrtf_(float x) { return sqrtf(x); }
static inline float moe_fmaxf_(float a, float b) { return fmaxf(a, b); }
static inline float moe_fminf_(float a, float b) { return fminf(a, b); }
#endif
