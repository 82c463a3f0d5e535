// The device API of moec's step kernels, one set of names on the GPU and in the CPU
// emulation. Every step kernel source includes this file first.
//
// On the GPU (clang -x cuda with moec_clang_prelude.h, no CUDA SDK) the CUDA names the
// kernels use (__shfl_xor_sync, __ballot_sync, atomicAdd, ...) are defined here over the
// NVVM builtins; under the emulation (moec_cpu_emu.h, MOEC_CPU_EMULATION) that header
// defines them. The math (moe_expf, ...) is the GPU's approximate instruction on the GPU
// and libm in the emulation. bf16 conversion is the same code on both sides.
#ifndef MOEC_STEP_DEVICE_H
#define MOEC_STEP_DEVICE_H

#if defined(MOEC_CPU_EMULATION)

static inline float moe_expf(float x) { return expf(x); }
static inline float moe_logf(float x) { return logf(x); }
static inline float moe_sqrtf(float x) { return sqrtf(x); }
static inline float moe_rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float moe_tanhf(float x) { return tanhf(x); }
static inline float moe_fmaxf(float a, float b) { return fmaxf(a, b); }
static inline float moe_fminf(float a, float b) { return fminf(a, b); }
static inline unsigned moe_float_bits(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
static inline float moe_bits_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }

#else

#define MOE_DYNAMIC_SHARED(T, name) extern __shared__ __attribute__((aligned(16))) T name[]

static __device__ __forceinline__ float moe_expf(float x) { return __nvvm_ex2_approx_f(x * 1.4426950408889634f); }
static __device__ __forceinline__ float moe_logf(float x) { return __nvvm_lg2_approx_f(x) * 0.6931471805599453f; }
static __device__ __forceinline__ float moe_sqrtf(float x) { return __nvvm_sqrt_rn_f(x); }
static __device__ __forceinline__ float moe_rsqrtf(float x) { return __nvvm_rsqrt_approx_f(x); }
static __device__ __forceinline__ float moe_tanhf(float x) {
  float r;
  asm("tanh.approx.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
static __device__ __forceinline__ float moe_fmaxf(float a, float b) { return __nvvm_fmax_f(a, b); }
static __device__ __forceinline__ float moe_fminf(float a, float b) { return __nvvm_fmin_f(a, b); }
static __device__ __forceinline__ unsigned moe_float_bits(float x) { return __nvvm_bitcast_f2i(x); }
static __device__ __forceinline__ float moe_bits_float(unsigned u) { return __nvvm_bitcast_i2f((int)u); }

static __device__ __forceinline__ void __syncwarp(unsigned mask = 0xffffffffu) { __nvvm_bar_warp_sync(mask); }
static __device__ __forceinline__ float __shfl_sync(unsigned mask, float v, int src, int width = 32) {
  return __nvvm_shfl_sync_idx_f32(mask, v, src, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ int __shfl_sync(unsigned mask, int v, int src, int width = 32) {
  return __nvvm_shfl_sync_idx_i32(mask, v, src, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ unsigned __shfl_sync(unsigned mask, unsigned v, int src, int width = 32) {
  return (unsigned)__nvvm_shfl_sync_idx_i32(mask, (int)v, src, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ float __shfl_xor_sync(unsigned mask, float v, int m, int width = 32) {
  return __nvvm_shfl_sync_bfly_f32(mask, v, m, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ int __shfl_xor_sync(unsigned mask, int v, int m, int width = 32) {
  return __nvvm_shfl_sync_bfly_i32(mask, v, m, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ unsigned __shfl_xor_sync(unsigned mask, unsigned v, int m, int width = 32) {
  return (unsigned)__nvvm_shfl_sync_bfly_i32(mask, (int)v, m, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ float __shfl_down_sync(unsigned mask, float v, unsigned d, int width = 32) {
  return __nvvm_shfl_sync_down_f32(mask, v, d, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ int __shfl_down_sync(unsigned mask, int v, unsigned d, int width = 32) {
  return __nvvm_shfl_sync_down_i32(mask, v, d, ((32 - width) << 8) | 0x1f);
}
static __device__ __forceinline__ float __shfl_up_sync(unsigned mask, float v, unsigned d, int width = 32) {
  return __nvvm_shfl_sync_up_f32(mask, v, d, (32 - width) << 8);
}
static __device__ __forceinline__ int __shfl_up_sync(unsigned mask, int v, unsigned d, int width = 32) {
  return __nvvm_shfl_sync_up_i32(mask, v, d, (32 - width) << 8);
}
static __device__ __forceinline__ unsigned __ballot_sync(unsigned mask, int pred) { return __nvvm_vote_ballot_sync(mask, pred != 0); }
static __device__ __forceinline__ int __any_sync(unsigned mask, int pred) { return __nvvm_vote_any_sync(mask, pred != 0); }
static __device__ __forceinline__ int __all_sync(unsigned mask, int pred) { return __nvvm_vote_all_sync(mask, pred != 0); }
static __device__ __forceinline__ float atomicAdd(float *p, float v) { return __nvvm_atom_add_gen_f(p, v); }
static __device__ __forceinline__ int atomicAdd(int *p, int v) { return __nvvm_atom_add_gen_i(p, v); }
static __device__ __forceinline__ unsigned atomicAdd(unsigned *p, unsigned v) { return (unsigned)__nvvm_atom_add_gen_i((int *)p, (int)v); }
static __device__ __forceinline__ int atomicMax(int *p, int v) { return __nvvm_atom_max_gen_i(p, v); }

#endif

// bf16 storage: round to nearest even (NaN kept a quiet NaN), and back.
static __device__ __forceinline__ unsigned short moe_f2bf(float x) {
  unsigned u = moe_float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static __device__ __forceinline__ float moe_bf2f(unsigned short b) { return moe_bits_float((unsigned)b << 16); }

#endif
