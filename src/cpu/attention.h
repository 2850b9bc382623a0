// The CPU attention op family (src/cpu/attention.cc): ONE forward, used by both
// Backend::attention (prefill and decode over a KV cache, per-row positions and slots)
// and Backend::attention_train_forward (no cache: saved log-sum-exp, dropout), and the
// training backward beside it. Argument meaning: src/backend.h.
#pragma once
#include <cstdint>

namespace rargen {
namespace cpu {

// Causal attention of R rows of Tn new positions over kcache/vcache (slots, H, Tcache,
// D), fp32: row r's normalised k and raw v are stored at slot[r], positions
// pos[r]..pos[r]+Tn-1, then each query attends keys 0..pos[r]+i. Arguments are trusted
// (CpuBackend validates them). lse (R*H*Tn, may be null): the log-sum-exp of each query's
// scores. p_drop > 0 (positions 0 only): dropout on the probabilities, element (r, h, i, j)
// of index ((r*H + h)*Tn + i)*Tn + j.
void attention_forward(float* out, float* lse, float* kcache, float* vcache, const float* qkv, const float* q_norm_w,
                       const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int R, int Tn,
                       const int32_t* pos, const int32_t* slot, int Tcache, int H, int D, float eps, float p_drop,
                       uint64_t seed, uint64_t site);
void attention_train_forward(float* out, float* lse, const float* qkv, const float* q_norm_w,
                             const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                             int B, int T, int H, int D, float eps, float p_drop, uint64_t seed,
                             uint64_t site);
void attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w,
                        float* dk_norm_b, const float* dout, const float* out, const float* lse,
                        const float* qkv, const float* q_norm_w, const float* q_norm_b,
                        const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D,
                        float eps, float p_drop, uint64_t seed, uint64_t site);

}  // namespace cpu
}  // namespace rargen
