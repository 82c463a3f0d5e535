// The kernels of multi-head latent attention's inference ops (compiler/step's mla.go and
// feed_mla.go), with the semantics of runtime/exec's kernels_mla.go and kernels_feed_mla.go:
// the split of kv_a_proj_with_mqa's rows into the latent and the shared rope key, the
// assembly of each head's query, key and value (rotate-half rotary positions on the rope
// features only, at each row's position) and each row's attention over its sequence's
// per-head caches (a prefill's: over its prompt's own keys and values), whose keys
// (qk_nope+qk_rope features) and values (v_head_dim) differ in width. The latents' RMSNorm is dense_norm's; the caches' appends are kernels_decode.cu's.
#include "moec_step_device.h"

#define MLA_WARPS 4        // warps of an mla_attention_rows block, each over every 4th key
#define MLA_MAX_WIDTH 256  // the widest query/key or value head mla_attention_rows holds in registers
#define MLA_PER_LANE (MLA_MAX_WIDTH / 32)
#define MLA_LOWEST (-3.402823466e+38f) // the running maximum before any key

static __device__ __forceinline__ long long mla_index() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

static __device__ __forceinline__ long long mla_stride() {
  return (long long)gridDim.x * blockDim.x;
}

// split: lat[t, c] = kva[t, c] for c < rank and kpe[t, c] = kva[t, rank + c] for c < rope,
// for every row t of kva ([rows, rank + rope]).
__global__ void mla_split(float *kva, float *lat, float *kpe, int rows, int rank, int rope) {
  int w = rank + rope;
  long long n = (long long)rows * w;
  for (long long i = mla_index(); i < n; i += mla_stride()) {
    long long t = i / w;
    int c = (int)(i % w);
    if (c < rank)
      lat[t * rank + c] = kva[i];
    else
      kpe[t * rope + c - rank] = kva[i];
  }
}

// heads: row t's head h of q ([rows, H·(nope+rope)]), kv_b's output kvb ([rows,
// H·(nope+vd)], per head [k_nope | v]) and the shared rope key kpe ([rows, rope]) into
// qh = [q_nope | rot(q_pe)], kh = [k_nope | rot(k_pe)] and vh = v. rot rotates the rope
// features' halves to the row's position (pos[t], or t % T where pos is null) by tab (cos
// [positions, rope/2] then sin); a null tab (no rotary positions) copies them. One thread
// per (row, head, c) for c over nope channels, rope/2 pairs and vd values.
__global__ void mla_heads(float *q, float *kvb, float *kpe, int *pos, float *tab, float *qh, float *kh, float *vh, int rows,
                          int H, int nope, int rope, int vd, int T, int positions) {
  int half = rope / 2, qk = nope + rope, kvw = nope + vd, per = nope + half + vd;
  long long n = (long long)rows * H * per;
  for (long long i = mla_index(); i < n; i += mla_stride()) {
    int c = (int)(i % per);
    long long th = i / per;
    long long t = th / H;
    int h = (int)(th % H);
    const float *qs = q + (t * H + h) * qk, *kv = kvb + (t * H + h) * kvw;
    float *qo = qh + (t * H + h) * qk, *ko = kh + (t * H + h) * qk;
    if (c < nope) {
      qo[c] = qs[c];
      ko[c] = kv[c];
      continue;
    }
    c -= nope;
    if (c >= half) {
      c -= half;
      vh[(t * H + h) * vd + c] = kv[nope + c];
      continue;
    }
    const float *pe = kpe + t * rope;
    float qa = qs[nope + c], qb = qs[nope + c + half], ka = pe[c], kb = pe[c + half];
    if (tab == 0) {
      qo[nope + c] = qa;
      qo[nope + c + half] = qb;
      ko[nope + c] = ka;
      ko[nope + c + half] = kb;
      continue;
    }
    int p = pos != 0 ? pos[t] : (int)(t % T);
    float cs = tab[p * half + c], sn = tab[(long long)positions * half + p * half + c];
    qo[nope + c] = qa * cs - qb * sn;
    qo[nope + c + half] = qb * cs + qa * sn;
    ko[nope + c] = ka * cs - kb * sn;
    ko[nope + c + half] = kb * cs + ka * sn;
  }
}

// mla_keys is the first key position query position i sees: the last window keys
// (window > 0), the query's chunk (chunk > 0), else 0.
static __device__ __forceinline__ int mla_keys(int i, int window, int chunk) {
  if (chunk > 0) return i - i % chunk;
  if (window > 0) return i - window + 1 < 0 ? 0 : i - window + 1;
  return 0;
}

// attention_rows: out[r, h] = softmax(scale·q[r, h]·K[s, lo..pos[r], h]ᵀ)·V[s, lo..pos[r], h]
// for row r of sequence s = seq[r] (seq null: s = r, a decoding step), over the per-head
// caches kc ([sequences, max_len, H·qk]) and vc ([sequences, max_len, H·vd]), lo from the
// mask as decode_attention's; a row of sequence −1 (a feed's padding) writes zeros. With
// pos null, row r is position r % max_len of sequence r / max_len: a prefill's causal
// attention over its own keys and values ([sequences, T, ·] with max_len = T). One
// block of MLA_WARPS warps per (row, head): each warp runs an online softmax over every
// MLA_WARPS-th key, its lanes holding qk/32 channels of the query and vd/32 of the sum,
// and the warps' partial states are merged in shared memory.
__global__ void mla_attention_rows(float *q, float *kc, float *vc, int *pos, int *seq, float *out, int rows, int H, int qk,
                                   int vd, int max_len, float scale, int window, int chunk) {
  __shared__ float part_m[MLA_WARPS], part_l[MLA_WARPS];
  __shared__ float part_acc[MLA_WARPS][MLA_MAX_WIDTH];
  int r = blockIdx.x / H, h = blockIdx.x % H;
  int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  int s = pos == 0 ? r / max_len : seq != 0 ? seq[r] : r;
  float *oh = out + ((long long)r * H + h) * vd;
  if (s < 0) {
    for (int c = threadIdx.x; c < vd; c += blockDim.x) oh[c] = 0.f;
    return;
  }
  int i = pos == 0 ? r % max_len : pos[r], lo = mla_keys(i, window, chunk);
  const float *qr = q + ((long long)r * H + h) * qk;
  float qv[MLA_PER_LANE], acc[MLA_PER_LANE];
  for (int k = 0; k < MLA_PER_LANE; k++) {
    int c = lane + 32 * k;
    qv[k] = c < qk ? qr[c] : 0.f;
    acc[k] = 0.f;
  }
  float m = MLA_LOWEST, l = 0.f;
  long long kw = (long long)H * qk, vw = (long long)H * vd;
  const float *kb = kc + (long long)s * max_len * kw + h * qk;
  const float *vb = vc + (long long)s * max_len * vw + h * vd;
  for (int j = lo + warp; j <= i; j += MLA_WARPS) {
    const float *kj = kb + j * kw;
    float d = 0.f;
    for (int k = 0; k < MLA_PER_LANE; k++) {
      int c = lane + 32 * k;
      if (c < qk) d += qv[k] * kj[c];
    }
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    d *= scale;
    float mn = moe_fmaxf(m, d);
    float keep = moe_expf(m - mn), p = moe_expf(d - mn);
    l = l * keep + p;
    const float *vj = vb + j * vw;
    for (int k = 0; k < MLA_PER_LANE; k++) {
      int c = lane + 32 * k;
      if (c < vd) acc[k] = acc[k] * keep + p * vj[c];
    }
    m = mn;
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
  for (int k = 0; k < MLA_PER_LANE; k++) {
    int c = lane + 32 * k;
    if (c < vd) part_acc[warp][c] = acc[k];
  }
  __syncthreads();
  float mx = MLA_LOWEST;
  for (int w = 0; w < MLA_WARPS; w++) mx = moe_fmaxf(mx, part_m[w]);
  float sum = 0.f;
  for (int w = 0; w < MLA_WARPS; w++)
    if (part_l[w] > 0.f) sum += part_l[w] * moe_expf(part_m[w] - mx);
  for (int c = threadIdx.x; c < vd; c += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < MLA_WARPS; w++)
      if (part_l[w] > 0.f) v += part_acc[w][c] * moe_expf(part_m[w] - mx);
    oh[c] = v / sum;
  }
}
