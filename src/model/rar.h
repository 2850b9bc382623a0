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
// The KV-cached decoder (RarDecoder, rar.cc) has a pool of cache slots; every row of a
// call names its slot, condition, step and input token, so rows at different positions
// share one batch (RarSession admits and retires sequences between steps). Modulation
// rows live in a small pool of (condition, block of `chunk` positions) entries, each
// computed on demand by the same call (so bit for bit the same wherever it is used)
// and evicted least-recently-used.
//
// On backends with CUDA graphs (Backend::graph_capture_begin), a decode call (Tn = 1)
// of R rows is recorded once and replayed while R stays the same (re-recorded when it
// changes): everything that changes per step (ids, row maps, positions, slots) lives
// in backend memory uploaded before each replay. With F16/BF16 weights and a backend
// that supports it, the KV cache is stored in F16.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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

// A cancelled generate() (the binding maps this type to an AbortError).
struct Cancelled : Error {
  Cancelled() : Error("rargen: generation cancelled") {}
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
  // Raster-order sampling with CFG. Returns tokens (B, N). Throws Cancelled when
  // *cancel becomes true.
  std::vector<int32_t> generate(const RarGenerateOptions& opts, const Progress& progress,
                                const std::atomic<bool>* cancel);

 private:
  friend struct RarDecoder;
  friend class RarSession;
  struct Scratch;
  // One transformer block on rows = R * Tn positions (x updated in place). Row r's
  // positions start at pos[r] and its keys/values live in cache slot slot[r] of
  // kcache/vcache (slots, H, Tcache, D) of cache_dtype values (backend memory).
  void block(const RarBlockWeights& w, float* x, int R, int Tn, const int32_t* pos, const int32_t* slot, int slots,
             int Tcache, void* kcache, void* vcache, DType cache_dtype, const float* mod, const int32_t* row_map,
             Scratch& s);
  // cond (P, C) <- SiLU(embeddings[cond_ids[p]] + timesteps_embeddings[pos_ids[p]]).
  void silu_conditions(float* cond, const int32_t* cond_ids, const int32_t* pos_ids, int64_t P);

  Backend* be_;
  RarConfig cfg_;
  RarWeights w_;
  ParamTable params_;
};

struct RarDecoder;

// Options of one sequence of a RarSession (as RarGenerateOptions, for one image).
struct RarSequenceOptions {
  int32_t class_id = 0;            // 0..K-1
  float guidance_scale = 0.f;      // 0 = no guidance (1 row), else 2 rows (cond + null)
  float guidance_scale_pow = 1.f;
  float temperature = 1.f;         // > 0
  int top_k = 0;                   // 0..V
  float top_p = 1.f;               // (0, 1]
  bool greedy = false;
  uint64_t seed = 0;
  int64_t index = 0;               // image index in the seed's stream (generate's index_offset + i)
};

// Thrown by RarSession::add when the sequence's rows do not fit.
struct SessionFull : Error {
  using Error::Error;
};

// Continuous batching over one decoder: sequences are added and cancelled at any time
// (from any thread); step() runs one iteration over the active ones: the prefill
// (positions 0 and 1) of those added since the last step, then one decode step of the
// others, each sampled with its own options. A sequence's tokens equal
// generate({class_id}, seed, index_offset = index, same options) whatever else runs
// beside it, since every op's per-row result is independent of the other rows.
class RarSession {
 public:
  // max_rows <= 0: as many KV rows as the memory budget allows.
  RarSession(Rar& model, int max_rows);
  ~RarSession();
  RarSession(const RarSession&) = delete;
  RarSession& operator=(const RarSession&) = delete;

  int max_rows() const { return max_rows_; }
  int free_rows() const;
  int active() const;  // sequences in flight (added, not finished or cancelled)
  static int rows_for(const RarSequenceOptions& o) { return o.guidance_scale != 0.f ? 2 : 1; }
  // Validates o (Error naming the field) and returns the new sequence's id; throws
  // SessionFull when its rows are not free.
  int64_t add(const RarSequenceOptions& o);
  // Frees the sequence's rows: now, or at the end of a running step. False for an
  // unknown (or finished) id.
  bool cancel(int64_t id);

  struct Finished {
    int64_t id;
    std::vector<int32_t> tokens;  // N
  };
  struct StepResult {
    std::vector<std::pair<int64_t, int>> progressed;  // (id, tokens now) of every sequence that sampled
    std::vector<Finished> finished;                   // their rows are free again
  };
  // One iteration (one thread at a time); empty when nothing is active.
  StepResult step();

 private:
  struct Seq;
  void release(Seq& s);  // mu_ held
  Rar& m_;
  int max_rows_;
  std::unique_ptr<RarDecoder> dec_;
  mutable std::mutex mu_;
  std::map<int64_t, std::unique_ptr<Seq>> seqs_;
  std::vector<int> free_slots_;
  int64_t next_id_ = 1;
  bool in_step_ = false;
};

}  // namespace rargen
