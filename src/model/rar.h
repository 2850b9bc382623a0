// The RAR generator (MODEL.md), written once against the Backend op table: the
// training-path forward (permuted orders) and the KV-cached raster decode share the
// same block code (the attention op takes pos0 / Tn).
//
// Adaptive LN: a block's modulation rows depend only on (condition, position), so
// they are computed for the DISTINCT (condition, position) pairs only and rows find
// theirs through a row_map. The decode precomputes them for a chunk of upcoming
// positions at once (one GEMM of chunk x distinct rows per block instead of a GEMV
// per step), which takes the adaLN weights (a third of the model) out of the
// per-step weight stream.
//
// On backends with CUDA graphs (Backend::graph_capture_begin), the decode step t >= 1
// is recorded once and replayed: everything that changes per step (ids, row maps, the
// cache position) lives in backend memory uploaded before each replay. With F16/BF16
// weights and a backend that supports it, the KV cache is stored in F16.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend.h"
#include "model/params.h"
#include "model/rar_params.h"

namespace rargen {

struct RarBlockWeights {
  const float* norm1_w = nullptr;  // (C)
  const float* norm1_b = nullptr;  // (C)
  Weight qkv_w;                    // (3C, C)
  const float* qkv_b = nullptr;    // (3C)
  const float* q_norm_w = nullptr; // (D)
  const float* q_norm_b = nullptr; // (D)
  const float* k_norm_w = nullptr; // (D)
  const float* k_norm_b = nullptr; // (D)
  Weight proj_w;                   // (C, C)
  const float* proj_b = nullptr;   // (C)
  const float* norm2_w = nullptr;  // (C)
  const float* norm2_b = nullptr;  // (C)
  Weight fc1_w;                    // (I, C)
  const float* fc1_b = nullptr;    // (I)
  Weight fc2_w;                    // (C, I)
  const float* fc2_b = nullptr;    // (C)
  Weight ada_w;                    // (6C, C): shift1, scale1, gate1, shift2, scale2, gate2
  const float* ada_b = nullptr;    // (6C)
};

struct RarWeights {
  const float* cls_token = nullptr;               // (1, 1, C)
  const float* pos_embed = nullptr;               // (1, P, C)
  const float* target_aware_pos_embed = nullptr;  // (1, P, C)
  const float* timesteps_embeddings = nullptr;    // (1, Tt, C)
  const float* embeddings = nullptr;              // (V+1+K+1, C)
  std::vector<RarBlockWeights> blocks;            // depth
  Weight head_ada_w;                              // (2C, C): scale, shift (scale first)
  const float* head_ada_b = nullptr;              // (2C)
  Weight lm_head_w;                               // (V, C)
  const float* lm_head_b = nullptr;               // (V)
};

struct RarGenerateOptions {
  std::vector<int32_t> class_ids;  // B, each 0..K-1
  float guidance_scale = 0.f;      // 0 = no guidance
  float guidance_scale_pow = 1.f;
  float temperature = 1.f;
  int top_k = 0;                   // 0 = off
  float top_p = 1.f;               // 1 = off
  bool greedy = false;
  uint64_t seed = 0;
  int64_t index_offset = 0;        // global index of image 0 (per-image random streams)
};

// s_t = (g - 1) * (1 - cos(pi * (t/N)^p)) / 2 + 1, in float32 as the official code does.
float cfg_scale_at(int t, int N, float g, float p);
// The uniform in [0,1) for image `image` at step `step`: a splitmix64 chain of
// (seed, image, step), 24 random bits. Independent of how a run is split in batches.
float sampling_uniform(uint64_t seed, uint64_t image, uint64_t step);

class Rar {
 public:
  Rar(Backend* be, const RarConfig& cfg, DType weight_dtype);
  ~Rar();
  Rar(const Rar&) = delete;
  Rar& operator=(const Rar&) = delete;

  const RarConfig& config() const { return cfg_; }
  Backend* backend() const { return be_; }
  ParamTable& params() { return params_; }

  // Training path. ids, orders (B, N); condition (B) embedding indices.
  // Returns logits (B, N+1, V) on the host.
  std::vector<float> forward(const int32_t* ids, const int32_t* condition, const int32_t* orders, int B);

  // Teacher-forced KV-cached decode: row t of each image is the step-t logit (it
  // predicts token t from ids[:t]). Returns (B, N, V).
  std::vector<float> decode_steps(const int32_t* ids, const int32_t* condition, int B);

  using Progress = std::function<void(int64_t done, int64_t total)>;
  // Raster-order sampling with CFG. Returns tokens (B, N). Throws
  // Error("rargen: generation cancelled") when *cancel becomes true.
  std::vector<int32_t> generate(const RarGenerateOptions& opts, const Progress& progress,
                                const std::atomic<bool>* cancel);

 private:
  friend struct RarDecoder;
  struct Scratch;
  // One transformer block on rows = R * Tn positions (x updated in place). The KV
  // cache holds cache_dtype values (F32, or F16 where the backend supports it);
  // pos0_device, when not null, holds pos0 in backend memory (for CUDA graphs).
  void block(const RarBlockWeights& w, float* x, int R, int Tn, int pos0, const int32_t* pos0_device, int Tcache,
             void* kcache, void* vcache, DType cache_dtype, const float* mod, const int32_t* row_map, Scratch& s);
  // cond (P, C) <- SiLU(embeddings[cond_ids[p]] + timesteps_embeddings[pos_ids[p]]).
  void silu_conditions(float* cond, const int32_t* cond_ids, const int32_t* pos_ids, int64_t P);

  Backend* be_;
  RarConfig cfg_;
  RarWeights w_;
  ParamTable params_;
};

}  // namespace rargen
