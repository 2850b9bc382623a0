#include "model/params.h"

#include <algorithm>

namespace rargen {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  if (s.size() == 1) r += ",";
  return r + ")";
}

const char* param_kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::Linear: return "linear";
    case ParamKind::Conv: return "conv";
    case ParamKind::Bias: return "bias";
    case ParamKind::NormWeight: return "norm_weight";
    case ParamKind::NormBias: return "norm_bias";
    case ParamKind::NormStat: return "norm_stat";
    case ParamKind::Embedding: return "embedding";
  }
  return "?";
}

const char* param_init_name(ParamInit i) {
  switch (i) {
    case ParamInit::TruncNormal: return "trunc_normal";
    case ParamInit::Zeros: return "zeros";
    case ParamInit::Ones: return "ones";
  }
  return "?";
}

bool official_weight_decay(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() < 2) return false;
  for (const char* s : {"ln", "bias", "embedding", "norm", "gamma", "embed", "latent_tokens", "mask_token"})
    if (name.find(s) != std::string::npos) return false;
  return true;
}

ParamTable::~ParamTable() {
  for (auto& e : entries_)
    if (e.mem) be_->free(e.mem);
}

void ParamTable::add(Entry e) {
  index_[e.name] = entries_.size();
  entries_.push_back(std::move(e));
}

void ParamTable::matrix(const std::string& name, std::vector<int64_t> shape, Weight* slot) {
  add({name, std::move(shape), /*is_matrix=*/true, slot, nullptr});
}

void ParamTable::vector(const std::string& name, std::vector<int64_t> shape, const float** slot) {
  add({name, std::move(shape), /*is_matrix=*/false, nullptr, slot});
}

const std::vector<int64_t>* ParamTable::shape_of(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second].shape;
}

void ParamTable::set(const std::string& name, const float* data, const std::vector<int64_t>& shape) {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("rargen: unknown weight '" + name + "': not a parameter of this " + model_);
  Entry& e = entries_[it->second];
  if (shape != e.shape)
    throw Error("rargen: weight '" + name + "': expected shape " + shape_str(e.shape) + ", found " + shape_str(shape));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (e.mem) {
    be_->free(e.mem);
    bytes_ -= e.mem_bytes;
    e.mem = nullptr;
  }
  if (e.is_matrix) {
    Weight w = be_->upload_weight(data, n, matrix_dtype_);
    e.mem = const_cast<void*>(w.data);
    e.mem_bytes = static_cast<size_t>(n) * dtype_size(matrix_dtype_);
    *e.wslot = w;
  } else {
    e.mem = be_->alloc(static_cast<size_t>(n) * 4);
    be_->upload(e.mem, data, static_cast<size_t>(n) * 4);
    e.mem_bytes = static_cast<size_t>(n) * 4;
    *e.vslot = static_cast<const float*>(e.mem);
  }
  bytes_ += e.mem_bytes;
}

bool ParamTable::finalized_ok() const {
  return std::all_of(entries_.begin(), entries_.end(), [](const Entry& e) { return e.mem != nullptr; });
}

namespace {
std::string missing_message(const std::vector<std::string>& missing, const std::string& what) {
  std::string msg = "rargen: " + std::to_string(missing.size()) + " weight" + (missing.size() == 1 ? "" : "s") +
                    " of this " + what + " not set: ";
  for (size_t i = 0; i < missing.size() && i < 20; i++) msg += (i ? ", " : "") + missing[i];
  if (missing.size() > 20) msg += ", ... (" + std::to_string(missing.size() - 20) + " more)";
  return msg;
}
}  // namespace

void ParamTable::require(const std::vector<std::string>& prefixes, const std::string& what) const {
  std::vector<std::string> missing;
  for (const auto& e : entries_) {
    if (e.mem) continue;
    for (const auto& p : prefixes)
      if (e.name.compare(0, p.size(), p) == 0) {
        missing.push_back(e.name);
        break;
      }
  }
  if (!missing.empty()) throw Error(missing_message(missing, model_ + " " + what));
  be_->synchronize();
}

void ParamTable::finalize() const {
  std::vector<std::string> missing;
  for (const auto& e : entries_)
    if (!e.mem) missing.push_back(e.name);
  if (missing.empty()) {
    be_->synchronize();
    return;
  }
  throw Error(missing_message(missing, model_));
}

}  // namespace rargen
