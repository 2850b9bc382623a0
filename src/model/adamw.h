// AdamW as 1d-tokenizer trains RAR: two parameter groups (each tensor's `decayed`
// comes from its model's parameter table, model/rar_params.h, which applies the
// official rule official_weight_decay in model/params.h), a global grad-norm clip before the step
// (PyTorch clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6))), and PyTorch's
// AdamW update (decoupled decay, bias-corrected moments, eps outside the sqrt).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"

namespace rargen {

struct AdamWOptions {
  float lr = 4e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.96f;
  float eps = 1e-8f;
  float weight_decay = 0.03f;
  float max_grad_norm = 1.f;  // <= 0: no clipping
  int64_t step = 1;           // 1-based, including this step
};

struct AdamWTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
  bool decayed;
};

// Clips and steps every tensor; returns the global gradient norm before clipping.
// All gradients live in `flat_grad` (n_total floats), so the norm is one reduction.
double adamw_step(Backend* be, const std::vector<AdamWTensor>& tensors, const float* flat_grad,
                  int64_t n_total, const AdamWOptions& o);

}  // namespace rargen
