// Helpers shared by the N-API binding files (src/binding.cc, src/binding_eval.cc,
// src/binding_train.cc): error throwers, argument getters, typed-array checks and
// conversions, the RarConfig of createRar/createTrainer, the device string, and the
// plumbing of promise-returning workers. Header-only; everything is inline or a template.
//
// Messages are part of the API (tests and users match them): where call sites word an
// error differently, the helper takes a parameter rather than picking one wording.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "cuda_api.h"
#include "model/rar.h"

namespace rargen::napi {

// ---------------- errors: "rargen: <msg>" ----------------

[[noreturn]] inline void type_error(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, "rargen: " + msg);
}
[[noreturn]] inline void range_error(Napi::Env env, const std::string& msg) {
  throw Napi::RangeError::New(env, "rargen: " + msg);
}

// ---------------- fields of an options object ----------------

inline double get_number(Napi::Env env, const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) type_error(env, where + ": expected a number for " + key);
  return v.As<Napi::Number>().DoubleValue();
}

// An integer in [lo, hi]. The range error ends with "but received <value>" unless
// say_received is false (the training binding's wording).
inline int get_int(Napi::Env env, const Napi::Object& o, const char* key, const std::string& where, int lo, int hi,
                   bool say_received = true) {
  double d = get_number(env, o, key, where);
  if (!(d == std::floor(d)) || d < lo || d > hi)
    range_error(env, where + ": expected an integer between " + std::to_string(lo) + " and " + std::to_string(hi) +
                         " for " + key +
                         (say_received ? " but received " + Napi::Number::New(env, d).ToString().Utf8Value() : ""));
  return static_cast<int>(d);
}

// ---------------- typed arrays ----------------

inline bool is_typed_array(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

// A copy of a typed array of the given type; otherwise a TypeError "<what> must be <a_type>".
template <class T, class JsArray>
std::vector<T> copy_typed_array(Napi::Env env, const Napi::Value& v, napi_typedarray_type type,
                                const std::string& what, const char* a_type) {
  if (!is_typed_array(v, type)) type_error(env, what + " must be " + a_type);
  JsArray a = v.As<JsArray>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}
inline std::vector<int32_t> get_int32_array(Napi::Env env, const Napi::Value& v, const std::string& what) {
  return copy_typed_array<int32_t, Napi::Int32Array>(env, v, napi_int32_array, what, "an Int32Array");
}
inline std::vector<float> get_float32_array(Napi::Env env, const Napi::Value& v, const std::string& what) {
  return copy_typed_array<float, Napi::Float32Array>(env, v, napi_float32_array, what, "a Float32Array");
}

inline Napi::Float32Array to_js(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
  return a;
}
inline Napi::Int32Array to_js(Napi::Env env, const std::vector<int32_t>& v) {
  Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * 4);
  return a;
}

// ---------------- sizes ----------------

// Products of JS-supplied dimensions are formed with overflow checks: a wrapped product
// (2^40 rows x 2^24 classes = 0 mod 2^64) would let an empty array pass a length check.
// Returns false on overflow.
inline bool checked_product(std::initializer_list<uint64_t> dims, uint64_t* out) {
  uint64_t p = 1;
  for (uint64_t d : dims)
    if (__builtin_mul_overflow(p, d, &p)) return false;
  *out = p;
  return true;
}

// The most bytes the addon allocates for one result or workspace sized by arguments
// (4 GiB): above it a RangeError, never V8's uncatchable allocation failure or an
// out-of-memory kill. Real batches stay far below (a 256-image Inception batch is 5 MB).
constexpr uint64_t kMaxAllocBytes = uint64_t(4) << 30;

// Bytes of dims x elem_size, checked against overflow and kMaxAllocBytes; `what` names
// the allocation in the RangeError ("<fn>: <what> would take N bytes ...").
inline uint64_t checked_alloc_bytes(Napi::Env env, const std::string& fn, const std::string& what,
                                    std::initializer_list<uint64_t> dims, uint64_t elem_size) {
  uint64_t n = 0, bytes = 0;
  if (!checked_product(dims, &n) || __builtin_mul_overflow(n, elem_size, &bytes))
    throw Napi::RangeError::New(env, "rargen." + fn + ": " + what + " overflows 64 bits (the sizes given are too large)");
  if (bytes > kMaxAllocBytes)
    throw Napi::RangeError::New(env, "rargen." + fn + ": " + what + " would take " + std::to_string(bytes) +
                                         " bytes, more than the " + std::to_string(kMaxAllocBytes) +
                                         " bytes one native call allocates (use smaller batches)");
  return bytes;
}

// An owned copy of a typed array's elements, made on the main thread before a worker is
// queued. Why a copy and not a reference: a reference keeps the ArrayBuffer object
// alive but not its memory, since transferring the buffer (postMessage, structuredClone
// with `transfer`) detaches it and hands the memory to the new owner, which may free it
// while the worker reads (N-API has no way to pin the memory). The cost is measured in
// src/binding_eval.cc: 0.5% of featureStatsAdd, at most 22% of the cheap inceptionScore.
template <class T, class JsArray>
std::shared_ptr<const std::vector<T>> owned_copy(const JsArray& a) {
  return std::make_shared<const std::vector<T>>(a.Data(), a.Data() + a.ElementLength());
}

// ---------------- native handles ----------------

// Every handle the addon hands out carries a type tag (napi_type_tag_object, N-API 8),
// checked wherever a handle is taken, so a handle of one kind passed for another (or a
// foreign External) is a TypeError instead of a cast of the wrong pointer.
namespace tags {
inline constexpr napi_type_tag kModel = {0x72617267656e4d6fULL, 0x64656c0000000001ULL};         // createRar / createVq
inline constexpr napi_type_tag kTrainer = {0x72617267656e5472ULL, 0x61696e6572000002ULL};       // createTrainer
inline constexpr napi_type_tag kInception = {0x72617267656e496eULL, 0x6365707469000003ULL};     // inceptionCreate
inline constexpr napi_type_tag kFeatureStats = {0x72617267656e4673ULL, 0x7461747300000004ULL};  // featureStatsCreate
}  // namespace tags

// A new External owning `p` (deleted when collected), tagged.
template <class T>
Napi::External<T> new_handle(Napi::Env env, T* p, const napi_type_tag& tag) {
  Napi::External<T> e = Napi::External<T>::New(env, p, [](Napi::Env, T* q) { delete q; });
  e.TypeTag(&tag);
  return e;
}

// The data of an External made by new_handle with this tag; nullptr for anything else.
template <class T>
T* handle_data(const Napi::Value& v, const napi_type_tag& tag) {
  if (!v.IsExternal()) return nullptr;
  Napi::External<T> e = v.As<Napi::External<T>>();
  if (!e.CheckTypeTag(&tag)) return nullptr;
  return e.Data();
}

// ---------------- configs and devices ----------------

// The RarConfig fields of a JS config object (createRar, createTrainer); `where` names
// the object in messages ("createRar config"). Checks hiddenSize % numHeads == 0.
inline RarConfig get_rar_config(Napi::Env env, const Napi::Object& c, const std::string& where,
                                bool say_received = true) {
  auto get = [&](const char* key, int lo, int hi) { return get_int(env, c, key, where, lo, hi, say_received); };
  RarConfig cfg;
  cfg.hidden = get("hiddenSize", 1, 1 << 16);
  cfg.depth = get("depth", 1, 1024);
  cfg.heads = get("numHeads", 1, 1024);
  cfg.mlp = get("mlpDim", 1, 1 << 18);
  cfg.seq_len = get("seqLen", 1, 1 << 16);
  cfg.codebook = get("codebookSize", 1, 1 << 20);
  cfg.classes = get("numClasses", 1, 1 << 20);
  cfg.pos_rows = get("posEmbedRows", cfg.seq_len + 2, 1 << 20);
  cfg.ts_rows = get("timestepRows", cfg.seq_len + 2, 1 << 20);
  if (cfg.hidden % cfg.heads) range_error(env, where + ": hiddenSize must be divisible by numHeads");
  return cfg;
}

// The backend of a device string 'cpu', 'cuda' or 'cuda:N'. In a build without CUDA a
// CUDA device is an Error "... built without CUDA" followed by no_cuda_detail.
inline Backend* backend_for(Napi::Env env, const std::string& device, const std::string& no_cuda_detail = "") {
  if (device == "cpu") return cpu_backend();
  int index = -1;
  if (device == "cuda") index = 0;
  else if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() < 9 &&
           device.find_first_not_of("0123456789", 5) == std::string::npos)
    index = std::atoi(device.c_str() + 5);
  if (index < 0) range_error(env, "unknown device '" + device + "' (expected 'cpu', 'cuda' or 'cuda:N')");
#ifdef RARGEN_CUDA
  try {
    return cuda_backend(index);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen: device '") + device + "' is unavailable: " + e.what());
  }
#else
  throw Napi::Error::New(env, "rargen: device '" + device + "' is unavailable: this rargen addon was built without CUDA" +
                                  no_cuda_detail);
#endif
}

// ---------------- promise-returning workers ----------------

// The promise half of a worker (Base: Napi::AsyncWorker or Napi::AsyncProgressWorker<T>):
// the work's exceptions become the worker's error, and result(env), built on the main
// thread, resolves the promise.
template <class Base>
class PromiseWorkerBase : public Base {
 public:
  using Result = std::function<Napi::Value(Napi::Env)>;
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  PromiseWorkerBase(Napi::Env env, const char* name, Result result)
      : Base(env, name), deferred_(Napi::Promise::Deferred::New(env)), result_(std::move(result)) {}

  // On the worker thread: runs work(); an exception's message becomes the error.
  template <class Work>
  void run(Work&& work, const char* unknown_error) {
    try {
      work();
    } catch (const std::exception& e) {
      this->SetError(e.what());
    } catch (...) {
      this->SetError(unknown_error);
    }
  }
  // On the main thread: resolves with result(env), or rejects with what building it threw.
  void resolve() {
    Napi::Env env = this->Env();
    try {
      deferred_.Resolve(result_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void reject(const Napi::Value& error) { deferred_.Reject(error); }

 private:
  Napi::Promise::Deferred deferred_;
  Result result_;
};

// A promise-returning worker around two lambdas: exec() on a worker thread (it must not
// touch JS values), done(env) on the main thread. keep() holds JS objects (typed arrays,
// handles) alive until the worker is gone; on_finish runs on the main thread before the
// promise settles.
class PromiseWorker : public PromiseWorkerBase<Napi::AsyncWorker> {
 public:
  using Exec = std::function<void()>;
  PromiseWorker(Napi::Env env, const char* name, Exec exec, Result done,
                const char* unknown_error = "unknown native error")
      : PromiseWorkerBase(env, name, std::move(done)), exec_(std::move(exec)), unknown_error_(unknown_error) {}
  void keep(const Napi::Value& v) { refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }
  std::function<void()> on_finish;

 protected:
  void Execute() override { run(exec_, unknown_error_); }
  void OnOK() override {
    if (on_finish) on_finish();
    resolve();
  }
  void OnError(const Napi::Error& e) override {
    if (on_finish) on_finish();
    reject(e.Value());
  }

 private:
  Exec exec_;
  const char* unknown_error_;
  std::vector<Napi::ObjectReference> refs_;
};

// Queues a worker made with `new` (it deletes itself when done) and returns its promise.
template <class Worker>
Napi::Promise queue(Worker* w) {
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// ---------------- exported functions ----------------

// What guarded<> puts before the message of a native error.
enum class ErrorPrefix { None, Rargen /* "rargen: " */ };

// Wraps an exported function so that rargen::Error / std::exception thrown outside the
// explicit handlers reach JS as an Error instead of terminating the process.
template <Napi::Value (*F)(const Napi::CallbackInfo&), ErrorPrefix P = ErrorPrefix::None>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string(P == ErrorPrefix::Rargen ? "rargen: " : "") + e.what());
  }
}

}  // namespace rargen::napi
