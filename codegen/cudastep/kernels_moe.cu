// moec's step kernels for the MoE ops of a training step (moe.go lowers the ops to these
// launches): routing (scores, top-k, capacity, slots, the balance and z-loss terms),
// permutation into per-expert slots and back, the grouped expert products (one launch for
// all experts over the permuted rows), the experts' activation and the gated combination.
// Semantics are runtime/exec's kernels_moe.go, kernels_rows.go and kernels_act.go.
//
// The experts' rows. A route writes, besides its program outputs, a fill record into a
// workspace of its own (moe_fill_*): for each expert e its kept count, its first row, the
// end of its padding, and the exclusive prefix of its row tiles (MOE_TILE_M rows each):
//   int count[E], first[E], pad_end[E], tiles[E + 1]
// Blocked dispatch ([E, C, width]): first = e·C, pad_end = (e+1)·C. Packed ([rows, width]):
// first = the exclusive prefix sum of the counts, and the last expert's padding runs to
// the buffer's end. The expert kernels read it on the device, so no row past an expert's
// count is computed and no empty slot adds to a weight gradient: a grid is sized for the
// most tiles the dispatch can hold and a block past the filled tiles exits at once.
//
// Determinism: every slot is exactly runtime/exec's. Admission by capacity takes every
// token's first choice before any second choice, in token order; slots number an
// expert's admitted assignments in token order. Both are a stable rank of keys over a
// sequence (admission: the assignments choice-major; slots: token-major, a dropped
// assignment keyless), computed as per-chunk counts with in-chunk ranks (moe_route_rank),
// a scan of the counts over the chunks (moe_route_scan_*), and the sum (moe_route_slots):
// no atomics whose order varies.
#include "moec_step_device.h"

#define MOE_FULL_MASK 0xffffffffu
#define MOE_ROUTE_WARPS 4         // tokens (warps) per block of the routing kernels
#define MOE_ROUTE_LANE_MAX 64     // scores per lane: experts ≤ 32 × 64 = 2048
#define MOE_RANK_CHUNK 256        // keys per block of moe_route_rank (one per thread)
#define MOE_SCAN_THREADS 1024     // the single block of moe_route_scan_slot
#define MOE_TILE_M 64             // rows of a grouped-product tile (and of a fill tile)
#define MOE_TILE_N 64             // columns of a grouped-product tile
#define MOE_TILE_K 16             // the reduction step staged in shared memory
#define MOE_GEMM_THREADS 256      // 16 × 16 threads, 4 × 4 outputs each
#define MOE_ROW_WARPS 4           // rows (warps) per block of the row-moving kernels
#define MOE_ELEM_THREADS 256      // threads of the elementwise and padding kernels

// ---------------------------------------------------------------------------------------
// Shared helpers.

static __device__ __forceinline__ float moe_neg_inf() { return moe_bits_float(0xff800000u); }

static __device__ __forceinline__ float moe_warp_sum(float v) {
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(MOE_FULL_MASK, v, m);
  return v;
}

static __device__ __forceinline__ float moe_warp_max(float v) {
  for (int m = 16; m > 0; m >>= 1) v = moe_fmaxf(v, __shfl_xor_sync(MOE_FULL_MASK, v, m));
  return v;
}

typedef float moe_float4 __attribute__((ext_vector_type(4)));  // one 16-byte load or store

// moe_ld4 and moe_st4 move four floats at a 16-byte aligned address (every row of a
// buffer whose width is a multiple of 4: the arena places buffers 64-byte aligned). The
// emulation's host memory need not be aligned: it copies.
static __device__ __forceinline__ moe_float4 moe_ld4(const float *p) {
#if defined(MOEC_CPU_EMULATION)
  moe_float4 v;
  memcpy(&v, p, sizeof v);
  return v;
#else
  return *(const moe_float4 *)__builtin_assume_aligned(p, 16);
#endif
}

static __device__ __forceinline__ void moe_st4(float *p, moe_float4 v) {
#if defined(MOEC_CPU_EMULATION)
  memcpy(p, &v, sizeof v);
#else
  *(moe_float4 *)__builtin_assume_aligned(p, 16) = v;
#endif
}

// The fill record of a route (see the top of the file).
struct MoeFill {
  const int *count, *first, *pad_end, *tiles;
};

static __device__ __forceinline__ MoeFill moe_fill_of(const int *fill, int E) {
  MoeFill f;
  f.count = fill;
  f.first = fill + E;
  f.pad_end = fill + 2 * E;
  f.tiles = fill + 3 * E;
  return f;
}

// moe_find_tile maps a block's tile index to its expert and rows: the last expert whose
// first tile is at or before tile (a binary search over the tiles' prefix). It returns
// false past the filled tiles.
static __device__ __forceinline__ bool moe_find_tile(const MoeFill &f, int E, int tile, int *ex, long long *row0, int *rows) {
  if (tile >= f.tiles[E]) return false;
  int lo = 0, hi = E - 1;  // tiles[lo] <= tile < tiles[hi + 1]
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (f.tiles[mid] <= tile) lo = mid;
    else hi = mid - 1;
  }
  int part = tile - f.tiles[lo];
  *ex = lo;
  *row0 = (long long)f.first[lo] + (long long)part * MOE_TILE_M;
  int left = f.count[lo] - part * MOE_TILE_M;
  *rows = left < MOE_TILE_M ? left : MOE_TILE_M;
  return true;
}

// moe_block_exclusive_scan writes out[i] = Σ in[0..i) for i < n and returns the total to
// every thread. in and out may be the same array; every thread of the block calls it.
// Each thread scans a contiguous segment, the warps scan the segments' sums with shuffles,
// and warp 0 scans the warps' totals.
static __device__ int moe_block_exclusive_scan(const int *in, int *out, int n) {
  __shared__ int warp_total[32];
  __shared__ int grand_total;
  int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = (blockDim.x + 31) >> 5;
  int per = (n + blockDim.x - 1) / blockDim.x;
  int lo = tid * per, hi = lo + per < n ? lo + per : n;
  int sum = 0;
  for (int i = lo; i < hi; i++) sum += in[i];
  int incl = sum;
  for (int d = 1; d < 32; d <<= 1) {
    int o = __shfl_up_sync(MOE_FULL_MASK, incl, d);
    if (lane >= d) incl += o;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int v = lane < warps ? warp_total[lane] : 0, w = v;
    for (int d = 1; d < 32; d <<= 1) {
      int o = __shfl_up_sync(MOE_FULL_MASK, w, d);
      if (lane >= d) w += o;
    }
    if (lane < warps) warp_total[lane] = w - v;  // exclusive
    if (lane == 31) grand_total = w;
  }
  __syncthreads();
  int run = warp_total[warp] + incl - sum;
  for (int i = lo; i < hi; i++) {
    int v = in[i];
    out[i] = run;
    run += v;
  }
  int total = grand_total;
  __syncthreads();  // the shared totals are free for the next call
  return total;
}

// ---------------------------------------------------------------------------------------
// Routing.

// moe_route_token scores token t's experts and chooses its top K, one warp per token: the
// logits, then the scores, live in registers across the lanes (expert i·32 + lane in
// v[i]); the top K are K rounds of a warp argmax (ties to the lower index) over the
// experts not yet taken. Lane j writes choice j: its index and gate (renormalised by the
// gates' sum, in choice order as runtime/exec adds it, when normalize; then times scale,
// moe.routed_scale).
//
// DeepSeek-V3's routing (runtime/exec's kernels_route_groups.go and kernels_route_bias.go):
// with a selection bias the choice ranks score + bias[e] while the gates stay the unbiased
// scores; with groups > 0 the experts form groups of E/groups consecutive indices, a group
// scores its best key (with a bias, its two best summed), and only the experts of the
// topk_groups best groups (ties to the lower group) compete. Every lane computes the same
// group scores (butterfly reductions of each lane's two best), so the group choice needs no
// broadcast. groups ≤ 64.
template <int PER>
static __device__ __forceinline__ void moe_route_token(const float *z, const float *bias, int *idx, float *gates, float *sc, float *lse, int t,
                                                       int E, int K, int sigmoid, int normalize, int groups, int topk_groups, float scale) {
  int lane = threadIdx.x & 31;
  const float *zt = z + (long long)t * E;
  float v[PER];
  float mx = moe_neg_inf();
#pragma unroll
  for (int i = 0; i < PER; i++) {
    int ex = i * 32 + lane;
    v[i] = ex < E ? zt[ex] : moe_neg_inf();
    mx = moe_fmaxf(mx, v[i]);
  }
  mx = moe_warp_max(mx);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < PER; i++)
    if (i * 32 + lane < E) s += moe_expf(v[i] - mx);
  s = moe_warp_sum(s);
  float l = mx + moe_logf(s);
  if (lane == 0) lse[t] = l;
  float *st = sc + (long long)t * E;
  float key[PER];  // what the choice ranks: the score, plus the selection bias
#pragma unroll
  for (int i = 0; i < PER; i++) {
    int ex = i * 32 + lane;
    key[i] = moe_neg_inf();
    if (ex < E) {
      v[i] = sigmoid ? 1.f / (1.f + moe_expf(-v[i])) : moe_expf(v[i] - l);
      st[ex] = v[i];
      key[i] = bias ? v[i] + bias[ex] : v[i];
    }
  }
  unsigned long long allowed = ~0ull;  // the groups whose experts compete
  int size = groups > 0 ? E / groups : E;
  if (groups > 0) {
    allowed = 0;
    for (int r = 0; r < topk_groups; r++) {
      float bg = moe_neg_inf();
      int bgi = -1;
      for (int g = 0; g < groups; g++) {
        if ((allowed >> g) & 1ull) continue;
        float b1 = moe_neg_inf(), b2 = moe_neg_inf();
#pragma unroll
        for (int i = 0; i < PER; i++) {
          int ex = i * 32 + lane;
          if (ex < E && ex / size == g) {
            float k = key[i];
            if (k > b1) {
              b2 = b1;
              b1 = k;
            } else if (k > b2) {
              b2 = k;
            }
          }
        }
        for (int m = 16; m > 0; m >>= 1) {
          float o1 = __shfl_xor_sync(MOE_FULL_MASK, b1, m), o2 = __shfl_xor_sync(MOE_FULL_MASK, b2, m);
          float hi = moe_fmaxf(b1, o1), lo = b1 > o1 ? o1 : b1;
          b2 = moe_fmaxf(lo, moe_fmaxf(b2, o2));
          b1 = hi;
        }
        float gs = bias && size > 1 ? b1 + b2 : b1;
        if (bgi < 0 || gs > bg) {
          bg = gs;
          bgi = g;
        }
      }
      allowed |= 1ull << bgi;
    }
  }
  unsigned long long taken = 0;
  float gs = 0.f, mine = 0.f;
  int mine_ex = -1;
  for (int j = 0; j < K; j++) {
    float bk = moe_neg_inf(), bv = 0.f;
    int bi = 0x7fffffff;
#pragma unroll
    for (int i = 0; i < PER; i++) {
      int ex = i * 32 + lane;
      if (ex < E && !((taken >> i) & 1ull) && (groups <= 0 || ((allowed >> (ex / size)) & 1ull)) && key[i] > bk) {
        bk = key[i];
        bv = v[i];
        bi = ex;
      }
    }
    for (int m = 16; m > 0; m >>= 1) {
      float ok = __shfl_xor_sync(MOE_FULL_MASK, bk, m);
      float ov = __shfl_xor_sync(MOE_FULL_MASK, bv, m);
      int oi = __shfl_xor_sync(MOE_FULL_MASK, bi, m);
      if (ok > bk || (ok == bk && oi < bi)) {
        bk = ok;
        bv = ov;
        bi = oi;
      }
    }
    if ((bi & 31) == lane) taken |= 1ull << (bi >> 5);
    gs += bv;
    if (lane == j) {
      mine = bv;
      mine_ex = bi;
    }
  }
  if (lane < K) {
    float g = normalize ? mine / gs : mine;
    if (scale != 1.f) g *= scale;
    idx[(long long)t * K + lane] = mine_ex;
    gates[(long long)t * K + lane] = g;
  }
}

// moe_route_topk: a warp per token (MOE_ROUTE_WARPS tokens a block). Outputs the route's
// index [n, K], gates [n, K], scores [n, E] and log-sum-exp [n]. sigmoid picks the score
// function (else softmax); bias is the selection bias [E] or null; groups (0: none) and
// topk_groups limit the choice to the best groups; scale multiplies the gates.
// E ≤ 32·MOE_ROUTE_LANE_MAX, K ≤ 32, groups ≤ 64.
extern "C" __global__ void __launch_bounds__(32 * MOE_ROUTE_WARPS)
    moe_route_topk(const float *z, const float *bias, int *idx, float *gates, float *sc, float *lse, int n, int E, int K, int sigmoid,
                   int normalize, int groups, int topk_groups, float scale) {
  int t = blockIdx.x * MOE_ROUTE_WARPS + (threadIdx.x >> 5);
  if (t >= n) return;  // the whole warp
  int per = (E + 31) / 32;
#define MOE_ROUTE_TOKEN(P) moe_route_token<P>(z, bias, idx, gates, sc, lse, t, E, K, sigmoid, normalize, groups, topk_groups, scale)
  if (per <= 1) MOE_ROUTE_TOKEN(1);
  else if (per <= 2) MOE_ROUTE_TOKEN(2);
  else if (per <= 4) MOE_ROUTE_TOKEN(4);
  else if (per <= 8) MOE_ROUTE_TOKEN(8);
  else if (per <= 16) MOE_ROUTE_TOKEN(16);
  else if (per <= 32) MOE_ROUTE_TOKEN(32);
  else MOE_ROUTE_TOKEN(MOE_ROUTE_LANE_MAX);
#undef MOE_ROUTE_TOKEN
}

// moe_route_rank: one block per chunk of MOE_RANK_CHUNK positions of a key sequence of
// n·K positions. Admission pass (slot_pass 0): position p = j·n + t holds assignment
// (t, j)'s expert. Slot pass: position a = t·K + j holds its expert when the admission
// pass admitted it (its expert's admissions before its chunk, adm_base, plus its rank in
// the chunk, adm_rank, below capacity), else no key. Writes each position's rank among
// the chunk's earlier positions of the same key (−1 without a key) and the chunk's count
// of every key, cnt[chunk·E + e]. In-chunk ranks: a warp finds its lanes of equal key with
// shuffles; the warps then take turns over one shared count per key. Dynamic shared
// memory: E ints.
extern "C" __global__ void __launch_bounds__(MOE_RANK_CHUNK)
    moe_route_rank(const int *idx, int n, int K, int E, int slot_pass, const int *adm_rank, const int *adm_base, int capacity, int *rank,
                   int *cnt) {
  MOE_DYNAMIC_SHARED(int, hist);
  int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  long long N = (long long)n * K;
  for (int e = tid; e < E; e += blockDim.x) hist[e] = 0;
  long long p = (long long)blockIdx.x * MOE_RANK_CHUNK + tid;
  int key = -1;
  if (p < N) {
    if (!slot_pass) {
      long long j = p / n, t = p % n;
      key = idx[t * K + j];
    } else {
      int ex = idx[p];
      long long j = p % K, t = p / K, q = j * n + t;
      if (adm_base[(q / MOE_RANK_CHUNK) * E + ex] + adm_rank[q] < capacity) key = ex;
    }
  }
  unsigned same = 0;
  for (int l = 0; l < 32; l++) {
    int other = __shfl_sync(MOE_FULL_MASK, key, l);
    if (other == key) same |= 1u << l;
  }
  int below = __builtin_popcount(same & ((1u << lane) - 1u));
  __syncthreads();  // the counts are zero
  int r = -1;
  for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
    if (warp == w) {
      if (key >= 0) r = hist[key] + below;
      __syncwarp();
      if (key >= 0 && below == 0) hist[key] += __builtin_popcount(same);
    }
    __syncthreads();
  }
  if (p < N) rank[p] = r;
  for (int e = tid; e < E; e += blockDim.x) cnt[(long long)blockIdx.x * E + e] = hist[e];
}

// moe_route_scan_adm: a thread per expert turns the admission pass's chunk counts into
// each chunk's admissions before it (in place) and writes the expert's assignments,
// routed[e].
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS) moe_route_scan_adm(int *cnt, int chunks, int E, int *routed) {
  int ex = blockIdx.x * blockDim.x + threadIdx.x;
  if (ex >= E) return;
  int run = 0;
  for (int c = 0; c < chunks; c++) {
    int v = cnt[(long long)c * E + ex];
    cnt[(long long)c * E + ex] = run;
    run += v;
  }
  routed[ex] = run;
}

// moe_route_scan_slot: one block. The slot pass's chunk counts become each chunk's kept
// assignments before it (in place); each expert's total is its kept count (the program's
// kept[e]); then the fill record: first rows (packed: the parallel prefix sum of the kept
// counts; blocked: e·C), padding ends (rows: the packed buffer's rows) and tile prefix.
extern "C" __global__ void __launch_bounds__(MOE_SCAN_THREADS)
    moe_route_scan_slot(int *cnt, int chunks, int E, int packed, int C, int rows, int *kept, int *fill) {
  int *count = fill, *first = fill + E, *pad_end = fill + 2 * E, *tiles = fill + 3 * E;
  for (int ex = threadIdx.x; ex < E; ex += blockDim.x) {
    int run = 0;
    for (int c = 0; c < chunks; c++) {
      int v = cnt[(long long)c * E + ex];
      cnt[(long long)c * E + ex] = run;
      run += v;
    }
    kept[ex] = run;
    count[ex] = run;
    tiles[ex] = (run + MOE_TILE_M - 1) / MOE_TILE_M;
  }
  __syncthreads();
  if (packed) moe_block_exclusive_scan(count, first, E);
  int total_tiles = moe_block_exclusive_scan(tiles, tiles, E);
  for (int ex = threadIdx.x; ex < E; ex += blockDim.x) {
    if (!packed) first[ex] = ex * C;
    pad_end[ex] = packed ? (ex == E - 1 ? rows : first[ex] + count[ex]) : (ex + 1) * C;
  }
  if (threadIdx.x == 0) tiles[E] = total_tiles;
}

// moe_route_slots: each assignment's slot, its rank among its expert's kept assignments
// in token order (the chunks' before it plus its rank in its chunk), packed plus its
// expert's first row; −1 when dropped.
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS)
    moe_route_slots(const int *idx, const int *rank, const int *base, const int *fill, int n, int K, int E, int packed, int *slot) {
  long long a = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (a >= (long long)n * K) return;
  int r = rank[a];
  if (r < 0) {
    slot[a] = -1;
    return;
  }
  int ex = idx[a];
  int s = base[(a / MOE_RANK_CHUNK) * E + ex] + r;
  if (packed) s += fill[E + ex];
  slot[a] = s;
}

// moe_route_balance: each expert's balance term f_e·P_e = routed[e]/(n·K) · Σ_t sc[t, e]/n,
// a block per 32 experts (threadIdx.x the expert, threadIdx.y a stride of tokens), the
// column sums in double.
extern "C" __global__ void __launch_bounds__(256) moe_route_balance(const float *sc, const int *routed, int n, int E, int K, float *terms) {
  __shared__ double part[8][32];
  int ex = blockIdx.x * 32 + threadIdx.x;
  double s = 0;
  if (ex < E)
    for (int t = threadIdx.y; t < n; t += blockDim.y) s += (double)sc[(long long)t * E + ex];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && ex < E) {
    double pe = 0;
    for (int y = 0; y < (int)blockDim.y; y++) pe += part[y][threadIdx.x];
    terms[ex] = (float)((double)routed[ex] / ((double)n * K) * pe / n);
  }
}

// moe_block_sum adds a value of each thread of the block, in a fixed tree order.
static __device__ double moe_block_sum(double v) {
  __shared__ double red[256];
  red[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  double r = red[0];
  __syncthreads();
  return r;
}

// moe_route_loss: one block of 256. The route's loss terms aux = [E·Σ_e f_e·P_e,
// mean lse²] and, unless the routing is a recomputation, the step's statistics in the
// workspace stats (float balance, float z-loss, int dropped; scaled by the step's mean
// as runtime/exec reports them), which the host clears before a step and reads after.
extern "C" __global__ void __launch_bounds__(256) moe_route_loss(const float *terms, const float *lse, const int *kept, int n, int E, int K,
                                                              float scale, int recomputed, float *aux, float *stats) {
  double bal = 0, z = 0, k = 0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    bal += terms[e];
    k += kept[e];
  }
  for (int t = threadIdx.x; t < n; t += blockDim.x) z += (double)lse[t] * lse[t];
  bal = moe_block_sum(bal);
  z = moe_block_sum(z);
  k = moe_block_sum(k);
  if (threadIdx.x == 0) {
    aux[0] = (float)(E * bal);
    aux[1] = (float)(z / n);
    if (!recomputed) {
      stats[0] += (float)(E * bal * scale);
      stats[1] += (float)(z / n * scale);
      ((int *)stats)[2] += (int)((long long)n * K - (long long)k);
    }
  }
}

// moe_route_bwd: the router logits' gradient, a warp per token: the balance loss's
// balance_scale·routed[e], the gates' (through the renormalisation when normalize), the
// score function's Jacobian, and the z-loss's zcoef·lse·softmax (zcoef = 2·z_loss/n·scale);
// written, or added to dz when acc. The gates are routed_scale times the (renormalised)
// scores: the scores' gradient from gate j is routed_scale·dg_j (less the renormalisation's
// Σ dg·gate, which already holds the scale).
extern "C" __global__ void __launch_bounds__(32 * MOE_ROUTE_WARPS)
    moe_route_bwd(const float *dg, const float *z, const int *idx, const float *gates, const float *sc, const float *lse, const int *routed,
                  float *dz, int n, int E, int K, int sigmoid, int normalize, float balance_scale, float zcoef, float routed_scale, int acc) {
  int lane = threadIdx.x & 31;
  long long t = (long long)blockIdx.x * MOE_ROUTE_WARPS + (threadIdx.x >> 5);
  if (t >= n) return;
  const float *st = sc + t * E, *zt = z + t * E, *dgt = dg + t * K, *gt = gates + t * K;
  const int *ix = idx + t * K;
  float sum = 0.f, gdot = 0.f;
  if (normalize)
    for (int j = 0; j < K; j++) {
      sum += st[ix[j]];
      gdot += dgt[j] * gt[j];
    }
  float sd = 0.f;
  if (!sigmoid) {
    for (int ex = lane; ex < E; ex += 32) {
      float d = (float)routed[ex] * balance_scale;
      for (int j = 0; j < K; j++)
        if (ix[j] == ex) d += normalize ? (routed_scale * dgt[j] - gdot) / sum : routed_scale * dgt[j];
      sd += d * st[ex];
    }
    sd = moe_warp_sum(sd);
  }
  float c = zcoef * lse[t];
  float *row = dz + t * E;
  for (int ex = lane; ex < E; ex += 32) {
    float d = (float)routed[ex] * balance_scale;
    for (int j = 0; j < K; j++)
      if (ix[j] == ex) d += normalize ? (routed_scale * dgt[j] - gdot) / sum : routed_scale * dgt[j];
    float s = st[ex];
    d = sigmoid ? d * (s * (1.f - s)) : s * (d - sd);
    if (zcoef != 0.f) d += c * moe_expf(zt[ex] - lse[t]);
    row[ex] = acc ? row[ex] + d : d;
  }
}

// ---------------------------------------------------------------------------------------
// Moving rows: a warp per row, its lanes over the row's width (coalesced).

// moe_dispatch_row is assignment a's row of a dispatch buffer: blocked (C > 0) its
// expert's block plus its slot; packed, its slot. −1 when dropped.
static __device__ __forceinline__ long long moe_dispatch_row(const int *idx, const int *slot, long long a, int C) {
  int s = slot[a];
  if (s < 0) return -1;
  return C > 0 ? (long long)idx[a] * C + s : s;
}

// The row kernels move four floats per lane at a time when the width allows (D a
// multiple of 4), else one.

// moe_permute: a warp per assignment copies its token's row of h into its slot of send.
extern "C" __global__ void __launch_bounds__(32 * MOE_ROW_WARPS)
    moe_permute(const float *h, const int *idx, const int *slot, float *send, int n, int K, int C, int D) {
  long long a = (long long)blockIdx.x * MOE_ROW_WARPS + (threadIdx.x >> 5);
  if (a >= (long long)n * K) return;
  long long row = moe_dispatch_row(idx, slot, a, C);
  if (row < 0) return;
  const float *src = h + a / K * D;
  float *dst = send + row * D;
  int lane = threadIdx.x & 31;
  if ((D & 3) == 0)
    for (int i = 4 * lane; i < D; i += 128) moe_st4(dst + i, moe_ld4(src + i));
  else
    for (int i = lane; i < D; i += 32) dst[i] = src[i];
}

// moe_permute_bwd: a warp per token adds its kept assignments' rows of ds, in choice
// order, into (acc) or onto its row of dh.
extern "C" __global__ void __launch_bounds__(32 * MOE_ROW_WARPS)
    moe_permute_bwd(const float *ds, const int *idx, const int *slot, float *dh, int n, int K, int C, int D, int acc) {
  long long t = (long long)blockIdx.x * MOE_ROW_WARPS + (threadIdx.x >> 5);
  if (t >= n) return;
  float *dst = dh + t * D;
  int lane = threadIdx.x & 31;
  if ((D & 3) == 0) {
    for (int i = 4 * lane; i < D; i += 128) {
      moe_float4 v = acc ? moe_ld4(dst + i) : moe_float4(0.f);
      for (int j = 0; j < K; j++) {
        long long row = moe_dispatch_row(idx, slot, t * K + j, C);
        if (row >= 0) v += moe_ld4(ds + row * D + i);
      }
      moe_st4(dst + i, v);
    }
    return;
  }
  for (int i = lane; i < D; i += 32) {
    float v = acc ? dst[i] : 0.f;
    for (int j = 0; j < K; j++) {
      long long row = moe_dispatch_row(idx, slot, t * K + j, C);
      if (row >= 0) v += ds[row * D + i];
    }
    dst[i] = v;
  }
}

// moe_combine: a warp per token, y = Σ_j gate_j · back[row_j] over its kept assignments,
// added in choice order from zero.
extern "C" __global__ void __launch_bounds__(32 * MOE_ROW_WARPS)
    moe_combine(const float *back, const int *idx, const int *slot, const float *gates, float *y, int n, int K, int C, int D) {
  long long t = (long long)blockIdx.x * MOE_ROW_WARPS + (threadIdx.x >> 5);
  if (t >= n) return;
  float *dst = y + t * D;
  int lane = threadIdx.x & 31;
  if ((D & 3) == 0) {
    for (int i = 4 * lane; i < D; i += 128) {
      moe_float4 v = 0.f;
      for (int j = 0; j < K; j++) {
        long long row = moe_dispatch_row(idx, slot, t * K + j, C);
        if (row >= 0) v += gates[t * K + j] * moe_ld4(back + row * D + i);
      }
      moe_st4(dst + i, v);
    }
    return;
  }
  for (int i = lane; i < D; i += 32) {
    float v = 0.f;
    for (int j = 0; j < K; j++) {
      long long row = moe_dispatch_row(idx, slot, t * K + j, C);
      if (row >= 0) v += gates[t * K + j] * back[row * D + i];
    }
    dst[i] = v;
  }
}

// moe_combine_bwd: a warp per assignment writes its slot's gradient gate·dy and its
// gate's gradient ⟨dy, back[row]⟩ (0 when dropped), written or added (acc_gates).
extern "C" __global__ void __launch_bounds__(32 * MOE_ROW_WARPS)
    moe_combine_bwd(const float *dy, const float *back, const int *idx, const int *slot, const float *gates, float *dback, float *dgates, int n,
                    int K, int C, int D, int acc_gates) {
  long long a = (long long)blockIdx.x * MOE_ROW_WARPS + (threadIdx.x >> 5);
  if (a >= (long long)n * K) return;
  long long row = moe_dispatch_row(idx, slot, a, C);
  int lane = threadIdx.x & 31;
  float dg = 0.f;
  if (row >= 0) {
    const float *g = dy + a / K * D, *o = back + row * D;
    float *db = dback + row * D;
    float w = gates[a];
    if ((D & 3) == 0) {
      moe_float4 part = 0.f;
      for (int i = 4 * lane; i < D; i += 128) {
        moe_float4 v = moe_ld4(g + i);
        part += v * moe_ld4(o + i);
        moe_st4(db + i, w * v);
      }
      dg = (part.x + part.y) + (part.z + part.w);
    } else {
      for (int i = lane; i < D; i += 32) {
        float v = g[i];
        dg += v * o[i];
        db[i] = w * v;
      }
    }
    dg = moe_warp_sum(dg);
  }
  if (lane == 0) dgates[a] = acc_gates ? dgates[a] + dg : dg;
}

// moe_clear_padding: zeros the padding rows of an expert buffer of the given width, a
// block row per expert (grid.y strides over its padding).
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS) moe_clear_padding(float *buf, const int *fill, int E, int width) {
  MoeFill f = moe_fill_of(fill, E);
  int ex = blockIdx.x;
  long long lo = ((long long)f.first[ex] + f.count[ex]) * width, hi = (long long)f.pad_end[ex] * width;
  for (long long i = lo + (long long)blockIdx.y * blockDim.x + threadIdx.x; i < hi; i += (long long)gridDim.y * blockDim.x) buf[i] = 0.f;
}

// ---------------------------------------------------------------------------------------
// The experts' activation, over the filled rows only (a block per fill tile). The float32
// formulas are runtime/exec's (kernels_act.go): exp by a degree-7 polynomial, GELU
// through Abramowitz and Stegun's erf.

#define MOE_ACT_RELU 0
#define MOE_ACT_GELU 1
#define MOE_ACT_SILU 2

static __device__ __forceinline__ float moe_exp32(float x) {
  x = moe_fminf(moe_fmaxf(x, -87.33f), 88.f);
  float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - k * 0.693145751953125f - k * 1.42860682030941723212e-6f;
  float p = 1.f + r * (1.f + r * (1.f / 2 + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
  return p * moe_bits_float((unsigned)((int)k + 127) << 23);
}

static __device__ __forceinline__ void moe_normal_cdf(float x, float *cdf, float *pdf) {
  float e = moe_exp32(-0.5f * x * x);
  float z = x * 0.70710678118654752440f;
  if (z < 0) z = -z;
  float t = 1.f / (1.f + 0.3275911f * z);
  float tail = 0.5f * t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))) * e;
  *cdf = x >= 0 ? 1.f - tail : tail;
  *pdf = e * 0.39894228040143267794f;
}

// moe_act_value is act(x) and its derivative.
static __device__ __forceinline__ void moe_act_value(int act, float x, float *f, float *df) {
  if (act == MOE_ACT_RELU) {
    *f = x > 0 ? x : 0.f;
    *df = x > 0 ? 1.f : 0.f;
  } else if (act == MOE_ACT_GELU) {
    float cdf, pdf;
    moe_normal_cdf(x, &cdf, &pdf);
    *f = x * cdf;
    *df = cdf + x * pdf;
  } else {
    float sg = 1.f / (1.f + moe_exp32(-x));
    *f = x * sg;
    *df = sg * (1.f + x * (1.f - sg));
  }
}

// moe_act: h = act(a), or act(a)·u when u is not null, over each expert's filled rows.
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS)
    moe_act(const float *a, const float *u, float *h, const int *fill, int E, int width, int act) {
  MoeFill f = moe_fill_of(fill, E);
  int ex, rows;
  long long row0;
  if (!moe_find_tile(f, E, blockIdx.x, &ex, &row0, &rows)) return;
  long long base = row0 * width, end = (long long)rows * width;
  for (long long i = threadIdx.x; i < end; i += blockDim.x) {
    float x = a[base + i], v, d;
    moe_act_value(act, x, &v, &d);
    if (u) v *= u[base + i];
    h[base + i] = v;
  }
}

// moe_act_bwd: da (+)= dh·u·act'(a) and, gated (u not null), du (+)= dh·act(a), over the
// filled rows; each element is read before it is written, so outputs may alias inputs.
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS)
    moe_act_bwd(const float *dh, const float *a, const float *u, float *da, float *du, const int *fill, int E, int width, int act, int acc_a,
                int acc_u) {
  MoeFill f = moe_fill_of(fill, E);
  int ex, rows;
  long long row0;
  if (!moe_find_tile(f, E, blockIdx.x, &ex, &row0, &rows)) return;
  long long base = row0 * width, end = (long long)rows * width;
  for (long long i = threadIdx.x; i < end; i += blockDim.x) {
    float x = a[base + i], v, d;
    moe_act_value(act, x, &v, &d);
    float g = dh[base + i];
    if (u) {
      float ui = u[base + i];
      du[base + i] = acc_u ? du[base + i] + g * v : g * v;
      g *= ui;
    }
    da[base + i] = acc_a ? da[base + i] + g * d : g * d;
  }
}

// ---------------------------------------------------------------------------------------
// The grouped expert products, fp32 SIMT tiles: a block computes a MOE_TILE_M × MOE_TILE_N
// tile of C = A·B, staging MOE_TILE_K-deep slices of A and B in shared memory, each of
// its 16 × 16 threads a 4 × 4 of outputs (rows 4·ty.., columns 4·tx..), reading its
// operands from shared memory four at a time (a row of A's slice is one address for the
// 16 threads of a half-warp, a broadcast; B's are 16 consecutive 16-byte words).
//
// An operand element (i, kk), i its row of C (A) or column (B), kk along the reduction, is
// at p[i·ld + kk] when KMAJOR, else at p[kk·ld + i]; the loads run along whichever is
// contiguous. Rows past m, columns past n and depth past kred read zero.

#define MOE_TILE_PAD 4  // keeps each shared row 16-byte aligned


template <bool KMAJOR>
static __device__ __forceinline__ void moe_stage(float (*s)[MOE_TILE_M + MOE_TILE_PAD], const float *p, long long ld, int valid, int k0,
                                                 int kred) {
  for (int e = threadIdx.x; e < MOE_TILE_M * MOE_TILE_K; e += MOE_GEMM_THREADS) {
    int i = KMAJOR ? e / MOE_TILE_K : e % MOE_TILE_M;
    int kk = KMAJOR ? e % MOE_TILE_K : e / MOE_TILE_M;
    float v = 0.f;
    if (i < valid && k0 + kk < kred) v = KMAJOR ? p[(long long)i * ld + k0 + kk] : p[(long long)(k0 + kk) * ld + i];
    s[kk][i] = v;
  }
}

// moe_gemm_tile: acc[r][c] = Σ_kk A(4ty+r, kk)·B(kk, 4tx+c) over the tile.
template <bool AK, bool BK>
static __device__ __forceinline__ void moe_gemm_tile(const float *A, long long lda, int m, const float *B, long long ldb, int n, int kred,
                                                     float acc[4][4]) {
  __shared__ __attribute__((aligned(16))) float As[MOE_TILE_K][MOE_TILE_M + MOE_TILE_PAD];
  __shared__ __attribute__((aligned(16))) float Bs[MOE_TILE_K][MOE_TILE_N + MOE_TILE_PAD];
  int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int r = 0; r < 4; r++)
#pragma unroll
    for (int c = 0; c < 4; c++) acc[r][c] = 0.f;
  for (int k0 = 0; k0 < kred; k0 += MOE_TILE_K) {
    moe_stage<AK>(As, A, lda, m, k0, kred);
    moe_stage<BK>(Bs, B, ldb, n, k0, kred);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < MOE_TILE_K; kk++) {
      moe_float4 a4 = *(const moe_float4 *)__builtin_assume_aligned(&As[kk][4 * ty], 16);
      moe_float4 b4 = *(const moe_float4 *)__builtin_assume_aligned(&Bs[kk][4 * tx], 16);
      float av[4] = {a4.x, a4.y, a4.z, a4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
      for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] += av[r] * bv[c];
    }
    __syncthreads();
  }
}

// moe_gemm_store writes (or adds, acc) the tile's m × n valid outputs to C (row stride
// ldc), plus bias[column] when bias is not null.
static __device__ __forceinline__ void moe_gemm_store(float *C, long long ldc, int m, int n, const float acc[4][4], const float *bias, int add) {
  int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int r = 0; r < 4; r++) {
    int i = 4 * ty + r;
    if (i >= m) continue;
#pragma unroll
    for (int c = 0; c < 4; c++) {
      int j = 4 * tx + c;
      if (j >= n) continue;
      float v = acc[r][c];
      if (bias) v += bias[j];
      float *p = C + (long long)i * ldc + j;
      *p = add ? *p + v : v;
    }
  }
}

// moe_grouped_mm: y = x·W_eᵀ (+ b_e) over every expert's filled rows, one launch for all
// experts: blockIdx.x is a fill tile (its expert found from the tiles' prefix; blocks past
// the filled tiles exit), blockIdx.y a tile of the o outputs. w and b are tables of the
// experts' weight ([o, k]) and bias ([o]) addresses; b may be null.
extern "C" __global__ void __launch_bounds__(MOE_GEMM_THREADS)
    moe_grouped_mm(const float *x, float *y, const float *w, const float *b, const int *fill, int E, int o, int k) {
  MoeFill f = moe_fill_of(fill, E);
  int ex, rows;
  long long row0;
  if (!moe_find_tile(f, E, blockIdx.x, &ex, &row0, &rows)) return;
  const float *const *wt = (const float *const *)w;
  const float *const *bt = (const float *const *)b;
  int n0 = blockIdx.y * MOE_TILE_N, cols = o - n0 < MOE_TILE_N ? o - n0 : MOE_TILE_N;
  float acc[4][4];
  moe_gemm_tile<true, true>(x + row0 * k, k, rows, wt[ex] + (long long)n0 * k, k, cols, k, acc);
  moe_gemm_store(y + row0 * o + n0, o, rows, cols, acc, bt ? bt[ex] + n0 : nullptr, 0);
}

// moe_grouped_mm_dx: dx (+)= dy·W_e over every expert's filled rows (blockIdx.y a tile of
// the k inputs).
extern "C" __global__ void __launch_bounds__(MOE_GEMM_THREADS)
    moe_grouped_mm_dx(const float *dy, float *dx, const float *w, const int *fill, int E, int o, int k, int acc_dx) {
  MoeFill f = moe_fill_of(fill, E);
  int ex, rows;
  long long row0;
  if (!moe_find_tile(f, E, blockIdx.x, &ex, &row0, &rows)) return;
  const float *const *wt = (const float *const *)w;
  int n0 = blockIdx.y * MOE_TILE_N, cols = k - n0 < MOE_TILE_N ? k - n0 : MOE_TILE_N;
  float acc[4][4];
  moe_gemm_tile<true, false>(dy + row0 * o, o, rows, wt[ex] + n0, k, cols, o, acc);
  moe_gemm_store(dx + row0 * k + n0, k, rows, cols, acc, nullptr, acc_dx);
}

// moe_grouped_mm_dw: dW_e (+)= dyᵀ·x over expert e's filled rows only (blockIdx.z the
// expert, blockIdx.y a tile of the o outputs, blockIdx.x of the k inputs); an expert
// without rows writes zeros, or adds nothing.
extern "C" __global__ void __launch_bounds__(MOE_GEMM_THREADS)
    moe_grouped_mm_dw(const float *dy, const float *x, const float *dw, const int *fill, int E, int o, int k, int acc_dw) {
  MoeFill f = moe_fill_of(fill, E);
  int ex = blockIdx.z;
  float *const *wt = (float *const *)dw;
  long long first = f.first[ex];
  int rows = f.count[ex];
  int m0 = blockIdx.y * MOE_TILE_M, n0 = blockIdx.x * MOE_TILE_N;
  int m = o - m0 < MOE_TILE_M ? o - m0 : MOE_TILE_M, n = k - n0 < MOE_TILE_N ? k - n0 : MOE_TILE_N;
  float acc[4][4];
  moe_gemm_tile<false, false>(dy + first * o + m0, o, m, x + first * k + n0, k, n, rows, acc);
  moe_gemm_store(wt[ex] + (long long)m0 * k + n0, k, m, n, acc, nullptr, acc_dw);
}

// moe_grouped_bias_dw: db_e (+)= Σ over expert e's filled rows of dy, a thread per output
// adding the rows in order (blockIdx.y the expert).
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS)
    moe_grouped_bias_dw(const float *dy, const float *db, const int *fill, int E, int o, int acc_db) {
  MoeFill f = moe_fill_of(fill, E);
  int ex = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= o) return;
  float *const *bt = (float *const *)db;
  const float *g = dy + (long long)f.first[ex] * o + j;
  float v = acc_db ? bt[ex][j] : 0.f;
  for (int r = 0; r < f.count[ex]; r++) v += g[(long long)r * o];
  bt[ex][j] = v;
}

// ---------------------------------------------------------------------------------------
// Auxiliary-loss-free balancing (moe.aux_free_bias; runtime/exec's kernels_route_bias.go):
// the step's load count per expert and the selection bias's move after the optimizer.

// moe_expert_load: loads[e] = kept[e] (acc: loads[e] += kept[e]), a thread per expert.
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS) moe_expert_load(const int *kept, float *loads, int E, int acc) {
  int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  float v = (float)kept[e];
  loads[e] = acc ? loads[e] + v : v;
}

// moe_router_bias_update: the selection bias moves by rate·sign(mean load − load_e). Its
// element e is target[at + e] where that lies in [0, target_len) (a flat parameter shard
// holds part of it, or none). Each thread sums the loads itself, in expert order in
// double as runtime/exec does, so every thread compares with the same mean.
extern "C" __global__ void __launch_bounds__(MOE_ELEM_THREADS)
    moe_router_bias_update(const float *loads, float *target, int E, long long at, long long target_len, float rate) {
  int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  long long i = at + e;
  if (i < 0 || i >= target_len) return;
  double total = 0;
  for (int j = 0; j < E; j++) total += (double)loads[j];
  double mean = total / (double)E, v = (double)loads[e];
  if (v < mean) target[i] += rate;
  else if (v > mean) target[i] -= rate;
}
