// Training ops (the "training (backward)" block of src/backend.h) on CUDA: the
// backward of every forward op the generator uses, counter-based dropout, the
// flash-style training attention (probabilities recomputed from the saved log-sum-exp,
// never stored), cross-entropy, the gradient norm and AdamW.
//
// Written for correctness first, mirroring src/cpu/backward.cc formula by formula
// (double where the CPU uses double: LayerNorm statistics, softmax denominators,
// bias/norm-affine reductions, sum_squares). Deterministic like the CPU: no atomics.
// Every output element is owned by exactly one thread, which accumulates its
// contributions in a fixed order; reductions across rows into shared parameter
// gradients are either one thread per column looping over the rows in order, or
// fixed partials (one per (batch, head) / per 64 Ki chunk) summed in order by a second
// pass. So the same inputs give the same bits on every run.
//
// Not tuned: the weight-gradient GEMM is a plain 64x64 SIMT tile kernel (exact fp32,
// no tensor cores), column reductions run C threads over all rows. See cuda/README.md.
#include <cmath>
#include <vector>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// src/backend.h dropout_bits(), verbatim (the host version is not __device__).
__device__ __forceinline__ uint32_t dropout_bits_dev(uint64_t seed, uint64_t site, uint64_t index) {
  uint64_t z = (seed ^ (site * 0x9E3779B97F4A7C15ull)) + index * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// block_sum (common.cuh) in double; scratch: 32 doubles of shared memory.
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = lane < nw ? scratch[lane] : 0.0;
  return warp_sum_d(t);
}

// ---------------- dense ----------------

// C (M,N) (+)= sum_k A(m,k) B(k,n), A(m,k) = a[m*sam + k*sak], B(k,n) = b[k*sbk + n*sbn].
// 64x64 tile, 16-deep k slices, 256 threads each owning 4x4 outputs; every output is
// summed by one thread in k order (deterministic, fp32 like the CPU GEMM).
constexpr int kTM = 64, kTN = 64, kTK = 16;

__global__ void __launch_bounds__(256) gemm_strided_kernel(float* __restrict__ c, int64_t ldc,
                                                           const float* __restrict__ a, int64_t sam, int64_t sak,
                                                           const float* __restrict__ b, int64_t sbk, int64_t sbn,
                                                           int64_t M, int64_t N, int64_t K, bool accumulate) {
  __shared__ float As[kTK][kTM + 1];
  __shared__ float Bs[kTK][kTN + 1];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTM, n0 = static_cast<int64_t>(blockIdx.x) * kTN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  const bool a_kfast = sak == 1, b_nfast = sbn == 1;
  for (int64_t k0 = 0; k0 < K; k0 += kTK) {
#pragma unroll
    for (int l = 0; l < 4; l++) {
      int idx = tid + 256 * l;  // 0..1023 over the 64x16 tile
      int mm, kk;
      if (a_kfast) {
        kk = idx & 15;
        mm = idx >> 4;
      } else {
        mm = idx & 63;
        kk = idx >> 6;
      }
      int64_t gm = m0 + mm, gk = k0 + kk;
      As[kk][mm] = (gm < M && gk < K) ? a[gm * sam + gk * sak] : 0.f;
      int nn;
      if (b_nfast) {
        nn = idx & 63;
        kk = idx >> 6;
      } else {
        kk = idx & 15;
        nn = idx >> 4;
      }
      int64_t gn = n0 + nn;
      gk = k0 + kk;
      Bs[kk][nn] = (gn < N && gk < K) ? b[gk * sbk + gn * sbn] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTK; kk++) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int64_t gm = m0 + ty + 16 * i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int64_t gn = n0 + tx + 16 * j;
      if (gn >= N) continue;
      float* p = c + gm * ldc + gn;
      *p = accumulate ? *p + acc[i][j] : acc[i][j];
    }
  }
}

void gemm_strided(float* c, int64_t ldc, const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                  int64_t sbn, int64_t M, int64_t N, int64_t K, bool accumulate, cudaStream_t stream) {
  dim3 grid(static_cast<unsigned>(ceil_div(N, kTN)), static_cast<unsigned>(ceil_div(M, kTM)));
  gemm_strided_kernel<<<grid, 256, 0, stream>>>(c, ldc, a, sam, sak, b, sbk, sbn, M, N, K, accumulate);
  CUDA_LAUNCH_CHECK();
}

// dbias[n] += sum_m dout[m][n], in double, one thread per column (rows in order).
__global__ void bias_grad_kernel(float* __restrict__ dbias, const float* __restrict__ dout, int64_t M, int N) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  double s = 0;
  for (int64_t m = 0; m < M; m++) s += dout[m * N + n];
  dbias[n] += static_cast<float>(s);
}

// ---------------- normalisation ----------------

// One block per row: mean/rstd (saved to stats for the column pass), dy =
// dout*(1+scale[m])*ln_w (in dynamic shared memory, C floats), dinp += rstd*(dy -
// mean(dy) - xhat*mean(dy*xhat)); without a row map (m = r: every row owns its
// modulation row) also dshift/dscale +=.
__global__ void lnmod_bwd_dinp_kernel(float* __restrict__ dinp, float* __restrict__ dshift, float* __restrict__ dscale,
                                      float* __restrict__ stats, const float* __restrict__ dout,
                                      const float* __restrict__ inp, const float* __restrict__ ln_w,
                                      const float* __restrict__ ln_b, const float* __restrict__ scale,
                                      int64_t mod_stride, const int32_t* __restrict__ row_map, int C, float eps) {
  extern __shared__ float dy[];
  __shared__ double red[32];
  const int64_t r = blockIdx.x;
  const int64_t m = row_map ? row_map[r] : r;
  const float* x = inp + r * C;
  const float* go = dout + r * C;
  double s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
  const double md = block_sum_d(s, red) / C;
  double v = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double dd = x[c] - md;
    v += dd * dd;
  }
  v = block_sum_d(v, red) / C;
  const float mean = static_cast<float>(md);
  const float rstd = static_cast<float>(1.0 / sqrt(v + static_cast<double>(eps)));
  if (threadIdx.x == 0) {
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  const float* sc = scale ? scale + m * mod_stride : nullptr;
  double s1 = 0, s2 = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (x[c] - mean) * rstd;
    const float g = go[c];
    if (!row_map) {  // m = r: this block owns the modulation row
      float y = xh;
      if (ln_w) y *= ln_w[c];
      if (ln_b) y += ln_b[c];
      if (dshift) dshift[m * mod_stride + c] += g;
      if (dscale) dscale[m * mod_stride + c] += g * y;
    }
    float d = sc ? g * (1.f + sc[c]) : g;
    if (ln_w) d *= ln_w[c];
    dy[c] = d;
    s1 += d;
    s2 += static_cast<double>(d) * xh;
  }
  s1 = block_sum_d(s1, red);
  s2 = block_sum_d(s2, red);
  const float m1 = static_cast<float>(s1 / C), m2 = static_cast<float>(s2 / C);
  if (!dinp) return;
  float* gx = dinp + r * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (x[c] - mean) * rstd;
    gx[c] += rstd * (dy[c] - m1 - xh * m2);
  }
}

// One thread per column, rows in order: dln_w/dln_b (double), and with a row map the
// dshift/dscale rows (float +=, as the CPU). Uses the stats of the row pass.
__global__ void lnmod_bwd_col_kernel(float* __restrict__ dln_w, float* __restrict__ dln_b, float* __restrict__ dshift,
                                     float* __restrict__ dscale, const float* __restrict__ stats,
                                     const float* __restrict__ dout, const float* __restrict__ inp,
                                     const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                                     const float* __restrict__ scale, int64_t mod_stride,
                                     const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const bool mod = row_map && (dshift || dscale);
  double aw = 0, ab = 0;
  for (int64_t r = 0; r < rows; r++) {
    const float xh = (inp[r * C + c] - stats[2 * r]) * stats[2 * r + 1];
    const float g = dout[r * C + c];
    const int64_t m = row_map ? row_map[r] : r;
    if (mod) {
      float y = xh;
      if (ln_w) y *= ln_w[c];
      if (ln_b) y += ln_b[c];
      if (dshift) dshift[m * mod_stride + c] += g;
      if (dscale) dscale[m * mod_stride + c] += g * y;
    }
    const float d = scale ? g * (1.f + scale[m * mod_stride + c]) : g;
    if (ln_w) aw += static_cast<double>(d * xh);
    if (ln_w || ln_b) ab += d;
  }
  if (dln_w) dln_w[c] += static_cast<float>(aw);
  if (dln_b) dln_b[c] += static_cast<float>(ab);
}

// dy[i] = gate[m][c] * dx[i]; without a row map also dgate[r][c] += dx*y.
__global__ void gated_bwd_kernel(float* __restrict__ dy, float* __restrict__ dgate, const float* dx,
                                 const float* __restrict__ y, const float* __restrict__ gate, int64_t mod_stride,
                                 const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C;
    const int c = static_cast<int>(i - r * C);
    const int64_t m = row_map ? row_map[r] : r;
    const float d = dx[i];
    if (!row_map && dgate) dgate[m * mod_stride + c] += d * y[i];
    dy[i] = gate[m * mod_stride + c] * d;  // may alias dx: read above
  }
}

// With a row map: dgate[m][c] += dx*y, one thread per column, rows in order.
__global__ void gated_bwd_col_kernel(float* __restrict__ dgate, const float* __restrict__ dx,
                                     const float* __restrict__ y, int64_t mod_stride,
                                     const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < rows; r++) dgate[static_cast<int64_t>(row_map[r]) * mod_stride + c] += dx[r * C + c] * y[r * C + c];
}

// ---------------- activations ----------------

__global__ void gelu_bwd_kernel(float* dinp, const float* dout, const float* __restrict__ inp, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = inp[i];
    const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (cdf + x * pdf);
  }
}

__global__ void silu_bwd_kernel(float* dinp, const float* dout, const float* __restrict__ inp, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = inp[i];
    const float s = 1.f / (1.f + expf(-x));
    dinp[i] = dout[i] * s * (1.f + x * (1.f - s));
  }
}

__global__ void dropout_kernel(float* x, int64_t n, uint32_t threshold, float keep_scale, uint64_t seed, uint64_t site) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = dropout_bits_dev(seed, site, static_cast<uint64_t>(i)) >= threshold ? x[i] * keep_scale : 0.f;
}

// ---------------- attention ----------------
//
// Layout of the scratch copies: (B*H, T, D) per head ("bh" = b*H + h). qn, kn: the
// LayerNorm'ed + affine q and k; vv: v. Stats (mean, rstd) per (bh, t) for q and k.
// Kernels: prep (one warp per (bh, t)); forward / dQ (one block per query row i);
// dK/dV (one block per key row j); LayerNorm backward (one warp per (bh, t)); affine
// partials (one block per bh) and their ordered reduction.

constexpr int kMaxD = 128;

__global__ void attn_prep_kernel(float* __restrict__ qn, float* __restrict__ kn, float* __restrict__ vv,
                                 float* __restrict__ qstats, float* __restrict__ kstats, const float* __restrict__ qkv,
                                 const float* __restrict__ qw, const float* __restrict__ qb,
                                 const float* __restrict__ kw, const float* __restrict__ kb, int B, int T, int H,
                                 int D, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  const int64_t BHT = static_cast<int64_t>(B) * H * T;
  if (row >= BHT) return;  // whole warp exits together
  const int64_t bh = row / T;
  const int t = static_cast<int>(row - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  const float* src_row = qkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
  for (int which = 0; which < 2; which++) {
    const float* src = src_row + which * C + h * D;
    const float* w = which == 0 ? qw : kw;
    const float* bi = which == 0 ? qb : kb;
    double s = 0;
    for (int d = lane; d < D; d += 32) s += src[d];
    const double md = warp_sum_d(s) / D;
    double v = 0;
    for (int d = lane; d < D; d += 32) {
      double dd = src[d] - md;
      v += dd * dd;
    }
    v = warp_sum_d(v) / D;
    const float mean = static_cast<float>(md);
    const float rstd = static_cast<float>(1.0 / sqrt(v + static_cast<double>(eps)));
    float* dst = (which == 0 ? qn : kn) + row * D;
    for (int d = lane; d < D; d += 32) {
      const float xh = (src[d] - mean) * rstd;
      dst[d] = xh * (w ? w[d] : 1.f) + (bi ? bi[d] : 0.f);
    }
    float* st = which == 0 ? qstats : kstats;
    if (st && lane == 0) {
      st[2 * row] = mean;
      st[2 * row + 1] = rstd;
    }
  }
  const float* v = src_row + 2 * C + h * D;
  for (int d = lane; d < D; d += 32) vv[row * D + d] = v[d];
}

// Forward, one block per (bh, i): scores s_j = (q_i * 1/sqrt(D)) . k_j for j <= i into
// shared memory (T floats, dynamic), lse_i, p~_j = exp(s_j - lse_i) * mask, out_i = sum_j p~_j v_j.
__global__ void attn_fwd_kernel(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ qn,
                                const float* __restrict__ kn, const float* __restrict__ vv, int H, int T, int D,
                                float sm, uint32_t threshold, float keep_scale, bool drop, uint64_t seed,
                                uint64_t site) {
  extern __shared__ float sp[];
  __shared__ float qs[kMaxD];
  __shared__ float redf[32];
  __shared__ double redd[32];
  const int64_t bh = blockIdx.x / T;
  const int i = static_cast<int>(blockIdx.x - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int n = i + 1;
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qn[(bh * T + i) * D + d] * sm;
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float* k = kn + (bh * T + j) * D;
    float s = 0.f;
    for (int d = 0; d < D; d++) s = fmaf(qs[d], k[d], s);
    sp[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, redf);
  double l = 0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) l += exp(static_cast<double>(sp[j] - mx));
  l = block_sum_d(l, redd);
  const float lse_i = mx + static_cast<float>(log(l));
  if (threadIdx.x == 0) lse[bh * T + i] = lse_i;
  const uint64_t base = (static_cast<uint64_t>(bh) * T + i) * T;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float p = expf(sp[j] - lse_i);
    if (drop) p *= dropout_bits_dev(seed, site, base + j) >= threshold ? keep_scale : 0.f;
    sp[j] = p;
  }
  __syncthreads();
  const int C = H * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int j = 0; j < n; j++) o = fmaf(sp[j], vv[(bh * T + j) * D + d], o);
    out[(static_cast<int64_t>(b) * T + i) * C + h * D + d] = o;
  }
}

// The shared recomputation of one (i, j) element in backward: p, p~ and ds.
struct PdS {
  float pt, ds;
};
__device__ __forceinline__ PdS attn_elem(const float* qi_scaled, const float* kj, const float* doi, const float* vj,
                                         int D, float lse_i, float Di, float sm, bool drop, uint32_t threshold,
                                         float keep_scale, uint64_t seed, uint64_t site, uint64_t index) {
  float s = 0.f, dp = 0.f;
  for (int d = 0; d < D; d++) {
    s = fmaf(qi_scaled[d], kj[d], s);
    dp = fmaf(doi[d], vj[d], dp);
  }
  const float p = expf(s - lse_i);
  float mask = 1.f;
  if (drop) {
    mask = dropout_bits_dev(seed, site, index) >= threshold ? keep_scale : 0.f;
    dp *= mask;
  }
  PdS r;
  r.pt = drop ? p * mask : p;
  r.ds = p * (dp - Di) * sm;
  return r;
}

// dQ, one block per (bh, i): Di = dO_i . O_i (saved for the dK/dV pass), then per chunk
// of blockDim keys the ds_j into shared memory, then dq_i[d] = sum_j ds_j k_j[d] in j order.
__global__ void attn_bwd_dq_kernel(float* __restrict__ dqn, float* __restrict__ Dbuf, const float* __restrict__ dout,
                                   const float* __restrict__ out, const float* __restrict__ lse,
                                   const float* __restrict__ qn, const float* __restrict__ kn,
                                   const float* __restrict__ vv, int H, int T, int D, float sm, uint32_t threshold,
                                   float keep_scale, bool drop, uint64_t seed, uint64_t site) {
  __shared__ float qs[kMaxD], dos[kMaxD];
  __shared__ float dss[kThreads];
  __shared__ float redf[32];
  const int64_t bh = blockIdx.x / T;
  const int i = static_cast<int>(blockIdx.x - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  const int64_t orow = (static_cast<int64_t>(b) * T + i) * C + h * D;
  float di = 0.f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    qs[d] = qn[(bh * T + i) * D + d] * sm;
    dos[d] = dout[orow + d];
    di = fmaf(dout[orow + d], out[orow + d], di);
  }
  const float Di = block_sum(di, redf);  // contains __syncthreads: qs/dos are visible after it
  if (threadIdx.x == 0) Dbuf[bh * T + i] = Di;
  const float lse_i = lse[bh * T + i];
  const uint64_t base = (static_cast<uint64_t>(bh) * T + i) * T;
  float acc = 0.f;  // thread d < D
  for (int j0 = 0; j0 <= i; j0 += blockDim.x) {
    const int j = j0 + threadIdx.x;
    float ds = 0.f;
    if (j <= i)
      ds = attn_elem(qs, kn + (bh * T + j) * D, dos, vv + (bh * T + j) * D, D, lse_i, Di, sm, drop, threshold,
                     keep_scale, seed, site, base + j)
               .ds;
    dss[threadIdx.x] = ds;
    __syncthreads();
    const int cnt = min(static_cast<int>(blockDim.x), i + 1 - j0);
    if (threadIdx.x < D)
      for (int t = 0; t < cnt; t++) acc = fmaf(dss[t], kn[(bh * T + j0 + t) * D + threadIdx.x], acc);
    __syncthreads();
  }
  if (threadIdx.x < D) dqn[(bh * T + i) * D + threadIdx.x] = acc;
}

// dK/dV, one block per (bh, j): over queries i >= j in chunks, ds_ij and p~_ij into
// shared memory, then dk_j[d] = sum_i ds_ij q_i[d], dv_j[d] = sum_i p~_ij dO_i[d] in i order.
__global__ void attn_bwd_dkv_kernel(float* __restrict__ dkn, float* __restrict__ dvv, const float* __restrict__ Dbuf,
                                    const float* __restrict__ dout, const float* __restrict__ lse,
                                    const float* __restrict__ qn, const float* __restrict__ kn,
                                    const float* __restrict__ vv, int H, int T, int D, float sm, uint32_t threshold,
                                    float keep_scale, bool drop, uint64_t seed, uint64_t site) {
  __shared__ float ks[kMaxD], vs[kMaxD];
  __shared__ float dss[kThreads], pts[kThreads];
  const int64_t bh = blockIdx.x / T;
  const int j = static_cast<int>(blockIdx.x - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    ks[d] = kn[(bh * T + j) * D + d];
    vs[d] = vv[(bh * T + j) * D + d];
  }
  __syncthreads();
  float dk = 0.f, dv = 0.f;
  for (int i0 = j; i0 < T; i0 += blockDim.x) {
    const int i = i0 + threadIdx.x;
    float ds = 0.f, pt = 0.f;
    if (i < T) {
      const float* qi = qn + (bh * T + i) * D;
      const float* doi = dout + (static_cast<int64_t>(b) * T + i) * C + h * D;
      // same arithmetic as attn_elem with q scaled first (as the dQ and forward passes)
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < D; d++) {
        s = fmaf(qi[d] * sm, ks[d], s);
        dp = fmaf(doi[d], vs[d], dp);
      }
      const float p = expf(s - lse[bh * T + i]);
      float mask = 1.f;
      if (drop) {
        mask = dropout_bits_dev(seed, site, (static_cast<uint64_t>(bh) * T + i) * T + j) >= threshold ? keep_scale : 0.f;
        dp *= mask;
      }
      pt = drop ? p * mask : p;
      ds = p * (dp - Dbuf[bh * T + i]) * sm;
    }
    dss[threadIdx.x] = ds;
    pts[threadIdx.x] = pt;
    __syncthreads();
    const int cnt = min(static_cast<int>(blockDim.x), T - i0);
    if (threadIdx.x < D)
      for (int t = 0; t < cnt; t++) {
        const int ii = i0 + t;
        dk = fmaf(dss[t], qn[(bh * T + ii) * D + threadIdx.x], dk);
        dv = fmaf(pts[t], dout[(static_cast<int64_t>(b) * T + ii) * C + h * D + threadIdx.x], dv);
      }
    __syncthreads();
  }
  if (threadIdx.x < D) {
    dkn[(bh * T + j) * D + threadIdx.x] = dk;
    dvv[(bh * T + j) * D + threadIdx.x] = dv;
  }
}

// LayerNorm backward over D for q and k (one warp per (bh, t)), v passes through.
__global__ void attn_ln_bwd_kernel(float* __restrict__ dqkv, const float* __restrict__ dqn,
                                   const float* __restrict__ dkn, const float* __restrict__ dvv,
                                   const float* __restrict__ qstats, const float* __restrict__ kstats,
                                   const float* __restrict__ qkv, const float* __restrict__ qw,
                                   const float* __restrict__ kw, int B, int T, int H, int D) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(B) * H * T) return;
  const int64_t bh = row / T;
  const int t = static_cast<int>(row - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  const float* src_row = qkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
  float* drow = dqkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
  for (int which = 0; which < 2; which++) {
    const float* src = src_row + which * C + h * D;
    const float* dn = (which == 0 ? dqn : dkn) + row * D;
    const float* w = which == 0 ? qw : kw;
    const float* st = which == 0 ? qstats : kstats;
    const float mean = st[2 * row], rstd = st[2 * row + 1];
    double s1 = 0, s2 = 0;
    for (int d = lane; d < D; d += 32) {
      const float xh = (src[d] - mean) * rstd;
      const float g = dn[d] * (w ? w[d] : 1.f);
      s1 += g;
      s2 += static_cast<double>(g) * xh;
    }
    s1 = warp_sum_d(s1);
    s2 = warp_sum_d(s2);
    const float m1 = static_cast<float>(s1 / D), m2 = static_cast<float>(s2 / D);
    float* dst = drow + which * C + h * D;
    for (int d = lane; d < D; d += 32) {
      const float xh = (src[d] - mean) * rstd;
      const float g = dn[d] * (w ? w[d] : 1.f);
      dst[d] = rstd * (g - m1 - xh * m2);
    }
  }
  for (int d = lane; d < D; d += 32) drow[2 * C + h * D + d] = dvv[row * D + d];
}

// Per-bh partials of the q/k norm affine gradients: part[(which*2 + wb) * BH * D + bh * D + d],
// which 0 = q, 1 = k; wb 0 = weight (sum dn * xhat), 1 = bias (sum dn), t in order.
__global__ void attn_norm_partials_kernel(float* __restrict__ part, const float* __restrict__ dqn,
                                          const float* __restrict__ dkn, const float* __restrict__ qstats,
                                          const float* __restrict__ kstats, const float* __restrict__ qkv, int B,
                                          int T, int H, int D) {
  const int64_t bh = blockIdx.x;
  const int d = threadIdx.x;
  if (d >= D) return;
  const int64_t BH = static_cast<int64_t>(B) * H;
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  for (int which = 0; which < 2; which++) {
    const float* dn = which == 0 ? dqn : dkn;
    const float* st = which == 0 ? qstats : kstats;
    float aw = 0.f, ab = 0.f;
    for (int t = 0; t < T; t++) {
      const int64_t row = bh * T + t;
      const float x = qkv[(static_cast<int64_t>(b) * T + t) * 3 * C + which * C + h * D + d];
      const float xh = (x - st[2 * row]) * st[2 * row + 1];
      const float g = dn[row * D + d];
      aw += g * xh;
      ab += g;
    }
    part[(which * 2 + 0) * BH * D + bh * D + d] = aw;
    part[(which * 2 + 1) * BH * D + bh * D + d] = ab;
  }
}

// dst_k[d] += sum_bh part[k][bh][d] (double, bh in order) for the 4 outputs (null skipped).
__global__ void attn_norm_reduce_kernel(float* dqw, float* dqb, float* dkw, float* dkb, const float* __restrict__ part,
                                        int64_t BH, int D) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= 4 * D) return;
  const int k = idx / D, d = idx - k * D;
  float* dst = k == 0 ? dqw : k == 1 ? dqb : k == 2 ? dkw : dkb;
  if (!dst) return;
  double s = 0;
  for (int64_t bh = 0; bh < BH; bh++) s += part[k * BH * D + bh * D + d];
  dst[d] += static_cast<float>(s);
}

// ---------------- gathers ----------------

// dtable[ids[r]][c] += dout[r][c]: one thread per column c, rows in order.
__global__ void embedding_bwd_kernel(float* __restrict__ dtable, const float* __restrict__ dout,
                                     const int32_t* __restrict__ ids, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < rows; r++) {
    const int32_t id = ids[r];
    if (id < 0) continue;
    dtable[static_cast<int64_t>(id) * C + c] += dout[r * C + c];
  }
}

// ---------------- loss ----------------

// One block per row. dlogits may alias logits: every read of the row happens before
// the block_sum_d barrier, every write after it.
__global__ void cross_entropy_kernel(float* dlogits, float* losses, int32_t* correct, const float* logits,
                                     const int32_t* __restrict__ targets, int V, float grad_scale) {
  __shared__ float rv[32];
  __shared__ int ri[32];
  __shared__ double redd[32];
  const int64_t r = blockIdx.x;
  const float* x = logits + r * V;
  float* dl = dlogits + r * V;
  const int32_t t = targets[r];
  if (t < 0) {  // uniform over the block
    if (threadIdx.x == 0) {
      if (losses) losses[r] = 0.f;
      if (correct) correct[r] = 0;
    }
    for (int v = threadIdx.x; v < V; v += blockDim.x) dl[v] = 0.f;
    return;
  }
  const float xt = x[t];
  // max and first argmax (ties: the lowest index, as the CPU's strict >)
  float best = -INFINITY;
  int arg = 0x7fffffff;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float xv = x[v];
    if (arg == 0x7fffffff || xv > best) {
      best = xv;
      arg = v;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, arg, o);
    if (oi != 0x7fffffff && (arg == 0x7fffffff || ob > best || (ob == best && oi < arg))) {
      best = ob;
      arg = oi;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) {
    rv[warp] = best;
    ri[warp] = arg;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? rv[lane] : -INFINITY;
    arg = lane < nw ? ri[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, arg, o);
      if (oi != 0x7fffffff && (arg == 0x7fffffff || ob > best || (ob == best && oi < arg))) {
        best = ob;
        arg = oi;
      }
    }
    if (lane == 0) {
      rv[0] = best;
      ri[0] = arg;
    }
  }
  __syncthreads();
  const float mx = rv[0];
  const int amax = ri[0];
  double s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) s += exp(static_cast<double>(x[v] - mx));
  s = block_sum_d(s, redd);  // barrier: all reads of x are done
  const float lse = mx + static_cast<float>(log(s));
  if (threadIdx.x == 0) {
    if (losses) losses[r] = lse - xt;
    if (correct) correct[r] = amax == t ? 1 : 0;
  }
  // x[v] for this thread's v was read by this thread only in the loops above; reread
  // is safe because no other thread writes index v.
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    float d = expf(x[v] - lse) * grad_scale;
    if (v == t) d -= grad_scale;
    dl[v] = d;
  }
}

// ---------------- optimizer ----------------

constexpr int64_t kSumChunk = 1 << 16;  // fixed chunks: the sum does not depend on the launch

__global__ void sum_squares_kernel(double* __restrict__ part, const float* __restrict__ x, int64_t n) {
  __shared__ double red[32];
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kSumChunk;
  const int64_t e = min(n, b + kSumChunk);
  double s = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) s += static_cast<double>(x[i]) * x[i];
  s = block_sum_d(s, red);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float beta1, float beta2, float eps, float decay,
                             float step_size, float bc2_sqrt, float grad_scale) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float p = param[i] * decay;
    const float mi = m[i] * beta1 + (1.f - beta1) * g;
    const float vi = v[i] * beta2 + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    param[i] = p - step_size * (mi / denom);
  }
}

}  // namespace

// ---------------- launchers ----------------

void train_linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* weight, int64_t M, int N, int K, bool accumulate_dinp, cudaStream_t stream) {
  if (M <= 0) return;
  // dinp (M,K) (+)= dout (M,N) @ W (N,K)
  if (dinp) gemm_strided(dinp, K, dout, N, 1, weight, K, 1, M, K, N, accumulate_dinp, stream);
  // dW (N,K) += dout^T (N,M) @ inp (M,K): A(n,m) = dout[m*N + n]
  if (dweight) gemm_strided(dweight, K, dout, 1, N, inp, K, 1, N, K, M, true, stream);
  if (dbias) {
    bias_grad_kernel<<<static_cast<unsigned>(ceil_div(N, kThreads)), kThreads, 0, stream>>>(dbias, dout, M, N);
    CUDA_LAUNCH_CHECK();
  }
}

void train_layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                       const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                       const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                       int C, float eps, ScratchProvider& sp, cudaStream_t stream) {
  if (rows <= 0) return;
  float* stats = static_cast<float*>(sp.scratch(kScratchTrain, static_cast<size_t>(rows) * 2 * sizeof(float)));
  const int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 128;
  lnmod_bwd_dinp_kernel<<<static_cast<unsigned>(rows), threads, static_cast<size_t>(C) * sizeof(float), stream>>>(
      dinp, row_map ? nullptr : dshift, row_map ? nullptr : dscale, stats, dout, inp, ln_w, ln_b, scale, mod_stride,
      row_map, C, eps);
  CUDA_LAUNCH_CHECK();
  // the column pass (LN affine; row-mapped dshift/dscale) uses the row statistics
  if (dln_w || dln_b || (row_map && (dshift || dscale))) {
    lnmod_bwd_col_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(
        dln_w, dln_b, row_map ? dshift : nullptr, row_map ? dscale : nullptr, stats, dout, inp, ln_w, ln_b, scale,
        mod_stride, row_map, rows, C);
    CUDA_LAUNCH_CHECK();
  }
}

void train_gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                                   int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                   cudaStream_t stream) {
  if (rows <= 0) return;
  if (row_map && dgate) {  // before dy is written (dy may alias dx)
    gated_bwd_col_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(dgate, dx, y, mod_stride, row_map,
                                                                                    rows, C);
    CUDA_LAUNCH_CHECK();
  }
  gated_bwd_kernel<<<grid_for(rows * C, kThreads), kThreads, 0, stream>>>(dy, dgate, dx, y, gate, mod_stride, row_map,
                                                                          rows, C);
  CUDA_LAUNCH_CHECK();
}

void train_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  gelu_bwd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dinp, dout, inp, n);
  CUDA_LAUNCH_CHECK();
}

void train_silu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_bwd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dinp, dout, inp, n);
  CUDA_LAUNCH_CHECK();
}

void train_dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site, cudaStream_t stream) {
  if (p <= 0.f || n <= 0) return;
  dropout_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, dropout_threshold(p), 1.f / (1.f - p), seed,
                                                                 site);
  CUDA_LAUNCH_CHECK();
}

namespace {
struct AttnScratch {
  float *qn, *kn, *vv, *qstats, *kstats, *dqn, *dkn, *dvv, *Dbuf, *part;
};
AttnScratch attn_scratch(ScratchProvider& sp, int B, int T, int H, int D, bool backward) {
  const int64_t BHT = static_cast<int64_t>(B) * H * T, BHTD = BHT * D, BH = static_cast<int64_t>(B) * H;
  int64_t total = 3 * BHTD;
  if (backward) total += 3 * BHTD + 4 * BHT + BHT + 4 * BH * D;
  float* p = static_cast<float*>(sp.scratch(kScratchTrain, static_cast<size_t>(total) * sizeof(float)));
  AttnScratch s{};
  s.qn = p;
  s.kn = p + BHTD;
  s.vv = p + 2 * BHTD;
  if (backward) {
    s.dqn = p + 3 * BHTD;
    s.dkn = p + 4 * BHTD;
    s.dvv = p + 5 * BHTD;
    s.qstats = p + 6 * BHTD;
    s.kstats = s.qstats + 2 * BHT;
    s.Dbuf = s.kstats + 2 * BHT;
    s.part = s.Dbuf + BHT;
  }
  return s;
}
constexpr int kRowsPerPrepBlock = 4;  // warps per block in the per-(bh, t) kernels
}  // namespace

void train_attention_forward(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                             const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                             float p_drop, uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream) {
  AttnScratch s = attn_scratch(sp, B, T, H, D, false);
  const int64_t BHT = static_cast<int64_t>(B) * H * T;
  attn_prep_kernel<<<static_cast<unsigned>(ceil_div(BHT, kRowsPerPrepBlock)), 32 * kRowsPerPrepBlock, 0, stream>>>(
      s.qn, s.kn, s.vv, nullptr, nullptr, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T, H, D, eps);
  CUDA_LAUNCH_CHECK();
  const float sm = 1.f / std::sqrt(static_cast<float>(D));
  const bool drop = p_drop > 0.f;
  attn_fwd_kernel<<<static_cast<unsigned>(BHT), 128, static_cast<size_t>(T) * sizeof(float), stream>>>(
      out, lse, s.qn, s.kn, s.vv, H, T, D, sm, dropout_threshold(p_drop), drop ? 1.f / (1.f - p_drop) : 1.f, drop,
      seed, site);
  CUDA_LAUNCH_CHECK();
}

void train_attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                              const float* dout, const float* out, const float* lse, const float* qkv,
                              const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                              const float* k_norm_b, int B, int T, int H, int D, float eps, float p_drop,
                              uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream) {
  AttnScratch s = attn_scratch(sp, B, T, H, D, true);
  const int64_t BHT = static_cast<int64_t>(B) * H * T, BH = static_cast<int64_t>(B) * H;
  const unsigned prep_blocks = static_cast<unsigned>(ceil_div(BHT, kRowsPerPrepBlock));
  attn_prep_kernel<<<prep_blocks, 32 * kRowsPerPrepBlock, 0, stream>>>(s.qn, s.kn, s.vv, s.qstats, s.kstats, qkv, q_norm_w,
                                                                       q_norm_b, k_norm_w, k_norm_b, B, T, H, D, eps);
  CUDA_LAUNCH_CHECK();
  const float sm = 1.f / std::sqrt(static_cast<float>(D));
  const bool drop = p_drop > 0.f;
  const uint32_t thr = dropout_threshold(p_drop);
  const float keep = drop ? 1.f / (1.f - p_drop) : 1.f;
  // blockDim = kThreads (>= D, the d threads of the accumulation loops)
  attn_bwd_dq_kernel<<<static_cast<unsigned>(BHT), kThreads, 0, stream>>>(s.dqn, s.Dbuf, dout, out, lse, s.qn, s.kn,
                                                                         s.vv, H, T, D, sm, thr, keep, drop, seed, site);
  CUDA_LAUNCH_CHECK();
  attn_bwd_dkv_kernel<<<static_cast<unsigned>(BHT), kThreads, 0, stream>>>(s.dkn, s.dvv, s.Dbuf, dout, lse, s.qn, s.kn,
                                                                          s.vv, H, T, D, sm, thr, keep, drop, seed, site);
  CUDA_LAUNCH_CHECK();
  attn_ln_bwd_kernel<<<prep_blocks, 32 * kRowsPerPrepBlock, 0, stream>>>(dqkv, s.dqn, s.dkn, s.dvv, s.qstats, s.kstats,
                                                                         qkv, q_norm_w, k_norm_w, B, T, H, D);
  CUDA_LAUNCH_CHECK();
  if (dq_norm_w || dq_norm_b || dk_norm_w || dk_norm_b) {
    attn_norm_partials_kernel<<<static_cast<unsigned>(BH), kMaxD, 0, stream>>>(s.part, s.dqn, s.dkn, s.qstats, s.kstats,
                                                                               qkv, B, T, H, D);
    CUDA_LAUNCH_CHECK();
    attn_norm_reduce_kernel<<<static_cast<unsigned>(ceil_div(4 * D, 128)), 128, 0, stream>>>(
        dq_norm_w, dq_norm_b, dk_norm_w, dk_norm_b, s.part, BH, D);
    CUDA_LAUNCH_CHECK();
  }
}

void train_embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C,
                              cudaStream_t stream) {
  if (rows <= 0) return;
  embedding_bwd_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(dtable, dout, ids, rows, C);
  CUDA_LAUNCH_CHECK();
}

void train_cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                         int64_t rows, int V, float grad_scale, cudaStream_t stream) {
  if (rows <= 0) return;
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(dlogits, losses, correct, logits, targets, V,
                                                                            grad_scale);
  CUDA_LAUNCH_CHECK();
}

double train_sum_squares(const float* x, int64_t n, ScratchProvider& sp, cudaStream_t stream) {
  if (n <= 0) return 0.0;
  const int64_t chunks = ceil_div(n, kSumChunk);
  double* part = static_cast<double*>(sp.scratch(kScratchTrain, static_cast<size_t>(chunks) * sizeof(double)));
  sum_squares_kernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(part, x, n);
  CUDA_LAUNCH_CHECK();
  std::vector<double> host(static_cast<size_t>(chunks));
  CUDA_CHECK(cudaMemcpyAsync(host.data(), part, host.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  double s = 0;
  for (double p : host) s += p;  // chunk order, as the CPU
  return s;
}

void train_adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, float grad_scale, int64_t step, cudaStream_t stream) {
  if (n <= 0) return;
  // the CPU's host-side constants, computed the same way
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.f - lr * weight_decay;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(param, grad, m, v, n, beta1, beta2, eps, decay, step_size,
                                                               bc2_sqrt, grad_scale);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
