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

// ---------------------------------------------------------------------------------------
// Training: the attention that keeps its weights and the backward of the latent-attention
// ops (runtime/exec's MLAAttention, MLAAttentionBwd, MLAHeadsBwd and MLASplitBwd). q and k
// are [B·T, H·qk], v and o [B·T, H·vd], the weights p [B, H, T, T] (zero outside each
// query's keys), the scores' gradient ds a workspace of p's shape. A warp per (b, h, row).

// mla_row_of is the (b, h, i) a warp of an attention kernel takes, false past the rows.
static __device__ __forceinline__ bool mla_row_of(int B, int H, int T, long long *b, int *h, int *i) {
  long long w = (long long)blockIdx.x * MLA_WARPS + threadIdx.x / 32;
  if (w >= (long long)B * H * T) return false;
  *i = (int)(w % T);
  long long bh = w / T;
  *h = (int)(bh % H);
  *b = bh / H;
  return true;
}

// attention_train: p[b, h, i, ·] = softmax(scale·q_i·k_jᵀ) over the keys j the mask gives
// query i (lo..i), zero elsewhere; o_i = Σ_j p[i, j]·v_j.
__global__ void mla_attention_train(float *q, float *k, float *v, float *o, float *p, int B, int H, int T, int qk, int vd, float scale,
                                    int window, int chunk) {
  long long b;
  int h, i;
  if (!mla_row_of(B, H, T, &b, &h, &i)) return;
  int lane = threadIdx.x & 31, lo = mla_keys(i, window, chunk);
  long long kw = (long long)H * qk, vw = (long long)H * vd;
  const float *qi = q + (b * T + i) * kw + h * qk;
  const float *kb = k + b * T * kw + h * qk, *vb = v + b * T * vw + h * vd;
  float *pr = p + ((b * H + h) * T + i) * T;
  float mx = MLA_LOWEST;
  for (int j = lo + lane; j <= i; j += 32) {
    const float *kj = kb + j * kw;
    float d = 0.f;
    for (int c = 0; c < qk; c++) d += qi[c] * kj[c];
    d *= scale;
    pr[j] = d;
    mx = moe_fmaxf(mx, d);
  }
  for (int m = 16; m > 0; m >>= 1) mx = moe_fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
  float sum = 0.f;
  for (int j = lo + lane; j <= i; j += 32) {
    float e = moe_expf(pr[j] - mx);
    pr[j] = e;
    sum += e;
  }
  for (int m = 16; m > 0; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
  float inv = 1.f / sum;
  __syncwarp();  // the loop below takes the keys lane by lane from 0, not from lo
  for (int j = lane; j < T; j += 32) pr[j] = j >= lo && j <= i ? pr[j] * inv : 0.f;
  __syncwarp();
  float *oi = o + (b * T + i) * vw + h * vd;
  for (int c = lane; c < vd; c += 32) {
    float a = 0.f;
    for (int j = lo; j <= i; j++) a += pr[j] * vb[j * vw + c];
    oi[c] = a;
  }
}

// attention_bwd_q: the scores' gradient of query row i, ds[i, j] = p[i, j]·(dp[i, j] −
// Σ_j' p[i, j']·dp[i, j']) with dp[i, j] = do_i·v_j (zero outside its keys), and dq_i =
// scale·Σ_j ds[i, j]·k_j (written, or added when acc_q).
__global__ void mla_attention_bwd_q(float *dout, float *q, float *k, float *v, float *p, float *ds, float *dq, int B, int H, int T, int qk,
                                    int vd, float scale, int window, int chunk, int acc_q) {
  long long b;
  int h, i;
  if (!mla_row_of(B, H, T, &b, &h, &i)) return;
  int lane = threadIdx.x & 31, lo = mla_keys(i, window, chunk);
  long long kw = (long long)H * qk, vw = (long long)H * vd;
  const float *doi = dout + (b * T + i) * vw + h * vd;
  const float *kb = k + b * T * kw + h * qk, *vb = v + b * T * vw + h * vd;
  long long row = ((b * H + h) * T + i) * T;
  const float *pr = p + row;
  float *dr = ds + row;
  float s = 0.f;
  for (int j = lo + lane; j <= i; j += 32) {
    const float *vj = vb + j * vw;
    float d = 0.f;
    for (int c = 0; c < vd; c++) d += doi[c] * vj[c];
    dr[j] = d;
    s += pr[j] * d;
  }
  for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
  __syncwarp();
  for (int j = lane; j < T; j += 32) dr[j] = j >= lo && j <= i ? pr[j] * (dr[j] - s) : 0.f;
  __syncwarp();
  float *dqi = dq + (b * T + i) * kw + h * qk;
  for (int c = lane; c < qk; c += 32) {
    float a = 0.f;
    for (int j = lo; j <= i; j++) a += dr[j] * kb[j * kw + c];
    a *= scale;
    dqi[c] = acc_q ? dqi[c] + a : a;
  }
}

// attention_bwd_kv: key row j's gradients from the queries that see it (p and ds are zero
// where they do not): dv_j = Σ_i p[i, j]·do_i, dk_j = scale·Σ_i ds[i, j]·q_i (each written,
// or added when its acc).
__global__ void mla_attention_bwd_kv(float *dout, float *q, float *p, float *ds, float *dk, float *dv, int B, int H, int T, int qk, int vd,
                                     float scale, int acc_k, int acc_v) {
  long long b;
  int h, j;
  if (!mla_row_of(B, H, T, &b, &h, &j)) return;
  int lane = threadIdx.x & 31;
  long long kw = (long long)H * qk, vw = (long long)H * vd;
  const float *pb = p + (b * H + h) * T * T, *db = ds + (b * H + h) * T * T;
  const float *qb = q + b * T * kw + h * qk, *dob = dout + b * T * vw + h * vd;
  float *dvj = dv + (b * T + j) * vw + h * vd, *dkj = dk + (b * T + j) * kw + h * qk;
  for (int c = lane; c < vd; c += 32) {
    float a = 0.f;
    for (int i = j; i < T; i++) a += pb[(long long)i * T + j] * dob[i * vw + c];
    dvj[c] = acc_v ? dvj[c] + a : a;
  }
  for (int c = lane; c < qk; c += 32) {
    float a = 0.f;
    for (int i = j; i < T; i++) a += db[(long long)i * T + j] * qb[i * kw + c];
    a *= scale;
    dkj[c] = acc_k ? dkj[c] + a : a;
  }
}

// split_bwd: dkva[t] = [dlat[t] | dkpe[t]] (written, or added when acc).
__global__ void mla_split_bwd(float *dlat, float *dkpe, float *dkva, int rows, int rank, int rope, int acc) {
  int w = rank + rope;
  long long n = (long long)rows * w;
  for (long long i = mla_index(); i < n; i += mla_stride()) {
    long long t = i / w;
    int c = (int)(i % w);
    float g = c < rank ? dlat[t * rank + c] : dkpe[t * rope + c - rank];
    dkva[i] = acc ? dkva[i] + g : g;
  }
}

// heads_bwd: row t's head h of the heads' gradients back to q's (the rope features rotated
// back from the row's position t % T by tab, or copied where tab is null) and kv_b's
// ([k_nope | v] per head); each written, or added when its acc. One thread per (row, head,
// c) for c over nope channels, rope/2 pairs and vd values, as mla_heads.
__global__ void mla_heads_bwd(float *dqh, float *dkh, float *dvh, float *tab, float *dq, float *dkvb, int rows, int H, int nope, int rope,
                              int vd, int T, int positions, int acc_q, int acc_kv) {
  int half = rope / 2, qk = nope + rope, kvw = nope + vd, per = nope + half + vd;
  long long n = (long long)rows * H * per;
  for (long long i = mla_index(); i < n; i += mla_stride()) {
    int c = (int)(i % per);
    long long th = i / per;
    long long t = th / H;
    const float *gq = dqh + th * qk, *gk = dkh + th * qk;
    float *oq = dq + th * qk, *okv = dkvb + th * kvw;
    if (c < nope) {
      oq[c] = acc_q ? oq[c] + gq[c] : gq[c];
      okv[c] = acc_kv ? okv[c] + gk[c] : gk[c];
      continue;
    }
    c -= nope;
    if (c >= half) {
      c -= half;
      float g = dvh[th * vd + c];
      okv[nope + c] = acc_kv ? okv[nope + c] + g : g;
      continue;
    }
    float a = gq[nope + c], b = gq[nope + c + half], ra = a, rb = b;
    if (tab != 0) {
      int p = (int)(t % T);
      float cs = tab[p * half + c], sn = tab[(long long)positions * half + p * half + c];
      ra = a * cs + b * sn;
      rb = b * cs - a * sn;
    }
    oq[nope + c] = acc_q ? oq[nope + c] + ra : ra;
    oq[nope + c + half] = acc_q ? oq[nope + c + half] + rb : rb;
  }
}

// heads_bwd_pe: the shared rope key's gradient of row t, the heads' rope-feature
// gradients of dkh summed in head order and rotated back (as mla_heads_bwd); written, or
// added when acc. One thread per (row, pair).
__global__ void mla_heads_bwd_pe(float *dkh, float *tab, float *dkpe, int rows, int H, int nope, int rope, int T, int positions, int acc) {
  int half = rope / 2, qk = nope + rope;
  long long n = (long long)rows * half;
  for (long long i = mla_index(); i < n; i += mla_stride()) {
    int c = (int)(i % half);
    long long t = i / half;
    float a = 0.f, b = 0.f;
    for (int h = 0; h < H; h++) {
      const float *g = dkh + (t * H + h) * qk + nope;
      a += g[c];
      b += g[c + half];
    }
    float ra = a, rb = b;
    if (tab != 0) {
      int p = (int)(t % T);
      float cs = tab[p * half + c], sn = tab[(long long)positions * half + p * half + c];
      ra = a * cs + b * sn;
      rb = b * cs - a * sn;
    }
    float *o = dkpe + t * rope;
    o[c] = acc ? o[c] + ra : ra;
    o[c + half] = acc ? o[c + half] + rb : rb;
  }
}
