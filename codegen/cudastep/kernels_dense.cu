#include "moec_step_device.h"

// The dense fp32 SIMT kernels of the step program: the reference path, with the semantics
// of runtime/exec's kernels (kernels.go, kernels_rows.go, kernels_attention.go,
// kernels_act.go, kernels_loss.go and runtime/optim's fused AdamW). A row reduction runs on
// one warp per row (warp shuffles), a column sum on one thread per column in row order (the
// executor's order, so the sums match it), the matrix products on one shared-memory tiled
// kernel (dense_gemm) batched over sequences and heads.
//
// Sums the executor keeps in float64 (the gradient norm, the loss's mean) are kept in
// double here, in workspace slots the host reads: the pointer parameters are float*, and
// such a slot is two floats of its workspace.

#define DENSE_TILE_MN 64 // a dense_gemm block's output tile is 64×64
#define DENSE_TILE_K 16  // over slices of 16 of the reduced dimension
#define DENSE_ROWS_PER_BLOCK 4 // warps per block of the warp-per-row kernels

static __device__ __forceinline__ float dense_warp_sum(float v) {
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

static __device__ __forceinline__ float dense_warp_max(float v) {
  for (int m = 16; m > 0; m >>= 1) v = moe_fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

static __device__ __forceinline__ long long dense_index() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

static __device__ __forceinline__ long long dense_stride() {
  return (long long)gridDim.x * blockDim.x;
}

// y[i] = 0.
__global__ void dense_zero(float *y, long long n) {
  for (long long i = dense_index(); i < n; i += dense_stride()) y[i] = 0.f;
}

// y[i] = x[i].
__global__ void dense_copy(float *y, float *x, long long n) {
  for (long long i = dense_index(); i < n; i += dense_stride()) y[i] = x[i];
}

// y[i] = a[i] + b[i] (the residual sum).
__global__ void dense_add(float *y, float *a, float *b, long long n) {
  for (long long i = dense_index(); i < n; i += dense_stride()) y[i] = a[i] + b[i];
}

// g[i] += dy[i] (a gradient's second contribution).
__global__ void dense_accumulate(float *g, float *dy, long long n) {
  for (long long i = dense_index(); i < n; i += dense_stride()) g[i] += dy[i];
}

// x[t] = the table's row of token t (ids less first; positions: row t mod T), zeros for a
// row the table does not hold. One block per token.
__global__ void dense_embed(int *tok, float *table, float *x, int n, int w, int rows, int first, int T, int positions) {
  int t = blockIdx.x;
  if (t >= n) return;
  int row = positions ? t % T : tok[t] - first;
  float *dst = x + (long long)t * w;
  if (row < 0 || row >= rows) {
    for (int j = threadIdx.x; j < w; j += blockDim.x) dst[j] = 0.f;
    return;
  }
  const float *src = table + (long long)row * w;
  for (int j = threadIdx.x; j < w; j += blockDim.x) dst[j] = src[j];
}

// dw[row(t)] += dx[t] for every token t in order: one thread per column, so the adds into a
// row land in token order as the executor's do (dw cleared first unless accumulating).
__global__ void dense_embed_bwd(float *dx, int *tok, float *dw, int n, int w, int rows, int first, int T, int positions) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= w) return;
  for (int t = 0; t < n; t++) {
    int row = positions ? t % T : tok[t] - first;
    if (row < 0 || row >= rows) continue;
    dw[(long long)row * w + j] += dx[(long long)t * w + j];
  }
}

// Each row's mean (LayerNorm's; the norm's backward reads it). One warp per row.
__global__ void dense_row_mean(float *x, float *mean, int rows, int d) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *xi = x + (long long)r * d;
  float s = 0.f;
  for (int j = lane; j < d; j += 32) s += xi[j];
  s = dense_warp_sum(s);
  if (lane == 0) mean[r] = s / (float)d;
}

// h = (x − mean)·rstd·w (+ b), rstd = 1/√(mean((x − mean)²) + eps); mean is 0 for RMSNorm
// (layer 0). One warp per row.
__global__ void dense_norm(float *x, float *w, float *b, float *h, float *rstd, int rows, int d, float eps, int layer) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *xi = x + (long long)r * d;
  float *hi = h + (long long)r * d;
  float mean = 0.f;
  if (layer) {
    float s = 0.f;
    for (int j = lane; j < d; j += 32) s += xi[j];
    mean = dense_warp_sum(s) / (float)d;
  }
  float ss = 0.f;
  for (int j = lane; j < d; j += 32) {
    float c = xi[j] - mean;
    ss += c * c;
  }
  ss = dense_warp_sum(ss);
  float rs = 1.0f / moe_sqrtf(ss / (float)d + eps);
  if (lane == 0) rstd[r] = rs;
  for (int j = lane; j < d; j += 32) {
    float v = (xi[j] - mean) * rs * w[j];
    if (b) v += b[j];
    hi[j] = v;
  }
}

// The norm's input gradient, dx (+)= rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dh·w
// (mean(g) only for LayerNorm; mean is NULL for RMSNorm). One warp per row.
__global__ void dense_norm_bwd_dx(float *dh, float *x, float *w, float *rstd, float *mean, float *dx, int rows, int d, int acc) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *xi = x + (long long)r * d, *dyi = dh + (long long)r * d;
  float *dxi = dx + (long long)r * d;
  float mu = mean ? mean[r] : 0.f, rs = rstd[r];
  float sumG = 0.f, sumGX = 0.f;
  for (int j = lane; j < d; j += 32) {
    float gh = dyi[j] * w[j];
    sumG += gh;
    sumGX += gh * ((xi[j] - mu) * rs);
  }
  float meanG = mean ? dense_warp_sum(sumG) / (float)d : 0.f;
  float meanGX = dense_warp_sum(sumGX) / (float)d;
  for (int j = lane; j < d; j += 32) {
    float gh = dyi[j] * w[j];
    float xh = (xi[j] - mu) * rs;
    float v = rs * (gh - meanG - xh * meanGX);
    dxi[j] = acc ? dxi[j] + v : v;
  }
}

// The norm's scale (and bias) gradients, dw += Σ_rows dh·x̂ and db += Σ_rows dh: one thread
// per column, rows in order (cleared first unless accumulating).
__global__ void dense_norm_bwd_dw(float *dh, float *x, float *rstd, float *mean, float *dw, float *db, int rows, int d) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float sw = dw[j], sb = db ? db[j] : 0.f;
  for (int r = 0; r < rows; r++) {
    float g = dh[(long long)r * d + j];
    float mu = mean ? mean[r] : 0.f;
    sw += g * ((x[(long long)r * d + j] - mu) * rstd[r]);
    sb += g;
  }
  dw[j] = sw;
  if (db) db[j] = sb;
}

// C = alpha·op(A)·op(B) + beta·C (+ bias per column): a 64×64 output tile per block of
// 16×16 threads, each thread 4×4 outputs in registers (rows ty + 16i, columns tx + 16j),
// over 16-wide slices of K staged in shared memory with coalesced loads for either
// layout of each operand. Batched over blockIdx.z = batch·units + unit: the unit's head is
// unit·head_mul + head_add, its key/value head head/group, and each operand's base moves
// by batch·sB + head·sH + kv·sG. causal: the output's entries above the diagonal
// (col > row) are zero (or left as they are when beta is not 0): the causal attention maps.
__global__ void dense_gemm(float *A, float *B, float *C, float *bias, int M, int N, int K, int lda, int ldb, int ldc,
                           int transA, int transB, float alpha, float beta, int causal, int units, int head_mul,
                           int head_add, int group, long long aB, long long aH, long long aG, long long bB,
                           long long bH, long long bG, long long cB, long long cH, long long cG) {
  __shared__ float As[DENSE_TILE_K][DENSE_TILE_MN + 4];
  __shared__ float Bs[DENSE_TILE_K][DENSE_TILE_MN + 4];
  int z = blockIdx.z, batch = z / units, head = (z % units) * head_mul + head_add, kv = head / group;
  A += batch * aB + head * aH + kv * aG;
  B += batch * bB + head * bH + kv * bG;
  C += batch * cB + head * cH + kv * cG;
  int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
  int row0 = blockIdx.y * DENSE_TILE_MN, col0 = blockIdx.x * DENSE_TILE_MN;
  float acc[4][4];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < K; k0 += DENSE_TILE_K) {
    for (int r = 0; r < 4; r++) {
      int e = tid + 256 * r;
      // A's tile [64 rows, 16 k]: k fastest when A is row-major, rows fastest when transposed.
      int ar = transA ? e % DENSE_TILE_MN : e / DENSE_TILE_K, ak = transA ? e / DENSE_TILE_MN : e % DENSE_TILE_K;
      int gr = row0 + ar, gk = k0 + ak;
      As[ak][ar] = (gr < M && gk < K) ? (transA ? A[(long long)gk * lda + gr] : A[(long long)gr * lda + gk]) : 0.f;
      // B's tile [16 k, 64 columns]: columns fastest, k fastest when transposed.
      int bc = transB ? e / DENSE_TILE_K : e % DENSE_TILE_MN, bk = transB ? e % DENSE_TILE_K : e / DENSE_TILE_MN;
      int gc = col0 + bc;
      gk = k0 + bk;
      Bs[bk][bc] = (gc < N && gk < K) ? (transB ? B[(long long)gc * ldb + gk] : B[(long long)gk * ldb + gc]) : 0.f;
    }
    __syncthreads();
    for (int kk = 0; kk < DENSE_TILE_K; kk++) {
      float a[4], b[4];
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; i++) {
    int row = row0 + ty + 16 * i;
    if (row >= M) continue;
    for (int j = 0; j < 4; j++) {
      int col = col0 + tx + 16 * j;
      if (col >= N) continue;
      float *c = C + (long long)row * ldc + col;
      if (causal && col > row) {
        if (beta == 0.f) *c = 0.f;
        continue;
      }
      float v = alpha * acc[i][j];
      if (beta != 0.f) v += beta * *c;
      if (bias) v += bias[col];
      *c = v;
    }
  }
}

// db[j] += Σ_rows dy[r][j]: the bias gradient, one thread per column, rows in order.
__global__ void dense_col_sum(float *dy, float *db, int rows, int cols) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  float s = db[j];
  for (int r = 0; r < rows; r++) s += dy[(long long)r * cols + j];
  db[j] = s;
}

// Rotary positions in place (rotate-half layout) on x [tokens, width], width a multiple of
// dh; tab holds cos [T, dh/2] then sin [T, dh/2]; inverse rotates back (the backward).
__global__ void dense_rotary(float *x, float *tab, int tokens, int width, int T, int dh, int inverse) {
  int half = dh / 2;
  long long n = (long long)tokens * (width / dh) * half;
  for (long long i = dense_index(); i < n; i += dense_stride()) {
    int k = (int)(i % half);
    long long th = i / half;
    int heads = width / dh;
    int t = (int)(th / heads), h = (int)(th % heads);
    int pos = t % T;
    float c = tab[pos * half + k], s = tab[T * half + pos * half + k];
    if (inverse) s = -s;
    float *v = x + (long long)t * width + h * dh;
    float a = v[k], b = v[k + half];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
  }
}

// The causal softmax of each [T]-row of s (row r is query r mod T): p[j] for j ≤ i, zeros
// after. One warp per row.
__global__ void dense_softmax(float *s, float *p, int rows, int T) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  int i = r % T;
  const float *src = s + (long long)r * T;
  float *dst = p + (long long)r * T;
  float mx = src[0];
  for (int j = lane; j <= i; j += 32) mx = moe_fmaxf(mx, src[j]);
  mx = dense_warp_max(mx);
  float sum = 0.f;
  for (int j = lane; j <= i; j += 32) {
    float e = moe_expf(src[j] - mx);
    dst[j] = e;
    sum += e;
  }
  float inv = 1.0f / dense_warp_sum(sum);
  for (int j = lane; j < T; j += 32) dst[j] = j <= i ? dst[j] * inv : 0.f;
}

// dS = P ⊙ (dP − rowsum(dP ⊙ P)) on the causal part, written (zeros after) or added to.
// One warp per row.
__global__ void dense_softmax_bwd(float *dp, float *p, float *ds, int rows, int T, int acc) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  int i = r % T;
  const float *pr = p + (long long)r * T, *gr = dp + (long long)r * T;
  float *dr = ds + (long long)r * T;
  float s = 0.f;
  for (int j = lane; j <= i; j += 32) s += pr[j] * gr[j];
  s = dense_warp_sum(s);
  for (int j = lane; j < T; j += 32) {
    if (j <= i) {
      float v = pr[j] * (gr[j] - s);
      dr[j] = acc ? dr[j] + v : v;
    } else if (!acc) {
      dr[j] = 0.f;
    }
  }
}

// e^x as runtime/exec's exp32: x = k·ln2 + r, e^r by its degree-7 Taylor polynomial, 2^k in
// the exponent bits; x clamped to [−87.33, 88].
static __device__ __forceinline__ float dense_exp32(float x) {
  const float log2e = 1.44269504088896341f, ln2hi = 0.693145751953125f, ln2lo = 1.42860682030941723212e-6f;
  x = moe_fminf(moe_fmaxf(x, -87.33f), 88.f);
  float y = x * log2e + 0.5f;
  int k = (int)y;
  if ((float)k > y) k--;
  float kf = (float)k;
  float r = x - kf * ln2hi - kf * ln2lo;
  float p = 1.f + r * (1.f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  return p * moe_bits_float((unsigned)(k + 127) << 23);
}

// Φ(x) and φ(x) as runtime/exec's normalCDF (Abramowitz and Stegun 7.1.26).
static __device__ __forceinline__ void dense_normal_cdf(float x, float *cdf, float *pdf) {
  float e = dense_exp32(-0.5f * x * x);
  float z = x * 0.70710678118654752440f;
  if (z < 0) z = -z;
  float t = 1.f / (1.f + 0.3275911f * z);
  float tail = 0.5f * t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))) * e;
  *cdf = x >= 0 ? 1.f - tail : tail;
  *pdf = e * 0.39894228040143267794f;
}

// The activation and its derivative; act: 0 ReLU, 1 GELU (and GeGLU's), 2 SiLU (and
// SwiGLU's).
static __device__ __forceinline__ void dense_act_eval(int act, float x, float *f, float *df) {
  if (act == 0) {
    *f = x > 0 ? x : 0.f;
    *df = x > 0 ? 1.f : 0.f;
  } else if (act == 1) {
    float cdf, pdf;
    dense_normal_cdf(x, &cdf, &pdf);
    *f = x * cdf;
    *df = cdf + x * pdf;
  } else {
    float sg = 1.f / (1.f + dense_exp32(-x));
    *f = x * sg;
    *df = sg * (1.f + x * (1.f - sg));
  }
}

// h = act(a), or act(a)·u when gated (u not NULL).
__global__ void dense_act(float *a, float *u, float *h, long long n, int act) {
  for (long long i = dense_index(); i < n; i += dense_stride()) {
    float f, df;
    dense_act_eval(act, a[i], &f, &df);
    if (u) f *= u[i];
    h[i] = f;
  }
}

// da (+)= dh·u·act'(a) and, gated, du (+)= dh·act(a).
__global__ void dense_act_bwd(float *dh, float *a, float *u, float *da, float *du, long long n, int act, int accA, int accU) {
  for (long long i = dense_index(); i < n; i += dense_stride()) {
    float f, df;
    dense_act_eval(act, a[i], &f, &df);
    float g = dh[i];
    if (u) {
      float ui = u[i];
      du[i] = accU ? du[i] + g * f : g * f;
      g *= ui;
    }
    da[i] = accA ? da[i] + g * df : g * df;
  }
}

// Cross-entropy of each row of logits [rows, V] against its target (ids less first): the
// row's term lse − logit[target] into terms, and when dl is not NULL the logits' gradient
// (softmax − onehot)·scale. One warp per row.
__global__ void dense_xent(float *logits, int *targets, float *dl, float *terms, int rows, int V, int first, float scale) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *row = logits + (long long)r * V;
  float mx = row[0];
  for (int j = lane; j < V; j += 32) mx = moe_fmaxf(mx, row[j]);
  mx = dense_warp_max(mx);
  float s = 0.f;
  for (int j = lane; j < V; j += 32) s += moe_expf(row[j] - mx);
  s = dense_warp_sum(s);
  float lse = mx + moe_logf(s);
  int t = targets[r] - first;
  if (lane == 0) terms[r] = lse - ((t >= 0 && t < V) ? row[t] : 0.f);
  if (!dl) return;
  float *drow = dl + (long long)r * V;
  for (int j = lane; j < V; j += 32) {
    float v = moe_expf(row[j] - lse) * scale;
    if (j == t) v -= scale;
    drow[j] = v;
  }
}

// The vocabulary-parallel loss (tp: each rank holds a V-wide slice of the vocabulary from
// first) in runtime/exec's three passes, the row maxima and sums all-reduced over tp in
// between. Pass 1 (CrossEntropyMax): each row's largest logit of the slice. One warp per row.
__global__ void dense_xent_max(float *logits, float *mx, int rows, int V) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *row = logits + (long long)r * V;
  float m = row[0];
  for (int j = lane; j < V; j += 32) m = moe_fmaxf(m, row[j]);
  m = dense_warp_max(m);
  if (lane == 0) mx[r] = m;
}

// Pass 2 (CrossEntropySum): st[2r] = Σ e^(logit − mx[r]) over the slice, st[2r+1] the
// row's target logit when the slice holds it, else 0. One warp per row.
__global__ void dense_xent_sum(float *logits, int *targets, float *mx, float *st, int rows, int V, int first) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *row = logits + (long long)r * V;
  float m = mx[r], s = 0.f;
  for (int j = lane; j < V; j += 32) s += moe_expf(row[j] - m);
  s = dense_warp_sum(s);
  if (lane != 0) return;
  int t = targets[r] - first;
  st[2 * r] = s;
  st[2 * r + 1] = (t >= 0 && t < V) ? row[t] : 0.f;
}

// Pass 3 (CrossEntropy from the reduced mx and st): the row's term lse − target with
// lse = mx + log st[2r], and the slice's gradient
// (softmax − onehot)·scale as dense_xent's. One warp per row.
__global__ void dense_xent_tp(float *logits, int *targets, float *mx, float *st, float *dl, float *terms, int rows, int V,
                              int first, float scale) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  float lse = mx[r] + moe_logf(st[2 * r]);
  if (lane == 0) terms[r] = lse - st[2 * r + 1];
  if (!dl) return;
  const float *row = logits + (long long)r * V;
  float *drow = dl + (long long)r * V;
  int t = targets[r] - first;
  for (int j = lane; j < V; j += 32) {
    float v = moe_expf(row[j] - lse) * scale;
    if (j == t) v -= scale;
    drow[j] = v;
  }
}

// The mean of the rows' terms, added in row order in double: loss[0] as float and the
// double into the slot ce (two floats of a workspace) that the host reads. One thread.
__global__ void dense_xent_mean(float *terms, float *loss, float *ce, int rows) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double s = 0;
  for (int r = 0; r < rows; r++) s += (double)terms[r];
  double mean = s / rows;
  loss[0] = (float)mean;
  *(double *)ce = mean;
}

// Distillation (distill_loss at tp 1, runtime/exec's DistillLoss) of each row of the
// student's logits [rows, V] against its target and the teacher's logits: the row's
// cross-entropy lse − logit[target] into terms[r] and its soft loss T²·KL(p_t ‖ p_s), with
// p = softmax(logits/T), into terms[rows + r]; when dl is not NULL the logits' gradient
// hard·(softmax(z) − onehot) + soft·(p_s − p_t), where hard and soft already hold the
// step's mean scale (soft the temperature too). One warp per row.
__global__ void dense_distill(float *logits, int *targets, float *teacher, float *dl, float *terms, int rows, int V,
                              float invT, float T2, float hard, float soft) {
  int r = blockIdx.x * DENSE_ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float *row = logits + (long long)r * V, *trow = teacher + (long long)r * V;
  float mx = row[0], tmx = trow[0];
  for (int j = lane; j < V; j += 32) {
    mx = moe_fmaxf(mx, row[j]);
    tmx = moe_fmaxf(tmx, trow[j]);
  }
  mx = dense_warp_max(mx);
  tmx = dense_warp_max(tmx);
  float s = 0.f, ss = 0.f, ts = 0.f;
  for (int j = lane; j < V; j += 32) {
    s += moe_expf(row[j] - mx);
    ss += moe_expf((row[j] - mx) * invT);
    ts += moe_expf((trow[j] - tmx) * invT);
  }
  s = dense_warp_sum(s);
  ss = dense_warp_sum(ss);
  ts = dense_warp_sum(ts);
  float lse = mx + moe_logf(s), slse = moe_logf(ss), tlse = moe_logf(ts);
  float kl = 0.f;
  for (int j = lane; j < V; j += 32) {
    float lt = (trow[j] - tmx) * invT - tlse, ls = (row[j] - mx) * invT - slse;
    float pt = moe_expf(lt);
    if (pt > 0.f) kl += pt * (lt - ls);
  }
  kl = dense_warp_sum(kl);
  int t = targets[r];
  if (lane == 0) {
    terms[r] = lse - ((t >= 0 && t < V) ? row[t] : 0.f);
    terms[rows + r] = T2 * kl;
  }
  if (!dl) return;
  float *drow = dl + (long long)r * V;
  for (int j = lane; j < V; j += 32) {
    float ps = moe_expf((row[j] - mx) * invT - slse), pt = moe_expf((trow[j] - tmx) * invT - tlse);
    float v = moe_expf(row[j] - lse) * hard;
    if (j == t) v -= hard;
    drow[j] = v + soft * (ps - pt);
  }
}

// The means of the rows' cross-entropies (terms[:rows]) and soft losses
// (terms[rows:2·rows]), each added in row order in double: loss[0] = hard·ce + soft·kl as
// float, and the two doubles into the slots ce and kl (two floats of a workspace each)
// that the host reads. One thread.
__global__ void dense_distill_mean(float *terms, float *loss, float *ce, float *kl, int rows, float hard, float soft) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double c = 0, k = 0;
  for (int r = 0; r < rows; r++) c += (double)terms[r];
  for (int r = 0; r < rows; r++) k += (double)terms[rows + r];
  c /= rows;
  k /= rows;
  loss[0] = (float)((double)hard * c + (double)soft * k);
  *(double *)ce = c;
  *(double *)kl = k;
}

// Σ g² of one gradient in double: each block's share (grid-stride) into its slot of out
// (two floats of a workspace per block), which the host adds in order with the other
// gradients'. Blocks of 256 threads.
__global__ void dense_sumsq(float *g, long long n, float *out) {
  __shared__ double part[256];
  double s = 0;
  for (long long i = dense_index(); i < n; i += dense_stride()) s += (double)g[i] * (double)g[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) ((double *)out)[blockIdx.x] = part[0];
}

// One AdamW update of n weights, as runtime/optim's fused float32 pass: the coefficients
// are the step's (scale = clipping, decay = lr·weight_decay or 0, lrbc1 = lr/(1−β1^t)).
__global__ void dense_adamw(float *w, float *g, float *m, float *v, long long n, float scale, float b1, float c1,
                            float b2, float c2, float invbc2, float eps, float decay, float lrbc1) {
#pragma clang fp contract(off)
  for (long long i = dense_index(); i < n; i += dense_stride()) {
    float gj = g[i] * scale;
    float mj = b1 * m[i] + c1 * gj;
    float vj = b2 * v[i] + c2 * (gj * gj);
    m[i] = mj;
    v[i] = vj;
    float d = moe_sqrtf(vj * invbc2) + eps;
    float wj = w[i];
    wj = wj - decay * wj;
    w[i] = wj - (lrbc1 * mj) / d;
  }
}
