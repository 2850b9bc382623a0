#include "model/adamw.h"

#include <algorithm>
#include <cmath>

namespace rargen {

double adamw_step(Backend* be, const std::vector<AdamWTensor>& tensors, const float* flat_grad,
                  int64_t n_total, const AdamWOptions& o) {
  const double norm = std::sqrt(be->sum_squares(flat_grad, n_total));
  float scale = 1.f;
  if (o.max_grad_norm > 0.f) {
    // torch.nn.utils.clip_grad_norm_: the norm in float32, coef clamped to 1.
    float coef = o.max_grad_norm / (static_cast<float>(norm) + 1e-6f);
    scale = std::min(1.f, coef);
  }
  for (const AdamWTensor& t : tensors)
    be->adamw(t.param, t.grad, t.m, t.v, t.n, o.lr, o.beta1, o.beta2, o.eps, t.decayed ? o.weight_decay : 0.f,
              scale, o.step);
  return norm;
}

}  // namespace rargen
