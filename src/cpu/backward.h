// CPU implementations of the training ops of src/backend.h ("training (backward)"
// block; the attention ones: src/cpu/attention.h). CpuBackend forwards each of those
// virtuals here; the argument order and meaning are the op table's (see backend.h for
// the contract of each).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/kernels.h"

namespace rargen {
namespace cpu {

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t M, int N, int K, bool accumulate_dinp);
void layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                 const float* dout, const float* inp, const float* ln_w,
                                 const float* ln_b, const float* scale, int64_t mod_stride,
                                 const int32_t* row_map, int64_t rows, int C, float eps);
void gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y,
                             const float* gate, int64_t mod_stride, const int32_t* row_map,
                             int64_t rows, int C);
void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n);
void silu_backward(float* dinp, const float* dout, const float* inp, int64_t n);
void dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site);
// LayerNorm row statistics (mean, 1/sqrt(var + eps)), two passes in double.
inline void row_mean_rstd(const float* x, int C, float eps, float& mean, float& rstd) {
  double m = sum(x, C) / C;
  double var = sumsq_dev(x, C, m) / C;
  mean = static_cast<float>(m);
  rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
}

// Per-task partial sums of `n` floats, summed into `dst` (+=) in task order. Tasks
// are cut from the problem size alone, so the result does not depend on the thread
// count or on which thread ran which task: training is bitwise reproducible.
struct Partials {
  int64_t tasks;
  int n;
  std::vector<float> buf;
  Partials(int64_t t, int n_) : tasks(t), n(n_), buf(static_cast<size_t>(t) * n_, 0.f) {}
  float* of(int64_t task) { return buf.data() + static_cast<size_t>(task) * n; }
  void reduce_into(float* dst) const {
    if (!dst) return;
    for (int i = 0; i < n; i++) {
      double s = 0;
      for (int64_t t = 0; t < tasks; t++) s += buf[static_cast<size_t>(t) * n + i];
      dst[i] += static_cast<float>(s);
    }
  }
};

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C);
void cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits,
                   const int32_t* targets, int64_t rows, int V, float grad_scale);
double sum_squares(const float* x, int64_t n);
void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float grad_scale, int64_t step);

}  // namespace cpu
}  // namespace rargen
