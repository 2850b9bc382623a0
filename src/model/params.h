// The named parameter table a model fills from a state dict: each entry knows its
// PyTorch name, its exact shape, whether it is a matrix (stored in the model's weight
// dtype: F32, F16 or BF16) or a vector/table (always F32), and the pointer in the
// model's weights struct it fills. Errors name the key and both shapes.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend.h"

namespace rargen {

std::string shape_str(const std::vector<int64_t>& s);

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
