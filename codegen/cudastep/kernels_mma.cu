#include "moec_step_device.h"

// Tensor-core matrix products of the training step (mma.go describes the forms, their
// launches and their expected efficiency).
//
// Every product is C[mo, no] (+)= Σ_r A(o, r)·B(n, r) over fp32 row-major activations and
// either 16-bit weights (bf16 or fp16, the caller's copy of the fp32 master weights) or
// fp32 activations for the weight gradient. A block of 256 threads (8 warps, 2 × 4)
// computes a 128 × 128 tile of C, each warp 64 × 32 of it as 4 × 4 fragments of
// mma.sync.m16n8k16 with fp32 accumulators, over reduction steps of 32 staged through
// shared memory in two buffers: while the warps multiply one step, the next one's fp32
// operands are loaded into registers (converted to 16 bits when stored into shared
// memory after the step) and its 16-bit operands are copied by cp.async. Fragments come
// from shared memory through ldmatrix, transposed (.trans) where the reduction index is
// the tile's row (an operand read "MN-major": dx's weights, dW's activations). Tile rows
// are padded by 8 elements so that ldmatrix's eight row reads hit distinct banks. Edges
// (M, N, K not multiples of the tile) are zero-filled on load and masked on store.
// The kernels need no __launch_bounds__: at 256 threads a block, ptxas's default budget of
// 255 registers a thread still fits the SM's 64K registers (the accumulators take 64).

#define MMA_BM 128
#define MMA_BN 128
#define MMA_BK 32
#define MMA_THREADS 256
#define MMA_LDK (MMA_BK + 8)              // a K-major tile's row: 40 elements (80 bytes)
#define MMA_LDO (MMA_BM + 8)              // an MN-major tile's row: 136 elements (272 bytes)
#define MMA_TILE_ELEMS (MMA_BM * MMA_LDK) // 5120, at least MMA_BK * MMA_LDO = 4352

enum { MMA_BF16 = 0, MMA_F16 = 1 };
// An operand's element (o, r), o its output row (A) or column (B) and r the reduction
// index, is at p[o*ld + r] (K-major) or at p[r*ld + o] (MN-major).
enum { MMA_KMAJOR = 0, MMA_MNMAJOR = 1 };

struct __attribute__((aligned(16))) mma_f4 {
  float v[4];
};

// mma_load4 reads four floats at a 16-byte aligned address in one access (the compiler
// merges a plain vector load with the masked scalar path into scalar loads).
static __device__ __forceinline__ void mma_load4(mma_f4 *r, const float *p) {
#if defined(MOEC_CPU_EMULATION)
  memcpy(r->v, p, 16);
#else
  asm volatile("ld.global.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(r->v[0]), "=f"(r->v[1]), "=f"(r->v[2]), "=f"(r->v[3]) : "l"(p));
#endif
}

template <int P> static __device__ __forceinline__ unsigned mma_pack(float lo, float hi) {
  return P == MMA_BF16 ? moe_pack_bf16x2(lo, hi) : moe_pack_f16x2(lo, hi);
}

template <int P> static __device__ __forceinline__ void mma_16816(float d[4], const unsigned a[4], const unsigned b[2]) {
  if (P == MMA_BF16)
    moe_mma_m16n8k16_bf16(d, a, b);
  else
    moe_mma_m16n8k16_f16(d, a, b);
}

static __device__ __forceinline__ bool mma_aligned16(const void *p) { return ((unsigned long long)p & 15ull) == 0; }

// mma_chunk places chunk c of a tile whose contiguous dimension is cut into chunks of
// width elements: its tile coordinates (o, r) of the first element.
template <int MAJ, int WIDTH> static __device__ __forceinline__ void mma_chunk(int c, int *o, int *r) {
  if (MAJ == MMA_KMAJOR) {
    *o = c / (MMA_BK / WIDTH);
    *r = c % (MMA_BK / WIDTH) * WIDTH;
  } else {
    *r = c / (MMA_BM / WIDTH);
    *o = c % (MMA_BM / WIDTH) * WIDTH;
  }
}

template <int MAJ> static __device__ __forceinline__ int mma_tile_index(int o, int r) {
  return MAJ == MMA_KMAJOR ? o * MMA_LDK + r : r * MMA_LDO + o;
}

// mma_fetch starts loading the tile of an operand at (o0, r0): fp32 operands into the
// thread's registers (16 floats, four chunks of 4), 16-bit ones by cp.async straight into
// the shared tile (two chunks of 8, 16 bytes each). vec says that ld and the base are
// aligned for the wide accesses.
template <int MAJ>
static __device__ __forceinline__ void mma_fetch(mma_f4 regs[4], unsigned short *tile, const float *p, long long ld, int outer,
                                                 int red, int o0, int r0, bool vec) {
  (void)tile;
  #pragma unroll
  for (int i = 0; i < 4; i++) {
    int o, r;
    mma_chunk<MAJ, 4>((int)threadIdx.x + i * MMA_THREADS, &o, &r);
    int go = o0 + o, gr = r0 + r;
    bool row = MAJ == MMA_KMAJOR ? go < outer : gr < red;
    int cont = MAJ == MMA_KMAJOR ? gr : go, extent = MAJ == MMA_KMAJOR ? red : outer;
    const float *src = p + (MAJ == MMA_KMAJOR ? (long long)go * ld + gr : (long long)gr * ld + go);
    if (row && vec && cont + 4 <= extent) {
      mma_load4(&regs[i], src);
    } else {
      #pragma unroll
      for (int j = 0; j < 4; j++) regs[i].v[j] = row && cont + j < extent ? src[j] : 0.f;
    }
  }
}

template <int MAJ>
static __device__ __forceinline__ void mma_fetch(mma_f4 regs[4], unsigned short *tile, const unsigned short *p, long long ld,
                                                 int outer, int red, int o0, int r0, bool vec) {
  (void)regs;
  #pragma unroll
  for (int i = 0; i < 2; i++) {
    int o, r;
    mma_chunk<MAJ, 8>((int)threadIdx.x + i * MMA_THREADS, &o, &r);
    int go = o0 + o, gr = r0 + r;
    bool row = MAJ == MMA_KMAJOR ? go < outer : gr < red;
    int cont = MAJ == MMA_KMAJOR ? gr : go, extent = MAJ == MMA_KMAJOR ? red : outer;
    unsigned short *dst = tile + mma_tile_index<MAJ>(o, r);
    bool inside = row && cont < extent;
    const unsigned short *src = p + (inside ? (MAJ == MMA_KMAJOR ? (long long)go * ld + gr : (long long)gr * ld + go) : 0);
    if (vec && (!inside || cont + 8 <= extent)) {
      moe_cp_async16(dst, src, inside);
    } else {
      #pragma unroll
      for (int j = 0; j < 8; j++) dst[j] = inside && cont + j < extent ? src[j] : (unsigned short)0;
    }
  }
}

// mma_put stores what mma_fetch left in registers into the shared tile, in 16 bits.
template <int P, int MAJ>
static __device__ __forceinline__ void mma_put(unsigned short *tile, const mma_f4 regs[4], const float *) {
  #pragma unroll
  for (int i = 0; i < 4; i++) {
    int o, r;
    mma_chunk<MAJ, 4>((int)threadIdx.x + i * MMA_THREADS, &o, &r);
    unsigned *dst = (unsigned *)(tile + mma_tile_index<MAJ>(o, r));
    dst[0] = mma_pack<P>(regs[i].v[0], regs[i].v[1]);
    dst[1] = mma_pack<P>(regs[i].v[2], regs[i].v[3]);
  }
}

template <int P, int MAJ>
static __device__ __forceinline__ void mma_put(unsigned short *, const mma_f4 *, const unsigned short *) {}

static __device__ __forceinline__ bool mma_vec(const float *p, long long ld) { return ld % 4 == 0 && mma_aligned16(p); }
static __device__ __forceinline__ bool mma_vec(const unsigned short *p, long long ld) { return ld % 8 == 0 && mma_aligned16(p); }

// mma_multiply runs one staged reduction step (32) of the warp's 64 × 32 part of the tile.
template <int P, int AMAJ, int BMAJ>
static __device__ __forceinline__ void mma_multiply(float acc[4][4][4], const unsigned short *as, const unsigned short *bs,
                                                    int wm, int wn, int lane) {
  #pragma unroll
  for (int kk = 0; kk < MMA_BK; kk += 16) {
    unsigned af[4][4], bf[4][2];
    #pragma unroll
    for (int mi = 0; mi < 4; mi++) {
      int m = wm * 64 + mi * 16;
      // Matrices 0..3: rows m..m+7 and m+8..m+15 at k, then both at k+8.
      if (AMAJ == MMA_KMAJOR)
        moe_ldmatrix_x4(af[mi], as + (m + (lane & 15)) * MMA_LDK + kk + (lane >> 4) * 8);
      else
        moe_ldmatrix_x4_trans(af[mi], as + (kk + (lane & 7) + (lane >> 4) * 8) * MMA_LDO + m + ((lane >> 3) & 1) * 8);
    }
    #pragma unroll
    for (int nj = 0; nj < 2; nj++) {
      int n = wn * 32 + nj * 16;
      unsigned r[4];
      // Matrices 0..3: columns n..n+7 at k and k+8, then n+8..n+15 at k and k+8.
      if (BMAJ == MMA_KMAJOR)
        moe_ldmatrix_x4(r, bs + (n + (lane & 7) + (lane >> 4) * 8) * MMA_LDK + kk + ((lane >> 3) & 1) * 8);
      else
        moe_ldmatrix_x4_trans(r, bs + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * MMA_LDO + n + (lane >> 4) * 8);
      bf[2 * nj][0] = r[0];
      bf[2 * nj][1] = r[1];
      bf[2 * nj + 1][0] = r[2];
      bf[2 * nj + 1][1] = r[3];
    }
    #pragma unroll
    for (int mi = 0; mi < 4; mi++)
      #pragma unroll
      for (int ni = 0; ni < 4; ni++) mma_16816<P>(acc[mi][ni], af[mi], bf[ni]);
  }
}

// mma_gemm_tile computes the block's tile at (m0, n0) of c[mo, no] (+)= A·Bᵀ (+ bias[n]),
// the reduction over red: A fp32, B fp32 or 16-bit. Every thread of the block calls it.
template <int P, int AMAJ, int BMAJ, class BT>
static __device__ __forceinline__ void mma_gemm_tile(const float *a, long long lda, const BT *b, long long ldb, int mo, int no,
                                                     int red, int m0, int n0, float *c, long long ldc, const float *bias,
                                                     int accumulate) {
  __shared__ __attribute__((aligned(16))) unsigned short sa[2][MMA_TILE_ELEMS];
  __shared__ __attribute__((aligned(16))) unsigned short sb[2][MMA_TILE_ELEMS];
  const int lane = (int)threadIdx.x & 31, warp = (int)threadIdx.x >> 5, wm = warp >> 2, wn = warp & 3;
  float acc[4][4][4];
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int ni = 0; ni < 4; ni++)
      #pragma unroll
      for (int q = 0; q < 4; q++) acc[mi][ni][q] = 0.f;
  const bool avec = mma_vec(a, lda), bvec = mma_vec(b, ldb);
  const int steps = (red + MMA_BK - 1) / MMA_BK;
  mma_f4 ra[4], rb[4];
  if (steps > 0) {
    mma_fetch<AMAJ>(ra, sa[0], a, lda, mo, red, m0, 0, avec);
    mma_fetch<BMAJ>(rb, sb[0], b, ldb, no, red, n0, 0, bvec);
    moe_cp_async_commit();
    mma_put<P, AMAJ>(sa[0], ra, a);
    mma_put<P, BMAJ>(sb[0], rb, b);
    moe_cp_async_wait_all();
    __syncthreads();
    for (int step = 0; step < steps; step++) {
      const int s = step & 1;
      const bool next = step + 1 < steps;
      if (next) {
        mma_fetch<AMAJ>(ra, sa[s ^ 1], a, lda, mo, red, m0, (step + 1) * MMA_BK, avec);
        mma_fetch<BMAJ>(rb, sb[s ^ 1], b, ldb, no, red, n0, (step + 1) * MMA_BK, bvec);
        moe_cp_async_commit();
      }
      mma_multiply<P, AMAJ, BMAJ>(acc, sa[s], sb[s], wm, wn, lane);
      if (next) {
        mma_put<P, AMAJ>(sa[s ^ 1], ra, a);
        mma_put<P, BMAJ>(sb[s ^ 1], rb, b);
        moe_cp_async_wait_all();
      }
      __syncthreads();
    }
  }
  const int g = lane >> 2, t = lane & 3;
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int half = 0; half < 2; half++) {
      int row = m0 + wm * 64 + mi * 16 + g + 8 * half;
      if (row >= mo) continue;
      float *out = c + (long long)row * ldc;
      #pragma unroll
      for (int ni = 0; ni < 4; ni++)
        #pragma unroll
        for (int q = 0; q < 2; q++) {
          int col = n0 + wn * 32 + ni * 8 + 2 * t + q;
          if (col >= no) continue;
          float v = acc[mi][ni][2 * half + q];
          if (bias) v += bias[col];
          out[col] = accumulate ? out[col] + v : v;
        }
    }
}

// mma_find_tile finds which expert's rows tile t of a grouped launch covers: the experts'
// row tiles are numbered in expert order, ceil(counts[e] / 128) of them for expert e.
// Each warp scans the counts 32 at a time with a shuffle prefix sum (the whole warp takes
// part, so the block size is a multiple of 32). False when t is past the last tile.
static __device__ __forceinline__ bool mma_find_tile(const int *counts, int experts, int t, int *expert, int *tile) {
  const int lane = (int)threadIdx.x & 31;
  int base = 0;
  for (int e0 = 0; e0 < experts; e0 += 32) {
    int e = e0 + lane;
    int n = e < experts ? (counts[e] + MMA_BM - 1) / MMA_BM : 0;
    int incl = n;
    for (int d = 1; d < 32; d <<= 1) {
      int v = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += v;
    }
    int total = __shfl_sync(0xffffffffu, incl, 31);
    if (t < base + total) {
      unsigned hit = __ballot_sync(0xffffffffu, base + incl > t);
      int first = __builtin_ctz(hit);
      int before = __shfl_sync(0xffffffffu, incl - n, first);
      *expert = e0 + first;
      *tile = t - base - before;
      return true;
    }
    base += total;
  }
  return false;
}

static __device__ __forceinline__ long long mma_first_row(const int *offsets, long long slots, int e) {
  return slots > 0 ? (long long)e * slots : (long long)offsets[e];
}

// y[M, N] (+)= x[M, K]·w[N, K]ᵀ (+ bias[N]). Grid (ceil(N/128), ceil(M/128)).
template <int P>
static __device__ __forceinline__ void mma_fwd(const float *x, const unsigned short *w, const float *bias, float *y, int M, int N,
                                               int K, int use_bias, int accumulate) {
  mma_gemm_tile<P, MMA_KMAJOR, MMA_KMAJOR>(x, K, w, K, M, N, K, (int)blockIdx.y * MMA_BM, (int)blockIdx.x * MMA_BN, y, N,
                                           use_bias ? bias : nullptr, accumulate);
}

// dx[M, K] (+)= dy[M, N]·w[N, K]. Grid (ceil(K/128), ceil(M/128)).
template <int P>
static __device__ __forceinline__ void mma_dx(const float *dy, const unsigned short *w, float *dx, int M, int N, int K,
                                              int accumulate) {
  mma_gemm_tile<P, MMA_KMAJOR, MMA_MNMAJOR>(dy, N, w, K, M, K, N, (int)blockIdx.y * MMA_BM, (int)blockIdx.x * MMA_BN, dx, K,
                                            nullptr, accumulate);
}

// dw[N, K] (+)= dy[M, N]ᵀ·x[M, K]. Grid (ceil(K/128), ceil(N/128)).
template <int P>
static __device__ __forceinline__ void mma_dw(const float *dy, const float *x, float *dw, int M, int N, int K, int accumulate) {
  mma_gemm_tile<P, MMA_MNMAJOR, MMA_MNMAJOR>(dy, N, x, K, N, K, M, (int)blockIdx.y * MMA_BM, (int)blockIdx.x * MMA_BN, dw, K,
                                             nullptr, accumulate);
}

// The grouped forms: expert e's rows are rows [first, first + counts[e]) of the permuted
// buffers, first = e·slots when slots > 0 (the [experts, slots, width] dispatch layout)
// and offsets[e] otherwise (the packed layout); its weights (and bias, and weight
// gradient) start stride elements after expert e-1's. Forward and dx: grid
// (row tiles bound, ceil(width/128)), where the bound is ceil(rows/128) + experts for the
// buffers' rows; blocks past the experts' tiles return at once. dW: grid
// (ceil(K/128), ceil(N/128), experts).
template <int P>
static __device__ __forceinline__ void mma_grouped_fwd(const float *x, const unsigned short *w, const float *bias, float *y,
                                                       const int *counts, const int *offsets, int experts, long long slots, int N,
                                                       int K, long long w_stride, long long bias_stride, int use_bias,
                                                       int accumulate) {
  int e, tile;
  if (!mma_find_tile(counts, experts, (int)blockIdx.x, &e, &tile)) return;
  long long first = mma_first_row(offsets, slots, e);
  mma_gemm_tile<P, MMA_KMAJOR, MMA_KMAJOR>(x + first * K, K, w + e * w_stride, K, counts[e], N, K, tile * MMA_BM,
                                           (int)blockIdx.y * MMA_BN, y + first * N, N,
                                           use_bias ? bias + e * bias_stride : nullptr, accumulate);
}

template <int P>
static __device__ __forceinline__ void mma_grouped_dx(const float *dy, const unsigned short *w, float *dx, const int *counts,
                                                      const int *offsets, int experts, long long slots, int N, int K,
                                                      long long w_stride, int accumulate) {
  int e, tile;
  if (!mma_find_tile(counts, experts, (int)blockIdx.x, &e, &tile)) return;
  long long first = mma_first_row(offsets, slots, e);
  mma_gemm_tile<P, MMA_KMAJOR, MMA_MNMAJOR>(dy + first * N, N, w + e * w_stride, K, counts[e], K, N, tile * MMA_BM,
                                            (int)blockIdx.y * MMA_BN, dx + first * K, K, nullptr, accumulate);
}

template <int P>
static __device__ __forceinline__ void mma_grouped_dw(const float *dy, const float *x, float *dw, const int *counts,
                                                      const int *offsets, int experts, long long slots, int N, int K,
                                                      long long dw_stride, int accumulate) {
  int e = (int)blockIdx.z;
  if (e >= experts) return;
  int rows = counts[e];
  if (rows == 0 && accumulate) return;  // nothing to add: an empty expert costs one read
  long long first = mma_first_row(offsets, slots, e);
  mma_gemm_tile<P, MMA_MNMAJOR, MMA_MNMAJOR>(dy + first * N, N, x + first * K, K, N, K, rows, (int)blockIdx.y * MMA_BM,
                                             (int)blockIdx.x * MMA_BN, dw + e * dw_stride, K, nullptr, accumulate);
}

// db[N] (+)= Σ over rows of dy[rows, N]: 32 columns a block, its 8 warps summing every
// 8th row, the partial sums added in a fixed order (deterministic, no atomics).
static __device__ __forceinline__ void mma_column_sums(const float *dy, float *db, int rows, int N, int accumulate) {
  __shared__ float part[8][33];
  const int tx = (int)threadIdx.x & 31, ty = (int)threadIdx.x >> 5;
  const int n = (int)blockIdx.x * 32 + tx;
  float s = 0.f;
  if (n < N)
    for (int m = ty; m < rows; m += 8) s += dy[(long long)m * N + n];
  part[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && n < N) {
    float total = 0.f;
    for (int i = 0; i < 8; i++) total += part[i][tx];
    db[n] = accumulate ? db[n] + total : total;
  }
}

extern "C" __global__ void mma_fwd_bf16(float *x, unsigned short *w, float *bias, float *y, int M, int N, int K, int use_bias, int accumulate) {
  mma_fwd<MMA_BF16>(x, w, bias, y, M, N, K, use_bias, accumulate);
}
extern "C" __global__ void mma_fwd_f16(float *x, unsigned short *w, float *bias, float *y, int M, int N, int K, int use_bias, int accumulate) {
  mma_fwd<MMA_F16>(x, w, bias, y, M, N, K, use_bias, accumulate);
}
extern "C" __global__ void mma_dx_bf16(float *dy, unsigned short *w, float *dx, int M, int N, int K, int accumulate) {
  mma_dx<MMA_BF16>(dy, w, dx, M, N, K, accumulate);
}
extern "C" __global__ void mma_dx_f16(float *dy, unsigned short *w, float *dx, int M, int N, int K, int accumulate) {
  mma_dx<MMA_F16>(dy, w, dx, M, N, K, accumulate);
}
extern "C" __global__ void mma_dw_bf16(float *dy, float *x, float *dw, int M, int N, int K, int accumulate) {
  mma_dw<MMA_BF16>(dy, x, dw, M, N, K, accumulate);
}
extern "C" __global__ void mma_dw_f16(float *dy, float *x, float *dw, int M, int N, int K, int accumulate) {
  mma_dw<MMA_F16>(dy, x, dw, M, N, K, accumulate);
}
extern "C" __global__ void mma_grouped_fwd_bf16(float *x, unsigned short *w, float *bias, float *y, int *counts, int *offsets, int experts, long long slots, int N, int K, long long w_stride, long long bias_stride, int use_bias, int accumulate) {
  mma_grouped_fwd<MMA_BF16>(x, w, bias, y, counts, offsets, experts, slots, N, K, w_stride, bias_stride, use_bias, accumulate);
}
extern "C" __global__ void mma_grouped_fwd_f16(float *x, unsigned short *w, float *bias, float *y, int *counts, int *offsets, int experts, long long slots, int N, int K, long long w_stride, long long bias_stride, int use_bias, int accumulate) {
  mma_grouped_fwd<MMA_F16>(x, w, bias, y, counts, offsets, experts, slots, N, K, w_stride, bias_stride, use_bias, accumulate);
}
extern "C" __global__ void mma_grouped_dx_bf16(float *dy, unsigned short *w, float *dx, int *counts, int *offsets, int experts, long long slots, int N, int K, long long w_stride, int accumulate) {
  mma_grouped_dx<MMA_BF16>(dy, w, dx, counts, offsets, experts, slots, N, K, w_stride, accumulate);
}
extern "C" __global__ void mma_grouped_dx_f16(float *dy, unsigned short *w, float *dx, int *counts, int *offsets, int experts, long long slots, int N, int K, long long w_stride, int accumulate) {
  mma_grouped_dx<MMA_F16>(dy, w, dx, counts, offsets, experts, slots, N, K, w_stride, accumulate);
}
extern "C" __global__ void mma_grouped_dw_bf16(float *dy, float *x, float *dw, int *counts, int *offsets, int experts, long long slots, int N, int K, long long dw_stride, int accumulate) {
  mma_grouped_dw<MMA_BF16>(dy, x, dw, counts, offsets, experts, slots, N, K, dw_stride, accumulate);
}
extern "C" __global__ void mma_grouped_dw_f16(float *dy, float *x, float *dw, int *counts, int *offsets, int experts, long long slots, int N, int K, long long dw_stride, int accumulate) {
  mma_grouped_dw<MMA_F16>(dy, x, dw, counts, offsets, experts, slots, N, K, dw_stride, accumulate);
}

// The weights' 16-bit copies: dst[i] = src[i] rounded to nearest even. Grid-stride.
extern "C" __global__ void mma_cast_bf16(float *src, unsigned short *dst, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] = (unsigned short)(moe_pack_bf16x2(src[i], 0.f) & 0xffffu);
}
extern "C" __global__ void mma_cast_f16(float *src, unsigned short *dst, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] = (unsigned short)(moe_pack_f16x2(src[i], 0.f) & 0xffffu);
}

// db[N] (+)= Σ_m dy[m, N]. Grid (ceil(N/32)), 256 threads.
extern "C" __global__ void mma_bias_grad(float *dy, float *db, int M, int N, int accumulate) {
  mma_column_sums(dy, db, M, N, accumulate);
}
// Expert e's db (+)= Σ over its rows of dy. Grid (ceil(N/32), 1, experts), 256 threads.
extern "C" __global__ void mma_grouped_bias_grad(float *dy, float *db, int *counts, int *offsets, int experts, long long slots, int N, long long db_stride, int accumulate) {
  int e = (int)blockIdx.z;
  if (e >= experts) return;
  if (counts[e] == 0 && accumulate) return;
  mma_column_sums(dy + mma_first_row(offsets, slots, e) * N, db + e * db_stride, counts[e], N, accumulate);
}
