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

// attn_decode: out[b, h] = softmax(scale·q[b, h]·K[b, lo..pos[b]]ᵀ)·V[b, lo..pos[b]] for
// the cache rows of head h's group (heads/kv heads per group), lo from the mask (window
// > 0: the last window keys; chunk > 0: the query's chunk; else 0), with sinks[h] (when
// not null) one more logit in the denominator. One block of DECODE_WARPS warps per
// (sequence, head): each warp runs an online softmax over every DECODE_WARPS-th key, its
// lanes holding dh/32 channels of the query and the sum, and the warps' partial states
// are merged in shared memory.
__global__ void decode_attention(float *q, float *kc, float *vc, int *pos, float *sinks, float *out, int B, int H,
                                 int KV, int dh, int max_len, float scale, int window, int chunk) {
  __shared__ float part_m[DECODE_WARPS], part_l[DECODE_WARPS];
  __shared__ float part_acc[DECODE_WARPS][DECODE_MAX_DH];
  int b = blockIdx.x / H, h = blockIdx.x % H;
  int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (b >= B) return;
  int g = h / (H / KV), kvd = KV * dh;
  int i = pos[b];
  int lo = 0;
  if (chunk > 0) {
    lo = i - i % chunk;
  } else if (window > 0) {
    lo = i - window + 1;
    if (lo < 0) lo = 0;
  }
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
  const float *kb = kc + (long long)b * max_len * kvd + g * dh;
  const float *vb = vc + (long long)b * max_len * kvd + g * dh;
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
