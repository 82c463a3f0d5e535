// Fused causal attention for the step program (FlashAttention-2's algorithm, fp32 SIMT):
// the attn_scores → softmax → attn_av chain of one layer in one forward launch, and its
// backward in two, without a [T, T] buffer anywhere.
//
// Layouts are the step program's (compiler/step, runtime/exec): q and o are
// [B·T, H·Dh] (token-major, head h's features at h·Dh), k and v [B·T, KV·Dh]; query head
// h reads key/value head h / (H/KV) (grouped-query attention). The scores are
// q·kᵀ·scale (scale = 1/√Dh) with the causal mask (key j ≤ query i). lse and delta are
// [B, H, T]: the row log-sum-exp of the scaled scores, saved by the forward, and
// D = rowsum(dO ⊙ O), the backward's first launch.
//
// Tiles: 128 threads (four warps) per block. A block's "rows" (queries in the forward,
// keys in the backward) are dealt to 16 groups of 8 consecutive lanes: group g owns
// rows g·RM .. g·RM+RM-1, and lane c of the group owns the columns c, c+8, c+16, ... of
// the score tile and of the feature dimension, so every product below is an RM × N
// register tile over shared-memory operands (the shape an mma fragment replaces), and a
// row's reductions are three xor shuffles inside its group. Features are padded with
// zeros up to MAXQK for queries and keys and MAXV for values (16, 32, 64 or 128 for both:
// one kernel per width; latent attention's pairs at the end of the file), and shared rows
// are MAXQK+1 (MAXV+1) floats apart so that the groups' rows fall in different banks. Every launch stays
// within the 48 KiB of shared memory a kernel gets without opting in: the key (or
// query) tile shrinks as MAXD grows, and nothing in a block's shared memory depends on T.
#include "moec_step_device.h"

#define FLASH_THREADS 128

static __device__ __forceinline__ float flash_neg_inf() { return -__builtin_huge_valf(); }

// flash_group_max and flash_group_sum reduce over the 8 lanes of a row group.
static __device__ __forceinline__ float flash_group_max(float x) {
  x = moe_fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = moe_fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return moe_fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
}
static __device__ __forceinline__ float flash_group_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x + __shfl_xor_sync(0xffffffffu, x, 4);
}

// flash_load_rows stages rows [r0, r0+ROWS) of a [·, stride] matrix's Dh features at
// src into dst ([ROWS][MAXD+1]), zeros past row `limit` and feature Dh. Consecutive
// threads read consecutive features: coalesced.
template <int MAXD, int ROWS>
static __device__ __forceinline__ void flash_load_rows(float *dst, const float *src, long long stride, int r0, int limit, int Dh) {
  for (int e = threadIdx.x; e < ROWS * MAXD; e += FLASH_THREADS) {
    int r = e / MAXD, d = e % MAXD;
    float x = 0.f;
    if (r0 + r < limit && d < Dh) x = src[(long long)(r0 + r) * stride + d];
    dst[r * (MAXD + 1) + d] = x;
  }
}

// The forward: one block per (query tile of BR rows, head, sequence); key/value tiles of
// BC rows through shared memory; a running maximum m and sum l per row (the sum kept
// per lane and reduced once at the end), the output rescaled as the maximum grows.
// keep, when it is not o, gets a second copy of the output, for a backward that runs after
// the program has reused o's memory. Shared: Q [BR][MAXD+1], one K-then-V tile
// [BC][MAXD+1], P [BR][BC+1].
template <int MAXQK, int MAXV, int BR, int BC>
static __device__ __forceinline__ void flash_fwd(const float *q, const float *k, const float *v, float *o, float *keep,
                                                 float *lse, int T, int H, int KV, int Dqk, int Dv, float scale) {
  constexpr int RM = BR / 16, CN = BC / 8, DN = MAXV / 8, SQ = MAXQK + 1, SV = MAXV + 1, SP = BC + 1;
  constexpr int ST = SQ > SV ? SQ : SV;  // the K-then-V tile's rows
  static_assert(BR % 16 == 0 && BC % 8 == 0 && MAXQK % 8 == 0 && MAXV % 8 == 0, "flash_fwd tile shape");
  MOE_DYNAMIC_SHARED(float, smem);
  float *Qs = smem, *KVs = Qs + BR * SQ, *Ps = KVs + BC * ST;
  const int grp = threadIdx.x >> 3, lane = threadIdx.x & 7;
  const int i0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z, g = h / (H / KV);
  const long long qs = (long long)H * Dqk, ks = (long long)KV * Dqk, vs = (long long)KV * Dv, os = (long long)H * Dv;
  const float *qb = q + (long long)b * T * qs + (long long)h * Dqk;
  const float *kb = k + (long long)b * T * ks + (long long)g * Dqk;
  const float *vb = v + (long long)b * T * vs + (long long)g * Dv;

  float m[RM], l[RM], acc[RM][DN];
#pragma unroll
  for (int r = 0; r < RM; r++) {
    m[r] = flash_neg_inf();
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < DN; e++) acc[r][e] = 0.f;
  }
  flash_load_rows<MAXQK, BR>(Qs, qb, qs, i0, T, Dqk);
  const int kEnd = i0 + BR < T ? i0 + BR : T;  // keys past the tile's last query are masked for all its rows
  for (int j0 = 0; j0 < kEnd; j0 += BC) {
    __syncthreads();  // Q staged; the previous tile's P·V done with KVs and Ps
    flash_load_rows<MAXQK, BC>(KVs, kb, ks, j0, T, Dqk);
    __syncthreads();
    float s[RM][CN];
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
      for (int c = 0; c < CN; c++) s[r][c] = 0.f;
#pragma unroll 8
    for (int d = 0; d < MAXQK; d++) {
      float qv[RM], kv[CN];
#pragma unroll
      for (int r = 0; r < RM; r++) qv[r] = Qs[(grp * RM + r) * SQ + d];
#pragma unroll
      for (int c = 0; c < CN; c++) kv[c] = KVs[(lane + 8 * c) * SQ + d];
#pragma unroll
      for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < CN; c++) s[r][c] += qv[r] * kv[c];
    }
#pragma unroll
    for (int r = 0; r < RM; r++) {
      const int i = i0 + grp * RM + r;
      float mx = flash_neg_inf();
#pragma unroll
      for (int c = 0; c < CN; c++) {
        const int j = j0 + lane + 8 * c;
        s[r][c] = j <= i ? s[r][c] * scale : flash_neg_inf();
        mx = moe_fmaxf(mx, s[r][c]);
      }
      // Key 0 is in the first tile and unmasked for every row: m is finite from then on.
      const float mNew = moe_fmaxf(m[r], flash_group_max(mx));
      const float alpha = moe_expf(m[r] - mNew);
      m[r] = mNew;
      float sum = 0.f;
#pragma unroll
      for (int c = 0; c < CN; c++) {
        const float p = moe_expf(s[r][c] - mNew);
        sum += p;
        Ps[(grp * RM + r) * SP + lane + 8 * c] = p;
      }
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int e = 0; e < DN; e++) acc[r][e] *= alpha;
    }
    __syncthreads();  // P written; every lane done reading K
    flash_load_rows<MAXV, BC>(KVs, vb, vs, j0, T, Dv);
    __syncthreads();
#pragma unroll 4
    for (int jj = 0; jj < BC; jj++) {
      float pv[RM], vv[DN];
#pragma unroll
      for (int r = 0; r < RM; r++) pv[r] = Ps[(grp * RM + r) * SP + jj];
#pragma unroll
      for (int e = 0; e < DN; e++) vv[e] = KVs[jj * SV + lane + 8 * e];
#pragma unroll
      for (int r = 0; r < RM; r++)
#pragma unroll
        for (int e = 0; e < DN; e++) acc[r][e] += pv[r] * vv[e];
    }
  }
  float *ob = o + (long long)b * T * os + (long long)h * Dv;
  float *keepb = keep != o ? keep + (long long)b * T * os + (long long)h * Dv : nullptr;
#pragma unroll
  for (int r = 0; r < RM; r++) {
    const int i = i0 + grp * RM + r;
    const float total = flash_group_sum(l[r]);
    if (i >= T) continue;
    const float inv = 1.f / total;
#pragma unroll
    for (int e = 0; e < DN; e++) {
      const int d = lane + 8 * e;
      if (d >= Dv) continue;
      ob[(long long)i * os + d] = acc[r][e] * inv;
      if (keepb) keepb[(long long)i * os + d] = acc[r][e] * inv;
    }
    if (lane == 0) lse[((long long)b * H + h) * T + i] = m[r] + moe_logf(total);
  }
}

// The backward's first launch: D = rowsum(dO ⊙ O) per (token, head), one warp per row,
// and dq cleared unless the launch adds to it (the second launch adds every key tile's
// share of dq into it with atomics).
extern "C" __global__ void flash_bwd_prep(float* o, float* dout, float* delta, float* dq, int rows, int T, int H, int Dh, int accQ) {
  const int row = blockIdx.x * (FLASH_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;  // a whole warp leaves together
  const long long base = (long long)row * Dh;  // (token, head) rows are contiguous: [B·T·H, Dh]
  float sum = 0.f;
  for (int d = lane; d < Dh; d += 32) {
    sum += dout[base + d] * o[base + d];
    if (!accQ) dq[base + d] = 0.f;
  }
#pragma unroll
  for (int w = 16; w > 0; w >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, w);
  if (lane == 0) {
    const int token = row / H, h = row % H, b = token / T, i = token % T;
    delta[((long long)b * H + h) * T + i] = sum;
  }
}

// The backward's second launch: one block per (key tile of BK rows, key/value head,
// sequence). For each query head of the group and each query tile of BQ rows at or after
// the key tile (the causal part), P is recomputed from Q, K and the saved log-sum-exp,
// dV += Pᵀ·dO and dK += dSᵀ·Q accumulate in registers (dS = P ⊙ (dO·Vᵀ − D)), and the
// tile's share of dQ = dS·K is added to dq with atomics. The block owns its dK and dV
// rows outright, grouped heads included, so it writes (or adds to) them without atomics.
// Shared: K, V [BK][MAXD+1], Q, dO [BQ][MAXD+1], Pᵀ and dSᵀ [BK][BQ+1], lse and D [BQ].
template <int MAXQK, int MAXV, int BK, int BQ>
static __device__ __forceinline__ void flash_bwd(const float *q, const float *k, const float *v, const float *dout,
                                                 const float *lse, const float *delta, float *dq, float *dk, float *dv,
                                                 int T, int H, int KV, int Dqk, int Dv, float scale, int accK, int accV) {
  constexpr int RM = BK / 16, CN = BQ / 8, DNK = MAXQK / 8, DNV = MAXV / 8, SQ = MAXQK + 1, SV = MAXV + 1, SP = BQ + 1;
  constexpr int TQ = FLASH_THREADS / BQ, QN = MAXQK / TQ;  // the dq share: TQ threads per query row
  static_assert(BK % 16 == 0 && BQ % 8 == 0 && BK % BQ == 0 && MAXQK % TQ == 0 && MAXQK % 8 == 0 && MAXV % 8 == 0,
                "flash_bwd tile shape");
  MOE_DYNAMIC_SHARED(float, smem);
  float *Ks = smem, *Vs = Ks + BK * SQ, *Qs = Vs + BK * SV, *dOs = Qs + BQ * SQ;
  float *Pt = dOs + BQ * SV, *dSt = Pt + BK * SP, *lseS = dSt + BK * SP, *deltaS = lseS + BQ;
  const int grp = threadIdx.x >> 3, lane = threadIdx.x & 7;
  const int j0 = blockIdx.x * BK, g = blockIdx.y, b = blockIdx.z, per = H / KV;
  const long long qs = (long long)H * Dqk, ks = (long long)KV * Dqk, vs = (long long)KV * Dv, os = (long long)H * Dv;
  const float *kb = k + (long long)b * T * ks + (long long)g * Dqk;
  const float *vb = v + (long long)b * T * vs + (long long)g * Dv;
  flash_load_rows<MAXQK, BK>(Ks, kb, ks, j0, T, Dqk);
  flash_load_rows<MAXV, BK>(Vs, vb, vs, j0, T, Dv);

  float dK[RM][DNK], dV[RM][DNV];
#pragma unroll
  for (int r = 0; r < RM; r++) {
#pragma unroll
    for (int e = 0; e < DNK; e++) dK[r][e] = 0.f;
#pragma unroll
    for (int e = 0; e < DNV; e++) dV[r][e] = 0.f;
  }
  const int qRow = threadIdx.x / TQ, qCol = threadIdx.x % TQ;
  for (int h = g * per; h < (g + 1) * per; h++) {
    const float *qb = q + (long long)b * T * qs + (long long)h * Dqk;
    const float *ob = dout + (long long)b * T * os + (long long)h * Dv;
    float *dqb = dq + (long long)b * T * qs + (long long)h * Dqk;
    const long long stat = ((long long)b * H + h) * T;
    for (int i0 = j0; i0 < T; i0 += BQ) {  // BQ divides BK: the first query tile starts at the key tile
      __syncthreads();  // the previous query tile's readers are done with Qs, dOs, Pt, dSt
      flash_load_rows<MAXQK, BQ>(Qs, qb, qs, i0, T, Dqk);
      flash_load_rows<MAXV, BQ>(dOs, ob, os, i0, T, Dv);
      for (int r = threadIdx.x; r < BQ; r += FLASH_THREADS) {
        lseS[r] = i0 + r < T ? lse[stat + i0 + r] : 0.f;
        deltaS[r] = i0 + r < T ? delta[stat + i0 + r] : 0.f;
      }
      __syncthreads();
      float s[RM][CN], dp[RM][CN];
#pragma unroll
      for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < CN; c++) s[r][c] = dp[r][c] = 0.f;
      if (MAXQK == MAXV) {  // one pass over the features for both products
#pragma unroll 8
        for (int d = 0; d < MAXQK; d++) {
          float kv[RM], vv[RM], qv[CN], gv[CN];
#pragma unroll
          for (int r = 0; r < RM; r++) {
            kv[r] = Ks[(grp * RM + r) * SQ + d];
            vv[r] = Vs[(grp * RM + r) * SV + d];
          }
#pragma unroll
          for (int c = 0; c < CN; c++) {
            qv[c] = Qs[(lane + 8 * c) * SQ + d];
            gv[c] = dOs[(lane + 8 * c) * SV + d];
          }
#pragma unroll
          for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < CN; c++) {
              s[r][c] += kv[r] * qv[c];
              dp[r][c] += vv[r] * gv[c];
            }
        }
      } else {  // latent attention: the query/key features, then the value features
#pragma unroll 8
        for (int d = 0; d < MAXQK; d++) {
          float kv[RM], qv[CN];
#pragma unroll
          for (int r = 0; r < RM; r++) kv[r] = Ks[(grp * RM + r) * SQ + d];
#pragma unroll
          for (int c = 0; c < CN; c++) qv[c] = Qs[(lane + 8 * c) * SQ + d];
#pragma unroll
          for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < CN; c++) s[r][c] += kv[r] * qv[c];
        }
#pragma unroll 8
        for (int d = 0; d < MAXV; d++) {
          float vv[RM], gv[CN];
#pragma unroll
          for (int r = 0; r < RM; r++) vv[r] = Vs[(grp * RM + r) * SV + d];
#pragma unroll
          for (int c = 0; c < CN; c++) gv[c] = dOs[(lane + 8 * c) * SV + d];
#pragma unroll
          for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < CN; c++) dp[r][c] += vv[r] * gv[c];
        }
      }
#pragma unroll
      for (int r = 0; r < RM; r++) {
        const int jr = grp * RM + r, j = j0 + jr;
#pragma unroll
        for (int c = 0; c < CN; c++) {
          const int ic = lane + 8 * c, i = i0 + ic;
          const float p = (i < T && j <= i) ? moe_expf(s[r][c] * scale - lseS[ic]) : 0.f;
          Pt[jr * SP + ic] = p;
          dSt[jr * SP + ic] = p * (dp[r][c] - deltaS[ic]);
        }
      }
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < BQ; c++) {
        float pv[RM], sv[RM], gv[DNV], qv[DNK];
#pragma unroll
        for (int r = 0; r < RM; r++) {
          pv[r] = Pt[(grp * RM + r) * SP + c];
          sv[r] = dSt[(grp * RM + r) * SP + c];
        }
#pragma unroll
        for (int e = 0; e < DNV; e++) gv[e] = dOs[c * SV + lane + 8 * e];
#pragma unroll
        for (int e = 0; e < DNK; e++) qv[e] = Qs[c * SQ + lane + 8 * e];
#pragma unroll
        for (int r = 0; r < RM; r++) {
#pragma unroll
          for (int e = 0; e < DNV; e++) dV[r][e] += pv[r] * gv[e];
#pragma unroll
          for (int e = 0; e < DNK; e++) dK[r][e] += sv[r] * qv[e];
        }
      }
      // This key tile's share of dq: rows i0.., TQ threads per row, features qCol + TQ·n.
      if (i0 + qRow < T) {
        float part[QN];
#pragma unroll
        for (int n = 0; n < QN; n++) part[n] = 0.f;
#pragma unroll 4
        for (int jr = 0; jr < BK; jr++) {
          const float sv = dSt[jr * SP + qRow];
#pragma unroll
          for (int n = 0; n < QN; n++) part[n] += sv * Ks[jr * SQ + qCol + TQ * n];
        }
#pragma unroll
        for (int n = 0; n < QN; n++) {
          const int d = qCol + TQ * n;
          if (d < Dqk) atomicAdd(&dqb[(long long)(i0 + qRow) * qs + d], part[n] * scale);
        }
      }
    }
  }
  float *dkb = dk + (long long)b * T * ks + (long long)g * Dqk;
  float *dvb = dv + (long long)b * T * vs + (long long)g * Dv;
#pragma unroll
  for (int r = 0; r < RM; r++) {
    const int j = j0 + grp * RM + r;
    if (j >= T) continue;
#pragma unroll
    for (int e = 0; e < DNK; e++) {
      const int d = lane + 8 * e;
      if (d >= Dqk) continue;
      const long long at = (long long)j * ks + d;
      const float gk = dK[r][e] * scale;
      dkb[at] = accK ? dkb[at] + gk : gk;
    }
#pragma unroll
    for (int e = 0; e < DNV; e++) {
      const int d = lane + 8 * e;
      if (d >= Dv) continue;
      const long long at = (long long)j * vs + d;
      const float gv = dV[r][e];
      dvb[at] = accV ? dvb[at] + gv : gv;
    }
  }
}

// One kernel per feature width, written out (no macro) so that each __global__ reads as
// the kernel table lists it. Tiles (forward BR × BC, backward BK × BQ) are flash.go's
// flashTiles; the two must agree.

extern "C" __global__ void flash_fwd_d16(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int KV, int Dh, float scale) {
  flash_fwd<16, 16, 64, 64>(q, k, v, o, keep, lse, T, H, KV, Dh, Dh, scale);
}
extern "C" __global__ void flash_bwd_d16(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int KV, int Dh, float scale, int accK, int accV) {
  flash_bwd<16, 16, 64, 32>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, KV, Dh, Dh, scale, accK, accV);
}

extern "C" __global__ void flash_fwd_d32(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int KV, int Dh, float scale) {
  flash_fwd<32, 32, 64, 64>(q, k, v, o, keep, lse, T, H, KV, Dh, Dh, scale);
}
extern "C" __global__ void flash_bwd_d32(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int KV, int Dh, float scale, int accK, int accV) {
  flash_bwd<32, 32, 64, 32>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, KV, Dh, Dh, scale, accK, accV);
}

extern "C" __global__ void flash_fwd_d64(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int KV, int Dh, float scale) {
  flash_fwd<64, 64, 64, 32>(q, k, v, o, keep, lse, T, H, KV, Dh, Dh, scale);
}
extern "C" __global__ void flash_bwd_d64(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int KV, int Dh, float scale, int accK, int accV) {
  flash_bwd<64, 64, 32, 32>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, KV, Dh, Dh, scale, accK, accV);
}

extern "C" __global__ void flash_fwd_d128(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int KV, int Dh, float scale) {
  flash_fwd<128, 128, 64, 16>(q, k, v, o, keep, lse, T, H, KV, Dh, Dh, scale);
}
extern "C" __global__ void flash_bwd_d128(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int KV, int Dh, float scale, int accK, int accV) {
  flash_bwd<128, 128, 32, 8>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, KV, Dh, Dh, scale, accK, accV);
}

// ---------------------------------------------------------------------------------------
// Multi-head latent attention (mla_train.go): the same forward and backward with the
// query/key width Dqk (qk_nope + qk_rope) apart from the value width Dv (v_head_dim), and
// one key/value head per query head. q and k are [B·T, H·Dqk], v, o and dout [B·T, H·Dv].
// One kernel pair per (MAXQK, MAXV), the narrowest both widths fit (flash.go's
// flashMLATiles); the widest, DeepSeek-V3's 192/128, takes smaller tiles to stay within
// 48 KiB of shared memory.

// The backward's first launch, as flash_bwd_prep with dq's rows Dqk wide and o's and
// dout's Dv.
extern "C" __global__ void flash_mla_bwd_prep(float* o, float* dout, float* delta, float* dq, int rows, int T, int H, int Dqk, int Dv, int accQ) {
  const int row = blockIdx.x * (FLASH_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;  // a whole warp leaves together
  const long long vbase = (long long)row * Dv, qbase = (long long)row * Dqk;
  float sum = 0.f;
  for (int d = lane; d < Dv; d += 32) sum += dout[vbase + d] * o[vbase + d];
  if (!accQ)
    for (int d = lane; d < Dqk; d += 32) dq[qbase + d] = 0.f;
#pragma unroll
  for (int w = 16; w > 0; w >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, w);
  if (lane == 0) {
    const int token = row / H, h = row % H, b = token / T, i = token % T;
    delta[((long long)b * H + h) * T + i] = sum;
  }
}

extern "C" __global__ void flash_mla_fwd_q32_v32(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int Dqk, int Dv, float scale) {
  flash_fwd<32, 32, 64, 64>(q, k, v, o, keep, lse, T, H, H, Dqk, Dv, scale);
}
extern "C" __global__ void flash_mla_bwd_q32_v32(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int Dqk, int Dv, float scale, int accK, int accV) {
  flash_bwd<32, 32, 64, 32>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, H, Dqk, Dv, scale, accK, accV);
}

extern "C" __global__ void flash_mla_fwd_q64_v64(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int Dqk, int Dv, float scale) {
  flash_fwd<64, 64, 64, 32>(q, k, v, o, keep, lse, T, H, H, Dqk, Dv, scale);
}
extern "C" __global__ void flash_mla_bwd_q64_v64(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int Dqk, int Dv, float scale, int accK, int accV) {
  flash_bwd<64, 64, 32, 32>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, H, Dqk, Dv, scale, accK, accV);
}

extern "C" __global__ void flash_mla_fwd_q128_v128(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int Dqk, int Dv, float scale) {
  flash_fwd<128, 128, 64, 16>(q, k, v, o, keep, lse, T, H, H, Dqk, Dv, scale);
}
extern "C" __global__ void flash_mla_bwd_q128_v128(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int Dqk, int Dv, float scale, int accK, int accV) {
  flash_bwd<128, 128, 32, 8>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, H, Dqk, Dv, scale, accK, accV);
}

extern "C" __global__ void flash_mla_fwd_q192_v128(float* q, float* k, float* v, float* o, float* keep, float* lse, int T, int H, int Dqk, int Dv, float scale) {
  flash_fwd<192, 128, 32, 16>(q, k, v, o, keep, lse, T, H, H, Dqk, Dv, scale);
}
extern "C" __global__ void flash_mla_bwd_q192_v128(float* q, float* k, float* v, float* dout, float* lse, float* delta, float* dq, float* dk, float* dv, int T, int H, int Dqk, int Dv, float scale, int accK, int accV) {
  flash_bwd<192, 128, 16, 8>(q, k, v, dout, lse, delta, dq, dk, dv, T, H, H, Dqk, Dv, scale, accK, accV);
}
