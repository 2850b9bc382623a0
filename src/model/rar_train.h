// RAR training on one backend: the training forward that saves what backward needs,
// the backward of the whole generator, and the optimizer step — written once against
// the Backend op table (src/backend.h, "training (backward)" block), like the
// inference model in rar.h.
//
// Memory: parameters, gradients and the two AdamW moments are four flat float32
// buffers in the same layout (state-dict order, MODEL.md), so the gradient norm and
// (later) a data-parallel all-reduce see one buffer. Activations are saved per block
// (x, both modulated LayerNorm outputs, qkv, attention output and log-sum-exp, the
// dropped-out proj / fc2 outputs, fc1 pre-activation and the dropped-out GELU), and
// re-allocated only when the batch grows. Attention probabilities and dropout masks
// are never stored: backward recomputes them (the masks from a counter-based hash of
// (seed, site, element), see dropout_bits in backend.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "model/adamw.h"
#include "model/rar.h"
#include "model/rar_params.h"

namespace rargen {

struct RarTrainOptions {
  float dropout = 0.1f;       // after attn.proj, after the MLP activation, after fc2
  float attn_dropout = 0.1f;  // on the attention probabilities
};

struct RarTrainBatch {
  const int32_t* ids = nullptr;        // (B, N) image tokens
  const int32_t* condition = nullptr;  // (B) embedding indices (V+1+k, or V+K+1 dropped)
  const int32_t* orders = nullptr;     // (B, N) permutations
  int B = 0;
  uint64_t dropout_seed = 0;
  float loss_scale = 1.f;  // gradients are of loss_scale * mean CE
  bool zero_grad = true;
  bool return_logits = false;
  // Called on the calling thread after each backward stage's ops are issued: `done` of
  // `total` stages of grad_stages() have final gradients (for an all-reduce that starts
  // each bucket as soon as it is final; src/binding_train.cc). Null: not called.
  std::function<void(int done, int total)> on_grads_final;
};

struct RarTrainStats {
  double loss = 0;  // mean CE over B*N targets
  int64_t correct = 0;
  int64_t count = 0;
  std::vector<float> logits;  // (B, N+1, V) when asked
};

enum class TrainTensor { Param, Grad, ExpAvg, ExpAvgSq };

class RarTrainer {
 public:
  struct ParamInfo {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0;  // into the flat buffers
    int64_t numel = 0;
    bool decayed = false;
  };

  RarTrainer(Backend* be, const RarConfig& cfg, const RarTrainOptions& opt);
  ~RarTrainer();
  RarTrainer(const RarTrainer&) = delete;
  RarTrainer& operator=(const RarTrainer&) = delete;

  const RarConfig& config() const { return cfg_; }
  Backend* backend() const { return be_; }
  const std::vector<ParamInfo>& params() const { return infos_; }
  int64_t num_params() const { return total_; }
  const ParamInfo& info(const std::string& name) const;  // throws naming the key

  // Host copies (float32, C order). Setting Param/ExpAvg/ExpAvgSq; getting any kind.
  void set_tensor(TrainTensor kind, const std::string& name, const float* host, int64_t n);
  void get_tensor(TrainTensor kind, const std::string& name, float* host, int64_t n) const;
  // The flat backend buffer of one kind (num_params() floats; device memory on CUDA):
  // the data-parallel all-reduce (src/binding_train.cc) reduces the gradients in place.
  float* flat(TrainTensor kind) const { return buffer(kind); }

  // Forward + backward; gradients are accumulated into the flat gradient buffer
  // (zeroed first when batch.zero_grad).
  RarTrainStats forward_backward(const RarTrainBatch& batch);
  // Clip + AdamW over every parameter; returns the gradient norm before clipping.
  double optimizer_step(const AdamWOptions& o);
  // The flat gradient buffer's ranges [begin, end) whose gradients are final after each
  // stage of backward, in backward's order: the head (lm_head, adaln_before_head), the
  // blocks from the last to the first, then the shared tables (embeddings, cls_token,
  // the position and timestep tables: written by the last ops). Every element is in one
  // stage; from the parameter table (model/rar_params.cc).
  using Ranges = std::vector<std::pair<int64_t, int64_t>>;
  std::vector<Ranges> grad_stages() const;

 private:
  struct BlockP {  // pointers into one flat buffer (params or grads), bound by RarParam id
    float *norm1_w = nullptr, *norm1_b = nullptr, *qkv_w = nullptr, *qkv_b = nullptr, *q_norm_w = nullptr,
          *q_norm_b = nullptr, *k_norm_w = nullptr, *k_norm_b = nullptr;
    float *proj_w = nullptr, *proj_b = nullptr, *norm2_w = nullptr, *norm2_b = nullptr, *fc1_w = nullptr,
          *fc1_b = nullptr, *fc2_w = nullptr, *fc2_b = nullptr, *ada_w = nullptr, *ada_b = nullptr;
  };
  struct ModelP {
    float *cls_token = nullptr, *pos_embed = nullptr, *target_aware_pos_embed = nullptr,
          *timesteps_embeddings = nullptr;  // (1,1,C) (1,P,C) (1,P,C) (1,Tt,C)
    std::vector<BlockP> blocks;
    float *embeddings = nullptr, *head_ada_w = nullptr, *head_ada_b = nullptr, *lm_head_w = nullptr,
          *lm_head_b = nullptr;  // (V+K+2,C) (2C,C) (2C) (V,C) (V)
  };
  struct Acts;

  ModelP bind(float* base) const;
  void ensure_acts(int B, int64_t P);
  float* buffer(TrainTensor kind) const;

  Backend* be_;
  RarConfig cfg_;
  RarTrainOptions opt_;
  std::vector<ParamSpec> table_;  // rar_param_table(cfg_): the order of infos_ and of the flat buffers
  std::vector<ParamInfo> infos_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
  float* params_ = nullptr;  // (total_)
  float* grads_ = nullptr;
  float* m_ = nullptr;
  float* v_ = nullptr;
  ModelP p_, g_;
  std::unique_ptr<Acts> acts_;
};

}  // namespace rargen
