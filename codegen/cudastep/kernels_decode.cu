// The decoding kernels of the step program's inference ops (compiler/step's LowerPrefill and
// LowerDecode), with the semantics of runtime/exec's decode.go: the KV caches are
// [sequences, max_len, kv width] arena buffers kept from call to call; a prefill writes
// every prompt position into them, a decoding step one row per sequence at its own
// position (pos[b]) and attends one query row per sequence over the cache up to it.
#include "moec_step_device.h"

#define DECODE_WARPS 4      // warps of a decode_attention block, each over every 4th key
#define DECODE_MAX_DH 256   // the largest head width decode_attention holds in registers
#define DECODE_PER_LANE (DECODE_MAX_DH / 32)
#define DECODE_LOWEST (-3.402823466e+38f) // the running maximum before any key

static __device__ __forceinline__ long long decode_index() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

static __device__ __forceinline__ long long decode_stride() {
  return (long long)gridDim.x * blockDim.x;
}

// kv_write: cache[b, t, c] = src[b·T + t, c] for every prompt position t < T of every
// sequence b < B (rows of width values).
__global__ void decode_kv_write(float *src, float *cache, int B, int T, int max_len, int width) {
  long long per = (long long)T * width, n = (long long)B * per;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    long long b = i / per, r = i % per;
    cache[b * max_len * width + r] = src[i];
  }
}

// kv_append: cache[b, pos[b], c] = src[b, c].
__global__ void decode_kv_append(float *src, float *cache, int *pos, int B, int max_len, int width) {
  long long n = (long long)B * width;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    long long b = i / width, c = i % width;
    cache[(b * max_len + pos[b]) * width + c] = src[i];
  }
}

// last_rows: y[b, c] = x[b·T + lengths[b] − 1, c].
__global__ void decode_last_rows(float *x, int *lengths, float *y, int B, int T, int width) {
  long long n = (long long)B * width;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    long long b = i / width, c = i % width;
    y[i] = x[(b * T + lengths[b] - 1) * width + c];
  }
}

// rotary_at: rotates each head (of dh values, in halves) of row b of x by position pos[b]:
// tab holds cos [positions, dh/2] then sin.
__global__ void decode_rotary_at(float *x, float *tab, int *pos, int rows, int width, int dh, int positions) {
  int half = dh / 2, heads = width / dh;
  long long n = (long long)rows * heads * half;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    int k = (int)(i % half);
    long long rh = i / half;
    int r = (int)(rh / heads), h = (int)(rh % heads);
    int p = pos[r];
    float c = tab[p * half + k], s = tab[(long long)positions * half + p * half + k];
    float *v = x + (long long)r * width + h * dh;
    float a = v[k], b = v[k + half];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
  }
}

// kv_append_rows: cache[seq[r], pos[r], c] = src[r, c] for every row r of a feed whose
// sequence is not −1 (a padding row).
__global__ void decode_kv_append_rows(float *src, float *cache, int *pos, int *seq, int R, int max_len, int width) {
  long long n = (long long)R * width;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    long long r = i / width, c = i % width;
    int s = seq[r];
    if (s >= 0) cache[((long long)s * max_len + pos[r]) * width + c] = src[i];
  }
}

// pick_rows: y[b, c] = x[last[b], c], or 0 where last[b] is −1 (a sequence that sat out).
__global__ void decode_pick_rows(float *x, int *last, float *y, int S, int width) {
  long long n = (long long)S * width;
  for (long long i = decode_index(); i < n; i += decode_stride()) {
    long long b = i / width, c = i % width;
    int r = last[b];
    y[i] = r < 0 ? 0.f : x[(long long)r * width + c];
  }
}

// decode_keys is the first key position query position i sees: the last window keys
// (window > 0), the query's chunk (chunk > 0), else 0.
static __device__ __forceinline__ int decode_keys(int i, int window, int chunk) {
  if (chunk > 0) return i - i % chunk;
  if (window > 0) return i - window + 1 < 0 ? 0 : i - window + 1;
  return 0;
}

// attn_decode: out[b, h] = softmax(scale·q[b, h]·K[s, lo..pos[b]]ᵀ)·V[s, lo..pos[b]] for
// the cache rows of head h's group (heads/kv heads per group), lo from the mask (window
// > 0: the last window keys; chunk > 0: the query's chunk; else 0), with sinks[h] (when
// not null) one more logit in the denominator. One block of DECODE_WARPS warps per
// (sequence, head): each warp runs an online softmax over every DECODE_WARPS-th key, its
// lanes holding dh/32 channels of the query and the sum, and the warps' partial states
// are merged in shared memory. Row b reads sequence s = seq[b]'s caches (seq null: s = b,
// a decoding step); a row of sequence −1 (a feed's padding) writes zeros.
__global__ void decode_attention(float *q, float *kc, float *vc, int *pos, int *seq, float *sinks, float *out, int B,
                                 int H, int KV, int dh, int max_len, float scale, int window, int chunk) {
  __shared__ float part_m[DECODE_WARPS], part_l[DECODE_WARPS];
  __shared__ float part_acc[DECODE_WARPS][DECODE_MAX_DH];
  int b = blockIdx.x / H, h = blockIdx.x % H;
  int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (b >= B) return;
  int sq = seq != 0 ? seq[b] : b;
  if (sq < 0) {
    float *oh = out + ((long long)b * H + h) * dh;
    for (int c = threadIdx.x; c < dh; c += blockDim.x) oh[c] = 0.f;
    return;
  }
  int g = h / (H / KV), kvd = KV * dh;
  int i = pos[b];
  int lo = decode_keys(i, window, chunk);
  const float *qh = q + ((long long)b * H + h) * dh;
  float qr[DECODE_PER_LANE], acc[DECODE_PER_LANE];
  for (int r = 0; r < DECODE_PER_LANE; r++) {
    int c = lane + 32 * r;
    qr[r] = c < dh ? qh[c] : 0.f;
    acc[r] = 0.f;
  }
  float m = DECODE_LOWEST, l = 0.f;
  if (sinks != 0 && warp == 0) {
    m = sinks[h];
    l = 1.f;
  }
  const float *kb = kc + (long long)sq * max_len * kvd + g * dh;
  const float *vb = vc + (long long)sq * max_len * kvd + g * dh;
  for (int j = lo + warp; j <= i; j += DECODE_WARPS) {
    const float *kj = kb + (long long)j * kvd;
    float s = 0.f;
    for (int r = 0; r < DECODE_PER_LANE; r++) {
      int c = lane + 32 * r;
      if (c < dh) s += qr[r] * kj[c];
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= scale;
    float mn = moe_fmaxf(m, s);
    float keep = moe_expf(m - mn), p = moe_expf(s - mn);
    l = l * keep + p;
    const float *vj = vb + (long long)j * kvd;
    for (int r = 0; r < DECODE_PER_LANE; r++) {
      int c = lane + 32 * r;
      if (c < dh) acc[r] = acc[r] * keep + p * vj[c];
    }
    m = mn;
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
  for (int r = 0; r < DECODE_PER_LANE; r++) {
    int c = lane + 32 * r;
    if (c < dh) part_acc[warp][c] = acc[r];
  }
  __syncthreads();
  float mx = DECODE_LOWEST;
  for (int w = 0; w < DECODE_WARPS; w++) mx = moe_fmaxf(mx, part_m[w]);
  float sum = 0.f;
  for (int w = 0; w < DECODE_WARPS; w++)
    if (part_l[w] > 0.f) sum += part_l[w] * moe_expf(part_m[w] - mx);
  float *oh = out + ((long long)b * H + h) * dh;
  for (int c = threadIdx.x; c < dh; c += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < DECODE_WARPS; w++)
      if (part_l[w] > 0.f) v += part_acc[w][c] * moe_expf(part_m[w] - mx);
    oh[c] = v / sum;
  }
}

// attention_mixed: attn_decode with talking heads, which mix every head's scores before
// the softmax (pre[h, g]) and its weights after it (post[h, g]), so no head's softmax runs
// on its own: one block per row b holds the row's scores of every head over its keys in
// work ([B, 2, H, max_len]: the scores, then the mixed ones), a warp per head takes the
// softmax (with sinks[h] one more logit in the denominator, when not null), and the
// block sums the post-mixed weights times the values. Sequences and masks as
// decode_attention's.
__global__ void decode_attention_mixed(float *q, float *kc, float *vc, int *pos, int *seq, float *pre, float *post,
                                       float *sinks, float *out, float *work, int B, int H, int KV, int dh,
                                       int max_len, float scale, int window, int chunk) {
  int b = blockIdx.x;
  if (b >= B) return;
  int sq = seq != 0 ? seq[b] : b;
  float *ob = out + (long long)b * H * dh;
  if (sq < 0) {
    for (int c = threadIdx.x; c < H * dh; c += blockDim.x) ob[c] = 0.f;
    return;
  }
  int i = pos[b], lo = decode_keys(i, window, chunk), span = i - lo + 1;
  int group = H / KV, kvd = KV * dh;
  float *sc = work + (long long)b * 2 * H * max_len, *mx = sc + (long long)H * max_len;
  const float *kb = kc + ((long long)sq * max_len + lo) * kvd, *vb = vc + ((long long)sq * max_len + lo) * kvd;
  const float *qb = q + (long long)b * H * dh;
  for (int at = threadIdx.x; at < H * span; at += blockDim.x) {
    int h = at / span, j = at % span;
    const float *qh = qb + h * dh, *kj = kb + (long long)j * kvd + (h / group) * dh;
    float d = 0.f;
    for (int c = 0; c < dh; c++) d += qh[c] * kj[c];
    sc[h * span + j] = scale * d;
  }
  __syncthreads();
  for (int at = threadIdx.x; at < H * span; at += blockDim.x) {
    int h = at / span, j = at % span;
    float v = 0.f;
    for (int g = 0; g < H; g++) v += pre[h * H + g] * sc[g * span + j];
    mx[h * span + j] = v;
  }
  __syncthreads();
  int warp = threadIdx.x / 32, lane = threadIdx.x & 31, warps = blockDim.x / 32;
  for (int h = warp; h < H; h += warps) {
    float *row = mx + h * span;
    float m = sinks != 0 ? sinks[h] : DECODE_LOWEST;
    for (int j = lane; j < span; j += 32) m = moe_fmaxf(m, row[j]);
    for (int o = 16; o > 0; o >>= 1) m = moe_fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    for (int j = lane; j < span; j += 32) {
      float e = moe_expf(row[j] - m);
      row[j] = e;
      sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (sinks != 0) sum += moe_expf(sinks[h] - m);
    for (int j = lane; j < span; j += 32) row[j] /= sum;
  }
  __syncthreads();
  for (int at = threadIdx.x; at < H * span; at += blockDim.x) {
    int h = at / span, j = at % span;
    float v = 0.f;
    for (int g = 0; g < H; g++) v += post[h * H + g] * mx[g * span + j];
    sc[h * span + j] = v;
  }
  __syncthreads();
  for (int at = threadIdx.x; at < H * dh; at += blockDim.x) {
    int h = at / dh, c = at % dh;
    const float *p = sc + h * span, *vh = vb + (h / group) * dh + c;
    float v = 0.f;
    for (int j = 0; j < span; j++) v += p[j] * vh[(long long)j * kvd];
    ob[at] = v;
  }
}
