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

// ---- Tensor-core primitives (helper "mma"; kernels_mma.cu) --------------------------
//
// moe_mma_m16n8k16_{bf16,f16}: D += A·B for one warp, mma.sync.aligned.m16n8k16.row.col
// with fp32 accumulation; a[4], b[2] and d[4] are the PTX ISA's fragments (each a/b
// register holds two 16-bit elements, the lower-indexed one in the low half). With
// g = lane >> 2 and t = lane & 3: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1],
// a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]; b[0] = B[2t..2t+1][g],
// b[1] = B[2t+8..2t+9][g]; d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..2t+1].
// moe_ldmatrix_x4(_trans): ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16, each lane
// passing the address of one row (lanes 8i..8i+7 the rows of matrix i) and receiving
// r[i] = row lane/4, columns 2(lane%4)..+1 of matrix i (of its transpose under _trans).
// moe_cp_async16: cp.async.cg of 16 bytes global → shared (zero-filled when !valid),
// committed as a group by moe_cp_async_commit and awaited by moe_cp_async_wait_all.
// moe_pack_{bf16,f16}x2: two floats rounded to nearest even, lo in the low half.
// The emulation computes the same fragments lane by lane over __shfl_sync, from the
// ISA's layouts, so a kernel that feeds the instructions wrongly computes wrong numbers.
#ifndef MOEC_STEP_DEVICE_MMA_H
#define MOEC_STEP_DEVICE_MMA_H
#if defined(MOEC_CPU_EMULATION)

// moe_f2h rounds to the nearest fp16 (ties to even; overflow to infinity, NaN kept).
static inline unsigned short moe_f2h(float x) {
  unsigned u = moe_float_bits(x);
  unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
  unsigned a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);
  if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds past 65504
  if (a < 0x38800000u) {  // below 2^-14: a subnormal fp16, m·2^-24
    float m = nearbyintf(moe_bits_float(a) * 16777216.0f);
    return (unsigned short)(sign | (unsigned)m);
  }
  unsigned t = a - (112u << 23);  // exponent bias 127 → 15
  return (unsigned short)(sign | ((t + 0xfffu + ((t >> 13) & 1u)) >> 13));
}
static inline unsigned moe_pack_bf16x2(float lo, float hi) { return (unsigned)moe_f2bf(lo) | ((unsigned)moe_f2bf(hi) << 16); }
static inline unsigned moe_pack_f16x2(float lo, float hi) { return (unsigned)moe_f2h(lo) | ((unsigned)moe_f2h(hi) << 16); }

static inline float moe_h2f(unsigned short h) {
  unsigned e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  float v = e == 0 ? (float)m * (1.0f / 16777216.0f)
            : e == 31 ? (m ? NAN : INFINITY)
                      : ldexpf((float)(m | 0x400u), (int)e - 25);
  return (h & 0x8000u) ? -v : v;
}

// moe_mma_emulated gathers, through shuffles, the rows g and g+8 of A and the columns 2t
// and 2t+1 of B that this lane's four results need, from the lanes that hold them.
static inline void moe_mma_emulated(float d[4], const unsigned a[4], const unsigned b[2], float (*to_float)(unsigned short)) {
  unsigned lane = moec_emu_lane(), g = lane >> 2, t = lane & 3;
  float rowA[2][16], colB[2][16];
  unsigned long long a01 = (unsigned long long)a[0] | ((unsigned long long)a[1] << 32);
  unsigned long long a23 = (unsigned long long)a[2] | ((unsigned long long)a[3] << 32);
  unsigned long long b01 = (unsigned long long)b[0] | ((unsigned long long)b[1] << 32);
  for (unsigned j = 0; j < 4; j++) {
    // Lane 4g+j holds A[g][2j..2j+1], A[g+8][2j..2j+1] (a0, a1) and the same at 2j+8 (a2, a3).
    unsigned long long lo = __shfl_sync(0xffffffffu, a01, (int)(4 * g + j));
    unsigned long long hi = __shfl_sync(0xffffffffu, a23, (int)(4 * g + j));
    for (unsigned h = 0; h < 2; h++) {
      rowA[0][2 * j + h] = to_float((unsigned short)(lo >> (16 * h)));
      rowA[1][2 * j + h] = to_float((unsigned short)(lo >> (32 + 16 * h)));
      rowA[0][2 * j + 8 + h] = to_float((unsigned short)(hi >> (16 * h)));
      rowA[1][2 * j + 8 + h] = to_float((unsigned short)(hi >> (32 + 16 * h)));
    }
    // Lane 4n+j holds B[2j..2j+1][n] (b0) and B[2j+8..2j+9][n] (b1).
    for (unsigned c = 0; c < 2; c++) {
      unsigned long long v = __shfl_sync(0xffffffffu, b01, (int)(4 * (2 * t + c) + j));
      for (unsigned h = 0; h < 2; h++) {
        colB[c][2 * j + h] = to_float((unsigned short)(v >> (16 * h)));
        colB[c][2 * j + 8 + h] = to_float((unsigned short)(v >> (32 + 16 * h)));
      }
    }
  }
  for (unsigned r = 0; r < 2; r++)
    for (unsigned c = 0; c < 2; c++) {
      float s = d[2 * r + c];
      for (unsigned k = 0; k < 16; k++) s += rowA[r][k] * colB[c][k];
      d[2 * r + c] = s;
    }
}
static inline void moe_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2]) { moe_mma_emulated(d, a, b, moe_bf2f); }
static inline void moe_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2]) { moe_mma_emulated(d, a, b, moe_h2f); }

static inline void moe_ldmatrix_x4(unsigned r[4], const unsigned short *row) {
  unsigned lane = moec_emu_lane();
  for (unsigned i = 0; i < 4; i++) {
    const unsigned short *p = __shfl_sync(0xffffffffu, row, (int)(8 * i + lane / 4));
    r[i] = (unsigned)p[2 * (lane % 4)] | ((unsigned)p[2 * (lane % 4) + 1] << 16);
  }
}
static inline void moe_ldmatrix_x4_trans(unsigned r[4], const unsigned short *row) {
  unsigned lane = moec_emu_lane();
  for (unsigned i = 0; i < 4; i++) {
    const unsigned short *p0 = __shfl_sync(0xffffffffu, row, (int)(8 * i + 2 * (lane % 4)));
    const unsigned short *p1 = __shfl_sync(0xffffffffu, row, (int)(8 * i + 2 * (lane % 4) + 1));
    r[i] = (unsigned)p0[lane / 4] | ((unsigned)p1[lane / 4] << 16);
  }
}
static inline void moe_cp_async16(void *shared, const void *global, bool valid) {
  if (valid) memcpy(shared, global, 16);
  else memset(shared, 0, 16);
}
static inline void moe_cp_async_commit() {}
static inline void moe_cp_async_wait_all() {}

#else

static __device__ __forceinline__ unsigned moe_shared_addr(const void *p) {
  unsigned r;
  asm("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(r) : "l"(p));
  return r;
}
static __device__ __forceinline__ unsigned moe_pack_bf16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
static __device__ __forceinline__ unsigned moe_pack_f16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
static __device__ __forceinline__ void moe_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
static __device__ __forceinline__ void moe_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
static __device__ __forceinline__ void moe_ldmatrix_x4(unsigned r[4], const unsigned short *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(moe_shared_addr(row))
               : "memory");
}
static __device__ __forceinline__ void moe_ldmatrix_x4_trans(unsigned r[4], const unsigned short *row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(moe_shared_addr(row))
               : "memory");
}
static __device__ __forceinline__ void moe_cp_async16(void *shared, const void *global, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(moe_shared_addr(shared)), "l"(global),
               "r"(valid ? 16 : 0)
               : "memory");
}
static __device__ __forceinline__ void moe_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
static __device__ __forceinline__ void moe_cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

#endif
#endif
// ---- end of the tensor-core primitives ----------------------------------------------
