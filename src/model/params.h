// Parameter descriptions and the loaded-parameter store.
//
// ParamSpec: one tensor of a model family's declarative table (model/rar_params.h):
// state-dict name, shape from the config, kind, official initialisation, whether
// AdamW decays it, and an id (the family's enum) by which consumers bind it to their
// own structs. Inference, training, the addon's table export (lib/ derives expected
// keys/shapes, decay and init from it) and the test weights are all derived from it.
//
// ParamTable: the named parameters a model fills from a state dict: each entry knows
// its PyTorch name, its exact shape, whether it is a matrix (stored in the model's
// weight dtype: F32, F16 or BF16) or a vector/table (always F32), and the pointer in
// the model's weights struct it fills. Errors name the key and both shapes.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"

namespace rargen {

std::string shape_str(const std::vector<int64_t>& s);

// What a tensor is: a GEMM weight (stored in the model's weight dtype), a bias, a
// normalisation scale or shift, a BatchNorm running statistic (mean, variance), or a
// lookup table / learned token (embedding).
enum class ParamKind { Linear, Conv, Bias, NormWeight, NormBias, NormStat, Embedding };
// The official initialisation (RAR's modeling/rar.py): trunc normal(0, 0.02), 0, 1.
enum class ParamInit { TruncNormal, Zeros, Ones };
const char* param_kind_name(ParamKind k);  // "linear", "conv", "bias", "norm_weight", "norm_bias", "norm_stat", "embedding"
const char* param_init_name(ParamInit i);  // "trunc_normal", "zeros", "ones"

// 1d-tokenizer's AdamW groups: no weight decay for tensors with < 2 dims or whose name
// contains ln, bias, embedding, norm, gamma, embed, latent_tokens or mask_token
// (case-sensitive: `adaln_before_head.*` is excluded through "ln", the blocks'
// `adaLN_modulation.1.weight` is not). Applied once, when a table is built.
bool official_weight_decay(const std::string& name, const std::vector<int64_t>& shape);

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  ParamKind kind;
  ParamInit init;
  bool decayed;   // official_weight_decay(name, shape)
  int id;         // the family's enum value (e.g. RarParam)
  int block;      // block index for per-block tensors, else -1
  int level = -1;  // resolution level (VQGAN), else -1
  int part = -1;   // which list of blocks (VQGAN: VqPart), else -1
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class ParamTable {
 public:
  ParamTable(Backend* be, DType matrix_dtype, std::string model_name)
      : be_(be), matrix_dtype_(matrix_dtype), model_(std::move(model_name)) {}
  ~ParamTable();
  ParamTable(const ParamTable&) = delete;
  ParamTable& operator=(const ParamTable&) = delete;

  // Declaration (by the model's constructor).
  void matrix(const std::string& name, std::vector<int64_t> shape, Weight* slot);
  void vector(const std::string& name, std::vector<int64_t> shape, const float** slot);

  // Loading: copies host float32 data (converted for matrices). Throws naming the key.
  void set(const std::string& name, const float* data, const std::vector<int64_t>& shape);
  // Throws listing every key not set yet.
  void finalize() const;
  // Throws listing the keys starting with one of `prefixes` that are not set yet
  // (a tokenizer used only to decode needs no encoder weights).
  void require(const std::vector<std::string>& prefixes, const std::string& what) const;
  bool finalized_ok() const;

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const std::vector<int64_t>* shape_of(const std::string& name) const;
  DType matrix_dtype() const { return matrix_dtype_; }
  size_t bytes() const { return bytes_; }

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    bool is_matrix;
    Weight* wslot = nullptr;
    const float** vslot = nullptr;
    void* mem = nullptr;  // backend allocation we own
    size_t mem_bytes = 0;
  };
  void add(Entry e);  // registers e under its name
  Backend* be_;
  DType matrix_dtype_;
  std::string model_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
  size_t bytes_ = 0;
};

// A backend allocation freed on scope exit.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* be, size_t n) : be_(be), n_(n) {
    p_ = static_cast<T*>(be->alloc(std::max<size_t>(1, n) * sizeof(T)));
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : be_(o.be_), p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_;
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
    }
    return *this;
  }
  void reset() {
    if (p_) be_->free(p_);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  Backend* be_ = nullptr;
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace rargen
