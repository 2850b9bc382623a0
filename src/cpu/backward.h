// CPU implementations of the training ops of src/backend.h ("training (backward)"
// block). CpuBackend forwards each of those virtuals here; the argument order and
// meaning are the op table's (see backend.h for the contract of each).
#pragma once
#include <cstdint>

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
void attention_train_forward(float* out, float* lse, const float* qkv, const float* q_norm_w,
                             const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                             int B, int T, int H, int D, float eps, float p_drop, uint64_t seed,
                             uint64_t site);
void attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w,
                        float* dk_norm_b, const float* dout, const float* out, const float* lse,
                        const float* qkv, const float* q_norm_w, const float* q_norm_b,
                        const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D,
                        float eps, float p_drop, uint64_t seed, uint64_t site);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C);
void cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits,
                   const int32_t* targets, int64_t rows, int V, float grad_scale);
double sum_squares(const float* x, int64_t n);
void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float grad_scale, int64_t step);

}  // namespace cpu
}  // namespace rargen
