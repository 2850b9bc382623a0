// The training attention of src/backend.h (attention_train_forward / attention_backward)
// on CUDA: the flash-style forward that saves the log-sum-exp, and its backward
// (probabilities recomputed from the saved log-sum-exp, dropout masks from
// dropout_bits, never a stored (T, T) matrix), with the q/k LayerNorm prologue and its
// backward. Moved unchanged from the former cuda/backward.cu; merging this forward with
// attention.cu's (one attention forward) is left for after attention.cu's per-row
// position rewrite.
//
// Deterministic like the CPU: no atomics; q/k-norm affine gradients are per-(batch,
// head) partials reduced in order by a second kernel. Mirrors src/cpu/backward.cc
// formula by formula (double for LayerNorm statistics and softmax denominators).
#include <cmath>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

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
    const double md = warp_sum(s) / D;
    double v = 0;
    for (int d = lane; d < D; d += 32) {
      double dd = src[d] - md;
      v += dd * dd;
    }
    v = warp_sum(v) / D;
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
  l = block_sum(l, redd);
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
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
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

}  // namespace

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

}  // namespace cuda
}  // namespace rargen
