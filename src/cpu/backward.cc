// CPU training ops: the backward of every forward op the generator uses, dropout
// from a counter-based hash, cross-entropy, and AdamW (the attention's training forward
// and backward: src/cpu/attention.cc, beside the inference attention).
//
// Written as the readable reference for the CUDA backend: each op is plain loops over
// the thread pool, float32 arithmetic with double for reductions over many rows.
// Reductions into shared parameter gradients (LayerNorm affine, modulation rows
// shared by several samples) are made deterministic and race-free by giving each
// thread its own partial sums, or by grouping rows by their target row, never by
// atomics: tasks are cut from the problem size alone and partials are summed in task
// order, so the same inputs give the same bits on every run, whatever the thread count.
#include "cpu/backward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {

int64_t grain_rows(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

// A(i, k) = src[k * ld + i]: the transpose of a row-major (K, M) matrix, for dW = dout^T inp.
struct PackATransposed : PackA {
  const float* src;
  int64_t ld, M;
  PackATransposed(const float* s, int64_t l, int64_t m) : src(s), ld(l), M(m) {}
  void pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const override {
    for (int p = 0; p < mc; p += kMR) {
      float* d = dst + static_cast<int64_t>(p) * kc;
      int64_t mb = m0 + p;
      int valid = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(kMR, std::min<int64_t>(mc - p, M - mb))));
      for (int k = 0; k < kc; k++) {
        const float* s = src + (k0 + k) * ld + mb;
        float* dk = d + k * kMR;
        int i = 0;
        for (; i < valid; i++) dk[i] = s[i];
        for (; i < kMR; i++) dk[i] = 0.f;
      }
    }
  }
};

// Rows grouped by their modulation row m = row_map[r]: order[starts[g]..starts[g+1])
// are the rows of group g, whose target row is ms[g]. Lets a task own one m.
struct RowGroups {
  std::vector<int64_t> order, starts, ms;
};

RowGroups group_rows(const int32_t* row_map, int64_t rows) {
  RowGroups g;
  if (!row_map) {
    g.order.resize(rows);
    g.starts.resize(rows + 1);
    g.ms.resize(rows);
    for (int64_t r = 0; r < rows; r++) g.order[r] = g.starts[r] = g.ms[r] = r;
    g.starts[rows] = rows;
    return g;
  }
  int32_t mmax = -1;
  for (int64_t r = 0; r < rows; r++) mmax = std::max(mmax, row_map[r]);
  std::vector<int64_t> count(static_cast<size_t>(mmax) + 2, 0);
  for (int64_t r = 0; r < rows; r++) count[row_map[r] + 1]++;
  for (size_t i = 1; i < count.size(); i++) count[i] += count[i - 1];
  g.order.resize(rows);
  std::vector<int64_t> pos(count.begin(), count.end() - 1);
  for (int64_t r = 0; r < rows; r++) g.order[pos[row_map[r]]++] = r;
  for (int32_t m = 0; m <= mmax; m++)
    if (count[m + 1] > count[m]) {
      g.starts.push_back(count[m]);
      g.ms.push_back(m);
    }
  g.starts.push_back(rows);
  return g;
}

}  // namespace

// ---------------- dense ----------------

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t M, int N, int K, bool accumulate_dinp) {
  if (M <= 0) return;
  // dinp (M,K) (+)= dout (M,N) @ W (N,K)
  if (dinp) {
    PackARowMajor pa(dout, DType::F32, N, M);
    PackBRowMajor pb(weight, K, K);
    gemm(dinp, K, M, K, N, pa, pb, nullptr, nullptr, accumulate_dinp);
  }
  // dW (N,K) += dout^T (N,M) @ inp (M,K)
  if (dweight) {
    PackATransposed pa(dout, N, N);
    PackBRowMajor pb(inp, K, K);
    gemm(dweight, K, N, K, M, pa, pb, nullptr, nullptr, true);
  }
  // dbias (N) += column sums of dout, in double over row blocks.
  if (dbias) {
    ThreadPool& pool = global_pool();
    int64_t chunk = std::max<int64_t>(64, (N + pool.size() * 4 - 1) / (pool.size() * 4));
    int64_t tasks = (N + chunk - 1) / chunk;
    pool.run(tasks, [&](int64_t t, int) {
      int64_t n0 = t * chunk, n1 = std::min<int64_t>(N, n0 + chunk);
      std::vector<double> acc(n1 - n0, 0.0);
      for (int64_t m = 0; m < M; m++) {
        const float* row = dout + m * N;
        for (int64_t n = n0; n < n1; n++) acc[n - n0] += row[n];
      }
      for (int64_t n = n0; n < n1; n++) dbias[n] += static_cast<float>(acc[n - n0]);
    });
  }
}

// ---------------- normalisation ----------------

void layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                 const float* dout, const float* inp, const float* ln_w,
                                 const float* ln_b, const float* scale, int64_t mod_stride,
                                 const int32_t* row_map, int64_t rows, int C, float eps) {
  if (rows <= 0) return;
  ThreadPool& pool = global_pool();
  RowGroups g = group_rows(row_map, rows);
  int64_t ngroups = static_cast<int64_t>(g.ms.size());
  int64_t per_task = std::max<int64_t>(1, grain_rows(C) / std::max<int64_t>(1, rows / std::max<int64_t>(1, ngroups)));
  int64_t tasks = (ngroups + per_task - 1) / per_task;
  Partials pw(dln_w ? tasks : 0, C), pb(dln_b ? tasks : 0, C);
  pool.run(tasks, [&](int64_t t, int) {
    std::vector<float> xhat(C), dy(C), sink(2 * C);
    float* accw = dln_w ? pw.of(t) : sink.data();
    float* accb = dln_b ? pb.of(t) : sink.data() + C;
    for (int64_t gi = t * per_task; gi < std::min(ngroups, (t + 1) * per_task); gi++) {
      int64_t m = g.ms[gi];
      const float* sc = scale ? scale + m * mod_stride : nullptr;
      float* dsh = dshift ? dshift + m * mod_stride : nullptr;
      float* dsc = dscale ? dscale + m * mod_stride : nullptr;
      for (int64_t k = g.starts[gi]; k < g.starts[gi + 1]; k++) {
        int64_t r = g.order[k];
        const float* x = inp + r * C;
        const float* go = dout + r * C;
        float mean, rstd;
        row_mean_rstd(x, C, eps, mean, rstd);
        double s1 = 0, s2 = 0;  // mean(dxhat), mean(dxhat * xhat)
        for (int c = 0; c < C; c++) {
          float xh = (x[c] - mean) * rstd;
          xhat[c] = xh;
          float y = xh;
          if (ln_w) y *= ln_w[c];
          if (ln_b) y += ln_b[c];
          // out = y * (1 + scale) + shift
          if (dsh) dsh[c] += go[c];
          if (dsc) dsc[c] += go[c] * y;
          float d = sc ? go[c] * (1.f + sc[c]) : go[c];
          if (ln_w) {
            accw[c] += d * xh;
            accb[c] += d;
            d *= ln_w[c];
          } else if (ln_b) {
            accb[c] += d;
          }
          dy[c] = d;
          s1 += d;
          s2 += static_cast<double>(d) * xh;
        }
        float m1 = static_cast<float>(s1 / C), m2 = static_cast<float>(s2 / C);
        float* gx = dinp + r * C;
        for (int c = 0; c < C; c++) gx[c] += rstd * (dy[c] - m1 - xhat[c] * m2);
      }
    }
  });
  pw.reduce_into(dln_w);
  pb.reduce_into(dln_b);
}

void gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y,
                             const float* gate, int64_t mod_stride, const int32_t* row_map,
                             int64_t rows, int C) {
  if (rows <= 0) return;
  RowGroups g = group_rows(row_map, rows);
  int64_t ngroups = static_cast<int64_t>(g.ms.size());
  global_pool().parallel_for(ngroups, std::max<int64_t>(1, grain_rows(C) / 4), [&](int64_t g0, int64_t g1) {
    for (int64_t gi = g0; gi < g1; gi++) {
      int64_t m = g.ms[gi];
      const float* ga = gate + m * mod_stride;
      float* dga = dgate ? dgate + m * mod_stride : nullptr;
      for (int64_t k = g.starts[gi]; k < g.starts[gi + 1]; k++) {
        int64_t r = g.order[k];
        const float* d = dx + r * C;
        const float* yr = y + r * C;
        float* o = dy + r * C;
        for (int c = 0; c < C; c++) {
          o[c] = ga[c] * d[c];
          if (dga) dga[c] += d[c] * yr[c];
        }
      }
    }
  });
}

// ---------------- activations ----------------

void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float x = inp[i];
      float cdf = 0.5f * (1.f + std::erf(x * 0.70710678118654752f));
      float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);
      dinp[i] = dout[i] * (cdf + x * pdf);
    }
  });
}

void silu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float x = inp[i];
      float s = 1.f / (1.f + std::exp(-x));
      dinp[i] = dout[i] * s * (1.f + x * (1.f - s));
    }
  });
}

void dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site) {
  if (p <= 0.f || n <= 0) return;
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = 1.f / (1.f - p);
  global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      x[i] = dropout_bits(seed, site, static_cast<uint64_t>(i)) >= threshold ? x[i] * keep_scale : 0.f;
  });
}

// ---------------- gathers ----------------

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C) {
  // Each task owns a slice of the C columns for all rows: no two tasks write one float.
  ThreadPool& pool = global_pool();
  int64_t slices = std::min<int64_t>(pool.size() * 2, std::max<int64_t>(1, C / 16));
  pool.run(slices, [&](int64_t s, int) {
    int c0 = static_cast<int>(C * s / slices), c1 = static_cast<int>(C * (s + 1) / slices);
    for (int64_t r = 0; r < rows; r++) {
      int32_t id = ids[r];
      if (id < 0) continue;
      float* t = dtable + static_cast<int64_t>(id) * C;
      const float* g = dout + r * C;
      for (int c = c0; c < c1; c++) t[c] += g[c];
    }
  });
}

// ---------------- loss ----------------

void cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits,
                   const int32_t* targets, int64_t rows, int V, float grad_scale) {
  global_pool().parallel_for(rows, grain_rows(V), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* x = logits + r * V;
      float* d = dlogits + r * V;
      int32_t t = targets[r];
      if (t < 0) {
        if (losses) losses[r] = 0.f;
        if (correct) correct[r] = 0;
        std::fill(d, d + V, 0.f);
        continue;
      }
      float mx = x[0];
      int arg = 0;
      for (int v = 1; v < V; v++)
        if (x[v] > mx) {
          mx = x[v];
          arg = v;
        }
      double s = 0;
      for (int v = 0; v < V; v++) s += std::exp(static_cast<double>(x[v] - mx));
      float lse = mx + static_cast<float>(std::log(s));
      float xt = x[t];
      if (losses) losses[r] = lse - xt;
      if (correct) correct[r] = arg == t ? 1 : 0;
      for (int v = 0; v < V; v++) d[v] = std::exp(x[v] - lse) * grad_scale;  // may alias x
      d[t] -= grad_scale;
    }
  });
}

// ---------------- optimizer ----------------

double sum_squares(const float* x, int64_t n) {
  ThreadPool& pool = global_pool();
  const int64_t chunk = 1 << 16;  // fixed: the sum does not depend on the thread count
  int64_t tasks = (n + chunk - 1) / chunk;
  std::vector<double> part(tasks, 0.0);
  pool.run(tasks, [&](int64_t t, int) {
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    double s = 0;
    for (int64_t i = b; i < e; i++) s += static_cast<double>(x[i]) * x[i];
    part[t] = s;
  });
  double s = 0;
  for (double p : part) s += p;
  return s;
}

void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
  // PyTorch AdamW (single tensor, non-amsgrad): decoupled decay, then Adam with bias corrections.
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.f - lr * weight_decay;
  global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float g = grad[i] * grad_scale;
      float p = param[i] * decay;
      float mi = m[i] * beta1 + (1.f - beta1) * g;
      float vi = v[i] * beta2 + (1.f - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      float denom = std::sqrt(vi) / bc2_sqrt + eps;
      param[i] = p - step_size * (mi / denom);
    }
  });
}

}  // namespace cpu
}  // namespace rargen
