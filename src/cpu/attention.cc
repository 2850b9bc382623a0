// The CPU attention op family: ONE forward (attention_forward) serving both the
// inference op (Backend::attention: prefill and decode over the KV cache, per-row
// positions and slots) and the training forward (attention_train_forward: the same
// computation over a scratch cache of slots = B, positions 0, plus the saved log-sum-exp
// and dropout on the probabilities), and the training backward beside it.
//
// Per (r, h): q and k LayerNorm'ed over D (affine, two-pass double statistics:
// norm_head), s_ij = (q_i . k_j) / sqrt(D) for keys j <= pos[r] + i (attn_scores, the
// AVX2 dot of kernels.h), p_ij = exp(s_ij - max_j s_ij), denominator l_i = sum_j p_ij in
// double (j in order), lse_i = max + log(l_i); dropout multiplies p_ij by its mask
// (1/(1-p_drop) or 0) after l_i is summed; out_i = (sum_j p~_ij v_j) / l_i. Dropout
// element (b, h, i, j) has index ((b*H + h)*T + i)*T + j.
//
// The backward recomputes s with the same attn_scores call (bits equal to the
// forward's) and p = exp(s - lse); it holds K and V also transposed (D, T) per head, so
// the dP and dK/dV inner loops run over the key index with unit stride (D axpy/dot calls
// of length i+1, AVX2 where available). Deterministic: every output is written by one
// task, affine-gradient partials are summed in task order.
#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "backend.h"
#include "cpu/backward.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {

// dst[d] = xhat[d] * w[d] + b[d], xhat = (src - mean) * rstd (w, b may be null: 1, 0);
// xhat and rstd saved when asked (the backward).
inline void norm_head(float* dst, const float* src, const float* w, const float* b, int D, float eps,
                      float* xhat = nullptr, float* rstd_out = nullptr) {
  float mean, rstd;
  row_mean_rstd(src, D, eps, mean, rstd);
  for (int d = 0; d < D; d++) {
    const float xh = (src[d] - mean) * rstd;
    if (xhat) xhat[d] = xh;
    dst[d] = xh * (w ? w[d] : 1.f) + (b ? b[d] : 0.f);
  }
  if (rstd_out) *rstd_out = rstd;
}

}  // namespace

void attention_forward(float* out, float* lse, float* kcache, float* vcache, const float* qkv, const float* q_norm_w,
                       const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int R, int Tn,
                       const int32_t* pos, const int32_t* slot, int Tcache, int H, int D, float eps, float p_drop,
                       uint64_t seed, uint64_t site) {
  const int C = H * D;
  const int64_t C3 = 3 * static_cast<int64_t>(C);
  // 1) normalised k and raw v of the new positions into the caches.
  global_pool().parallel_for(static_cast<int64_t>(R) * Tn * H, 64, [&](int64_t s, int64_t e) {
    for (int64_t idx = s; idx < e; idx++) {
      int h = static_cast<int>(idx % H);
      int64_t bt = idx / H;
      int i = static_cast<int>(bt % Tn), b = static_cast<int>(bt / Tn);
      const float* row = qkv + bt * C3;
      int64_t dst = ((static_cast<int64_t>(slot[b]) * H + h) * Tcache + pos[b] + i) * D;
      norm_head(kcache + dst, row + C + h * D, k_norm_w, k_norm_b, D, eps);
      std::memcpy(vcache + dst, row + 2 * C + h * D, D * 4);
    }
  });
  // 2) queries: one task per (b, h, block of queries).
  const int qblock = 16;
  const int nqb = (Tn + qblock - 1) / qblock;
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  const bool drop = p_drop > 0.f;
  const uint32_t threshold = dropout_threshold(p_drop);
  const float keep_scale = drop ? 1.f / (1.f - p_drop) : 1.f;
  global_pool().run(static_cast<int64_t>(R) * H * nqb, [&](int64_t task, int) {
    int qb = static_cast<int>(task % nqb);
    int h = static_cast<int>((task / nqb) % H);
    int b = static_cast<int>(task / nqb / H);
    const int64_t bh = static_cast<int64_t>(b) * H + h;
    thread_local std::vector<float> scores;
    scores.resize(Tcache);
    float q[128], acc[128];
    const float* kc = kcache + (static_cast<int64_t>(slot[b]) * H + h) * Tcache * D;
    const float* vc = vcache + (static_cast<int64_t>(slot[b]) * H + h) * Tcache * D;
    for (int i = qb * qblock; i < std::min(Tn, (qb + 1) * qblock); i++) {
      norm_head(q, qkv + (static_cast<int64_t>(b) * Tn + i) * C3 + h * D, q_norm_w, q_norm_b, D, eps);
      const int L = pos[b] + i + 1;  // causal: keys 0..pos[b]+i
      cpu::attn_scores(scores.data(), q, kc, L, D, scale);
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < L; j++) mx = std::max(mx, scores[j]);
      double denom = 0;
      for (int j = 0; j < L; j++) {
        float p = std::exp(scores[j] - mx);
        scores[j] = p;
        denom += p;
      }
      if (lse) lse[bh * Tn + i] = mx + static_cast<float>(std::log(denom));
      if (drop) {  // after the denominator: l_i sums the undropped probabilities
        const uint64_t base = (static_cast<uint64_t>(bh) * Tn + i) * Tn;
        for (int j = 0; j < L; j++)
          scores[j] = dropout_bits(seed, site, base + j) < threshold ? 0.f : scores[j] * keep_scale;
      }
      cpu::attn_weighted_sum(acc, scores.data(), vc, L, D);
      const float inv = static_cast<float>(1.0 / denom);
      float* o = out + (static_cast<int64_t>(b) * Tn + i) * C + h * D;
      for (int d = 0; d < D; d++) o[d] = acc[d] * inv;
    }
  });
}

void attention_train_forward(float* out, float* lse, const float* qkv, const float* q_norm_w,
                             const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                             int B, int T, int H, int D, float eps, float p_drop, uint64_t seed,
                             uint64_t site) {
  // a cache of B slots holding exactly the T positions: slot b = row b, positions from 0
  const size_t n = static_cast<size_t>(B) * H * T * D;
  std::vector<float> kc(n), vc(n);
  std::vector<int32_t> pos(B, 0), slot(B);
  std::iota(slot.begin(), slot.end(), 0);
  attention_forward(out, lse, kc.data(), vc.data(), qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T, pos.data(),
                    slot.data(), T, H, D, eps, p_drop, seed, site);
}

// ---------------- backward ----------------

namespace {

struct HeadView {
  std::vector<float> q, k;          // (T, D) normalised + affine
  std::vector<float> kt, vt;        // (D, T) normalised + affine k, raw v
  std::vector<float> qhat, khat;    // (T, D) pre-affine normalised values
  std::vector<float> qrstd, krstd;  // (T)
};

void load_head(HeadView& hv, const float* qkv, int b, int h, int T, int H, int D, const float* qw,
               const float* qb, const float* kw, const float* kb, float eps) {
  const int C = H * D;
  const size_t TD = static_cast<size_t>(T) * D;
  for (auto* v : {&hv.q, &hv.k, &hv.kt, &hv.vt, &hv.qhat, &hv.khat}) v->resize(TD);
  hv.qrstd.resize(T);
  hv.krstd.resize(T);
  for (int t = 0; t < T; t++) {
    const float* row = qkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
    const int64_t td = static_cast<int64_t>(t) * D;
    norm_head(hv.q.data() + td, row + h * D, qw, qb, D, eps, hv.qhat.data() + td, &hv.qrstd[t]);
    norm_head(hv.k.data() + td, row + C + h * D, kw, kb, D, eps, hv.khat.data() + td, &hv.krstd[t]);
    const float* v = row + 2 * C + h * D;
    for (int d = 0; d < D; d++) {
      hv.kt[static_cast<int64_t>(d) * T + t] = hv.k[td + d];
      hv.vt[static_cast<int64_t>(d) * T + t] = v[d];
    }
  }
}

// p[j] = exp(s[j] - lse), then dropout (mask m[j] = keep ? 1/(1-p) : 0 when p_drop > 0).
inline void probs(float* p, float* mask, const float* s, int n, float lse, float p_drop, uint32_t threshold,
                  float keep_scale, uint64_t seed, uint64_t site, uint64_t base) {
  for (int j = 0; j < n; j++) p[j] = std::exp(s[j] - lse);
  if (p_drop > 0.f)
    for (int j = 0; j < n; j++) mask[j] = dropout_bits(seed, site, base + j) >= threshold ? keep_scale : 0.f;
}

}  // namespace

void attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w,
                        float* dk_norm_b, const float* dout, const float* out, const float* lse,
                        const float* qkv, const float* q_norm_w, const float* q_norm_b,
                        const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D,
                        float eps, float p_drop, uint64_t seed, uint64_t site) {
  const int C = H * D;
  const float sm = 1.f / std::sqrt(static_cast<float>(D));
  const uint32_t threshold = dropout_threshold(p_drop);
  const float keep_scale = p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f;
  ThreadPool& pool = global_pool();
  const int64_t BH = static_cast<int64_t>(B) * H;
  Partials pqw(BH, D), pqb(BH, D), pkw(BH, D), pkb(BH, D);
  pool.run(BH, [&](int64_t task, int) {
    int b = static_cast<int>(task / H), h = static_cast<int>(task % H);
    HeadView hv;
    load_head(hv, qkv, b, h, T, H, D, q_norm_w, q_norm_b, k_norm_w, k_norm_b, eps);
    const size_t TD = static_cast<size_t>(T) * D;
    std::vector<float> dq(TD, 0.f), dkt(TD, 0.f), dvt(TD, 0.f);  // dq (T,D); dK^T, dV^T (D,T)
    std::vector<float> s(T), p(T), mask(T, 1.f), dp(T), ds(T);
    for (int i = 0; i < T; i++) {
      const int n = i + 1;
      const int64_t row = static_cast<int64_t>(b) * T + i;
      const float* doi = dout + row * C + h * D;
      const float* oi = out + row * C + h * D;
      const float* qi = hv.q.data() + static_cast<int64_t>(i) * D;
      const float Di = dot(doi, oi, D);
      attn_scores(s.data(), qi, hv.k.data(), n, D, sm);  // the forward's scores, bit for bit
      probs(p.data(), mask.data(), s.data(), n, lse[task * T + i], p_drop, threshold, keep_scale, seed, site,
            (static_cast<uint64_t>(task) * T + i) * T);
      // dp~_j = dO_i . v_j ; dV_j += p~_j dO_i
      std::fill(dp.begin(), dp.begin() + n, 0.f);
      for (int d = 0; d < D; d++) axpy(dp.data(), doi[d], hv.vt.data() + static_cast<int64_t>(d) * T, n);
      if (p_drop > 0.f)
        for (int j = 0; j < n; j++) {
          dp[j] *= mask[j];
          ds[j] = p[j] * mask[j];  // p~ for the dV update
        }
      const float* pv = p_drop > 0.f ? ds.data() : p.data();
      for (int d = 0; d < D; d++) axpy(dvt.data() + static_cast<int64_t>(d) * T, doi[d], pv, n);
      // ds_j = p_j (dp_j - D_i) / sqrt(D) ; dq_i = sum_j ds_j k_j ; dk_j += ds_j q_i
      for (int j = 0; j < n; j++) ds[j] = p[j] * (dp[j] - Di) * sm;
      float* dqi = dq.data() + static_cast<int64_t>(i) * D;
      for (int d = 0; d < D; d++) {
        dqi[d] = dot(ds.data(), hv.kt.data() + static_cast<int64_t>(d) * T, n);
        axpy(dkt.data() + static_cast<int64_t>(d) * T, qi[d], ds.data(), n);
      }
    }
    // LayerNorm backward over D for q and k; v passes through.
    float* aqw = pqw.of(task);
    float* aqb = pqb.of(task);
    float* akw = pkw.of(task);
    float* akb = pkb.of(task);
    std::vector<float> g(D), dn(D);
    for (int t = 0; t < T; t++) {
      float* drow = dqkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
      for (int which = 0; which < 2; which++) {
        for (int d = 0; d < D; d++)
          dn[d] = which == 0 ? dq[static_cast<int64_t>(t) * D + d] : dkt[static_cast<int64_t>(d) * T + t];
        const float* xh = (which == 0 ? hv.qhat : hv.khat).data() + static_cast<int64_t>(t) * D;
        const float* w = which == 0 ? q_norm_w : k_norm_w;
        float* aw = which == 0 ? aqw : akw;
        float* ab = which == 0 ? aqb : akb;
        float rstd = (which == 0 ? hv.qrstd : hv.krstd)[t];
        double s1 = 0, s2 = 0;
        for (int d = 0; d < D; d++) {
          aw[d] += dn[d] * xh[d];
          ab[d] += dn[d];
          g[d] = dn[d] * (w ? w[d] : 1.f);
          s1 += g[d];
          s2 += static_cast<double>(g[d]) * xh[d];
        }
        float m1 = static_cast<float>(s1 / D), m2 = static_cast<float>(s2 / D);
        float* dst = drow + which * C + h * D;
        for (int d = 0; d < D; d++) dst[d] = rstd * (g[d] - m1 - xh[d] * m2);
      }
      float* dv = drow + 2 * C + h * D;
      for (int d = 0; d < D; d++) dv[d] = dvt[static_cast<int64_t>(d) * T + t];
    }
  });
  pqw.reduce_into(dq_norm_w);
  pqb.reduce_into(dq_norm_b);
  pkw.reduce_into(dk_norm_w);
  pkb.reduce_into(dk_norm_b);
}

}  // namespace cpu
}  // namespace rargen
