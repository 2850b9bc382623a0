// The native boundary, shared by the N-API binding files (src/binding*.cc): the
// instance data (AddonData), the one handle style (make_handle / handle_arg over a
// type-tagged External owning a shared_ptr to a NativeObject), the one job class (Job:
// async worker with hold, progress and cancel), error throwers, argument getters,
// typed-array checks and conversions, overflow-checked sizes, the RarConfig of
// createRar/createTrainer and the device string. Header-only. docs/architecture.md
// places it among the layers.
//
// The checks that keep memory safe (handle kind, freed, busy, sizes) word their errors
// one way: "rargen.<fn>: Expected <what> for <param> but received <value>", "rargen.<fn>:
// this <kind> was freed | is busy ...", "rargen.<fn>: <what> would take N bytes ...".
#pragma once

#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <exception>
#include <functional>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <mutex>
#include <type_traits>
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

// How a received value is shown in the messages of the boundary ("but received ...").
inline std::string describe(const Napi::Value& v) {
  if (v.IsEmpty() || v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsExternal()) return "another kind of handle";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_uint8_array: return "Uint8Array";
      case napi_int32_array: return "Int32Array";
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      default: return "another typed array";
    }
  }
  if (v.IsNumber()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v.As<Napi::Number>().DoubleValue());
    return buf;
  }
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    return "string '" + (s.size() > 60 ? s.substr(0, 60) + "..." : s) + "'";
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsFunction()) return "a function";
  if (v.IsArray()) return "an array";
  if (v.IsObject()) return "an object";
  return "another type";
}

// ---------------- arguments ----------------

// An object argument, or "rargen.<fn>: Expected an object for <name> but received <value>".
inline Napi::Object object_arg(Napi::Env env, const Napi::Value& v, const std::string& fn, const std::string& name) {
  if (!v.IsObject())
    throw Napi::TypeError::New(env, "rargen." + fn + ": Expected an object for " + name + " but received " + describe(v));
  return v.As<Napi::Object>();
}
// A string argument, likewise.
inline std::string string_arg(Napi::Env env, const Napi::Value& v, const std::string& fn, const std::string& name) {
  if (!v.IsString())
    throw Napi::TypeError::New(env, "rargen." + fn + ": Expected a string for " + name + " but received " + describe(v));
  return v.As<Napi::String>().Utf8Value();
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

inline const char* typed_array_name(napi_typedarray_type type) {
  switch (type) {
    case napi_uint8_array: return "a Uint8Array";
    case napi_int32_array: return "an Int32Array";
    case napi_float32_array: return "a Float32Array";
    case napi_float64_array: return "a Float64Array";
    default: return "a typed array";
  }
}

// A typed array of the given type, or the boundary's TypeError
// "rargen.<fn>: Expected a Float32Array for <name> but received <value>".
inline void expect_typed_array(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, const std::string& fn,
                               const std::string& name) {
  if (!is_typed_array(v, type))
    throw Napi::TypeError::New(env, "rargen." + fn + ": Expected " + typed_array_name(type) + " for " + name +
                                        " but received " + describe(v));
}

// A copy of a typed array of the given type (see expect_typed_array).
template <class T, class JsArray>
std::vector<T> copy_typed_array(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, const std::string& fn,
                                const std::string& name) {
  expect_typed_array(env, v, type, fn, name);
  JsArray a = v.As<JsArray>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}
inline std::vector<int32_t> get_int32_array(Napi::Env env, const Napi::Value& v, const std::string& fn,
                                            const std::string& name) {
  return copy_typed_array<int32_t, Napi::Int32Array>(env, v, napi_int32_array, fn, name);
}
inline std::vector<float> get_float32_array(Napi::Env env, const Napi::Value& v, const std::string& fn,
                                            const std::string& name) {
  return copy_typed_array<float, Napi::Float32Array>(env, v, napi_float32_array, fn, name);
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

// A decimal string of an unsigned 64-bit integer (seeds cross the boundary as strings).
inline bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || *end) return false;
  out = v;
  return true;
}

// ---------------- instance data ----------------

// What the addon keeps between calls, one per Node environment (the main thread and each
// worker_thread load their own copy of the exports): the cancel flags of the running
// jobs, by the jobId JS gave them. Created by Init (src/binding.cc) and deleted with the
// environment. Everything per-env goes here: N-API has one instance-data slot per env.
struct AddonData {
  std::mutex jobs_mu;
  std::map<double, std::shared_ptr<std::atomic<bool>>> jobs;
};

inline AddonData& addon_data(Napi::Env env) {
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!d) {
    d = new AddonData;
    env.SetInstanceData<AddonData>(d);
  }
  return *d;
}

// ---------------- native handles ----------------

// Every native object the addon hands out (models, trainers, Inception, feature
// statistics, ...) is one style of handle: a JS External, type-tagged with its kind
// (napi_type_tag_object), owning a std::shared_ptr to the object's state. Taking a
// handle checks the tag, so a handle of one kind passed for another (or a foreign
// External, or an object that merely looks like one) is a TypeError instead of a cast
// of the wrong pointer; a running job holds its own shared_ptr, so neither GC nor a
// free() can pull the state from under it.
//
// A kind is a struct deriving from NativeObject with three constants:
//   struct MyState : NativeObject {
//     static constexpr napi_type_tag kTag = {0x72617267656e....ULL, 0x....000005ULL};  // unique per kind
//     static constexpr const char* kKind = "decode session";                // "this <kKind> was freed"
//     static constexpr const char* kWhat = "a decode session (from rarSession())";  // "Expected <kWhat> for ..."
//     ... the object itself ...
//   };
// make_handle(env, std::make_shared<MyState>(...)) makes the handle;
// handle_arg<MyState>(env, info[0], "fn") takes it back, checked; a Job that uses the
// object hold()s it.
struct NativeObject {
  std::atomic<int> jobs{0};  // jobs running on the object (Job::hold)
  bool freed = false;        // set by the kind's free function
};

namespace tags {
inline constexpr napi_type_tag kModel = {0x72617267656e4d6fULL, 0x64656c0000000001ULL};         // createRar / createVq
inline constexpr napi_type_tag kTrainer = {0x72617267656e5472ULL, 0x61696e6572000002ULL};       // createTrainer
inline constexpr napi_type_tag kInception = {0x72617267656e496eULL, 0x6365707469000003ULL};     // inceptionCreate
inline constexpr napi_type_tag kFeatureStats = {0x72617267656e4673ULL, 0x7461747300000004ULL};  // featureStatsCreate
inline constexpr napi_type_tag kSession = {0x72617267656e5365ULL, 0x7373696f6e000005ULL};      // sessionCreate
}  // namespace tags

// A new handle owning (a reference to) `st`.
template <class T>
Napi::Value make_handle(Napi::Env env, std::shared_ptr<T> st) {
  static_assert(std::is_base_of_v<NativeObject, T>, "a handle's state derives from NativeObject");
  auto* box = new std::shared_ptr<T>(std::move(st));
  auto e = Napi::External<std::shared_ptr<T>>::New(env, box, [](Napi::Env, std::shared_ptr<T>* p) { delete p; });
  e.TypeTag(&T::kTag);
  return e;
}

// The state of a handle of kind T; nullptr for anything else (freed or not).
template <class T>
std::shared_ptr<T> handle_state(const Napi::Value& v) {
  if (v.IsEmpty() || !v.IsExternal()) return nullptr;
  auto e = v.As<Napi::External<std::shared_ptr<T>>>();
  if (!e.CheckTypeTag(&T::kTag)) return nullptr;
  return *e.Data();
}

// What handle_arg accepts besides a live handle of the kind.
enum class Use {
  Idle,  // no job may be running on it (it is changed, or read off the worker's back)
  Any,   // jobs may be running (the call queues behind them, or only reads what they do not touch)
};

// The handle `param` of `fn`, checked with the one wording of the boundary:
//   rargen.<fn>: Expected <T::kWhat> for <param> but received <describe(v)>   (TypeError)
//   rargen.<fn>: this <T::kKind> was freed
//   rargen.<fn>: this <T::kKind> is busy with another job (one job at a time; await it first)
template <class T>
std::shared_ptr<T> handle_arg(Napi::Env env, const Napi::Value& v, const std::string& fn, Use use = Use::Idle,
                              const char* param = "handle") {
  std::shared_ptr<T> st = handle_state<T>(v);
  if (!st)
    throw Napi::TypeError::New(env, "rargen." + fn + ": Expected " + T::kWhat + " for " + param + " but received " +
                                        describe(v));
  if (st->freed) throw Napi::Error::New(env, "rargen." + fn + ": this " + T::kKind + " was freed");
  if (use == Use::Idle && st->jobs.load() > 0)
    throw Napi::Error::New(env, "rargen." + fn + ": this " + T::kKind +
                                    " is busy with another job (one job at a time; await it first)");
  return st;
}

// ---------------- sampling options ----------------

// The sampling fields of a JS options object (rarGenerate's options, sessionAdd's spec),
// the ones lib/native.ts's NativeSampling lists, plus the seed, into a struct with
// RarGenerateOptions' / RarSequenceOptions' field names: guidanceScale, guidanceScalePow,
// temperature and topP finite numbers, topK an integer in [0, top_k_max], greedy a
// boolean, seed a decimal string of an unsigned 64-bit integer. `w` names the object.
template <class Opts>
void get_sampling(Napi::Env env, const Napi::Object& o, const std::string& w, int top_k_max, Opts& s) {
  auto finite = [&](const char* key) {
    double d = get_number(env, o, key, w);
    if (!std::isfinite(d)) range_error(env, w + ": " + key + " must be a finite number");
    return static_cast<float>(d);
  };
  s.guidance_scale = finite("guidanceScale");
  s.guidance_scale_pow = finite("guidanceScalePow");
  s.temperature = finite("temperature");
  s.top_k = get_int(env, o, "topK", w, 0, top_k_max);
  s.top_p = finite("topP");
  Napi::Value g = o.Get("greedy");
  if (!g.IsBoolean()) type_error(env, w + ": greedy must be a boolean");
  s.greedy = g.As<Napi::Boolean>().Value();
  Napi::Value seed = o.Get("seed");
  if (!seed.IsString() || !parse_u64(seed.As<Napi::String>().Utf8Value(), s.seed))
    type_error(env, w + ": seed must be a decimal string of an unsigned 64-bit integer");
}

// An image index field (indexOffset, index): a non-negative safe integer.
inline int64_t get_image_index(Napi::Env env, const Napi::Object& o, const char* key, const std::string& w) {
  double d = get_number(env, o, key, w);
  if (!(d >= 0 && d == std::floor(d) && d <= 9007199254740991.0))
    range_error(env, w + ": " + key + " must be a non-negative safe integer");
  return static_cast<int64_t>(d);
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

// ---------------- call sites ----------------

// "rargen.<fn>: <rest>" for a message "rargen: <rest>", "rargen: <fn>: <rest>" or "<rest>";
// a message that already names a call ("rargen.<other>: ...") is kept. Without fn, the
// message as thrown.
inline std::string call_site_message(const char* fn, const std::string& msg) {
  if (!fn) return msg;
  const std::string named = std::string("rargen.") + fn + ": ";
  if (msg.rfind("rargen.", 0) == 0) return msg;
  std::string rest = msg.rfind("rargen: ", 0) == 0 ? msg.substr(8) : msg;
  const std::string fn_colon = std::string(fn) + ": ";
  if (rest.rfind(fn_colon, 0) == 0) rest = rest.substr(fn_colon.size());
  return named + rest;
}

// Rewrites a thrown JS error's message (and the first line of its stack) to
// call_site_message(fn, message).
inline void rename_error(Napi::Error& e, const char* fn) {
  Napi::Value v = e.Value();
  if (!fn || v.IsEmpty() || !v.IsObject()) return;
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value m = o.Get("message");
  if (!m.IsString()) return;
  std::string old_msg = m.As<Napi::String>().Utf8Value();
  std::string new_msg = call_site_message(fn, old_msg);
  if (new_msg == old_msg) return;
  o.Set("message", new_msg);
  Napi::Value stack = o.Get("stack");
  if (stack.IsString()) {
    std::string st = stack.As<Napi::String>().Utf8Value();
    size_t at = st.find(old_msg);
    if (at != std::string::npos) o.Set("stack", st.replace(at, old_msg.size(), new_msg));
  }
}

// The JS name of the exported function running on this thread (guarded<> sets it), or null.
inline const char*& current_call_site() {
  thread_local const char* fn = nullptr;
  return fn;
}
struct CallSiteScope {
  const char* saved;
  explicit CallSiteScope(const char* fn) : saved(current_call_site()) { current_call_site() = fn; }
  ~CallSiteScope() { current_call_site() = saved; }
};

// The JS stack now, as an Error object held until needed: V8 records the frames when the
// Error is made and formats them only when its stack is read, so a job that succeeds (a
// decode step, every generate call) pays for the record, never for the formatting.
inline Napi::ObjectReference js_stack_here(Napi::Env env) {
  return Napi::Persistent(Napi::Error::New(env, "").Value());
}
// The frames of such a stack (the lines after its first), or "".
inline std::string js_stack_frames(const Napi::ObjectReference& here) {
  if (here.IsEmpty()) return "";
  Napi::Value stack = here.Value().Get("stack");
  if (!stack.IsString()) return "";
  std::string st = stack.As<Napi::String>().Utf8Value();
  size_t nl = st.find('\n');
  return nl == std::string::npos ? "" : st.substr(nl + 1);
}

// ---------------- jobs ----------------

struct ProgressMsg {
  double done, total;
};

// The one job class: every promise-returning call of the addon is a Job. work(job) runs on
// a worker thread and must not touch JS values; result(env), on the main thread, builds
// what the promise resolves to (its exceptions reject it). Around that:
//   hold(obj)         the native object is busy (NativeObject::jobs) until the job settles,
//                     and alive until the job is gone;
//   keep(value)       a JS value stays alive until the job is gone;
//   progress(cb)      job.report(done, total) from the work calls cb(done, total) on the main
//                     thread (coalesced: the latest report wins; the last one is delivered);
//   cancellable(id)   a numeric jobId registers the job: cancel(jobId) sets cancel_flag(),
//                     which the work polls; a job cancelled before its promise settles
//                     rejects with an AbortError even if its work had finished;
//   on_finish         runs on the main thread before the promise settles.
// The work's exceptions become the rejection (their message, as an Error), named after the
// exported function that created the job ("rargen.<fn>: ...") and with the JS stack of
// that call (captured when the job is made, on the JS thread).
class Job : public Napi::AsyncProgressWorker<ProgressMsg> {
 public:
  using Work = std::function<void(Job&)>;
  using Result = std::function<Napi::Value(Napi::Env)>;

  Job(Napi::Env env, const char* name, Work work, Result result)
      : Napi::AsyncProgressWorker<ProgressMsg>(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        result_(std::move(result)),
        call_site_(current_call_site()),
        js_stack_(js_stack_here(env)) {}
  ~Job() override { unregister(); }

  Job& hold(std::shared_ptr<NativeObject> obj) {
    obj->jobs++;
    held_.push_back(std::move(obj));
    return *this;
  }
  Job& keep(const Napi::Value& v) {
    refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    return *this;
  }
  // A function cb; anything else (undefined) means no progress.
  Job& progress(const Napi::Value& cb) {
    if (cb.IsFunction()) progress_cb_ = Napi::Persistent(cb.As<Napi::Function>());
    return *this;
  }
  // A number registers the job under that id; anything else (undefined) leaves it uncancellable.
  Job& cancellable(const Napi::Value& job_id) {
    if (!job_id.IsNumber()) return *this;
    job_id_ = job_id.As<Napi::Number>().DoubleValue();
    cancel_ = std::make_shared<std::atomic<bool>>(false);
    AddonData& d = addon_data(Env());
    std::lock_guard<std::mutex> lk(d.jobs_mu);
    d.jobs[job_id_] = cancel_;
    data_ = &d;
    return *this;
  }
  const std::atomic<bool>* cancel_flag() const { return cancel_.get(); }
  // On the worker thread.
  void report(int64_t done, int64_t total) {
    if (exec_progress_ && !progress_cb_.IsEmpty()) {
      ProgressMsg m{static_cast<double>(done), static_cast<double>(total)};
      exec_progress_->Send(&m, 1);
    }
  }
  std::function<void()> on_finish;

  Napi::Promise promise() { return deferred_.Promise(); }
  // Queues the job (it deletes itself when done) and returns its promise.
  Napi::Promise start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

  // Sets the cancel flag of the job registered under `job_id` in this env, if any.
  static void cancel(Napi::Env env, double job_id) {
    AddonData& d = addon_data(env);
    std::lock_guard<std::mutex> lk(d.jobs_mu);
    auto it = d.jobs.find(job_id);
    if (it != d.jobs.end()) it->second->store(true);
  }

 protected:
  void Execute(const ExecutionProgress& progress) override {
    exec_progress_ = &progress;
    try {
      work_(*this);
    } catch (const rargen::Cancelled& e) {
      cancelled_ = true;  // an AbortError, by type (OnError)
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("rargen: unknown native error");
    }
    exec_progress_ = nullptr;
  }
  void OnProgress(const ProgressMsg* data, size_t count) override {
    if (count == 0 || progress_cb_.IsEmpty()) return;
    Napi::Env env = Env();
    try {
      progress_cb_.Call({Napi::Number::New(env, data[count - 1].done), Napi::Number::New(env, data[count - 1].total)});
    } catch (const Napi::Error&) {
      // An exception thrown by the progress callback must not kill the job.
    }
  }
  void OnOK() override {
    // cancel() before the promise settled rejects it even if the work had already run to
    // its end on the worker thread: cancelling right after starting a job always aborts
    // it, whatever the threads' timing (the result is dropped, as the caller asked).
    if (cancel_ && cancel_->load()) {
      cancelled_ = true;
      OnError(Napi::Error::New(Env(), rargen::Cancelled().what()));
      return;
    }
    finish();
    try {
      deferred_.Resolve(result_(Env()));
    } catch (Napi::Error& e) {
      rename_error(e, call_site_);
      reject(e);
    }
  }
  void OnError(const Napi::Error& e) override {
    finish();
    Napi::Env env = Env();
    Napi::Error err = Napi::Error::New(env, call_site_message(call_site_, e.Message()));
    if (cancelled_) {
      err.Set("name", Napi::String::New(env, "AbortError"));
      err.Set("code", Napi::String::New(env, "ABORT_ERR"));
    }
    reject(err);
  }

 private:
  // Rejects with err, its stack "<name>: <message>" and the frames of the JS call that
  // created the job (the worker thread has no JS stack of its own).
  void reject(Napi::Error& err) {
    Napi::Value v = err.Value();
    const std::string frames = js_stack_frames(js_stack_);
    if (v.IsObject() && !frames.empty()) {
      Napi::Object o = v.As<Napi::Object>();
      Napi::Value name = o.Get("name"), message = o.Get("message");
      std::string head = (name.IsString() ? name.As<Napi::String>().Utf8Value() : std::string("Error")) + ": " +
                         (message.IsString() ? message.As<Napi::String>().Utf8Value() : std::string());
      o.Set("stack", head + "\n" + frames);
    }
    deferred_.Reject(v);
  }
  void finish() {
    unregister();
    for (auto& o : held_) o->jobs--;
    if (on_finish) on_finish();
  }
  void unregister() {
    if (!cancel_ || !data_) return;
    std::lock_guard<std::mutex> lk(data_->jobs_mu);
    auto it = data_->jobs.find(job_id_);
    if (it != data_->jobs.end() && it->second == cancel_) data_->jobs.erase(it);
    data_ = nullptr;
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Result result_;
  std::vector<std::shared_ptr<NativeObject>> held_;
  std::vector<Napi::ObjectReference> refs_;
  Napi::FunctionReference progress_cb_;
  const ExecutionProgress* exec_progress_ = nullptr;
  std::shared_ptr<std::atomic<bool>> cancel_;
  AddonData* data_ = nullptr;
  double job_id_ = 0;
  std::atomic<bool> cancelled_{false};
  const char* call_site_;  // the exported function that created the job (guarded<>), or null
  Napi::ObjectReference js_stack_;  // an Error made at its creation (its stack: the JS call that made the job)
};

// Makes a Job (new: it deletes itself when done); chain hold/keep/progress/cancellable,
// then start() it.
inline Job* job(Napi::Env env, const char* name, Job::Work work, Job::Result result) {
  return new Job(env, name, std::move(work), std::move(result));
}

// A Job whose promise resolves to one typed array (Float32Array for float, Int32Array for
// int32_t): work(job), on the worker thread, returns its elements; the vector is kept by
// the job between the two threads. Chain hold/progress/cancellable, then start() it.
template <class T>
Job* array_job(Napi::Env env, const char* name, std::function<std::vector<T>(Job&)> work) {
  auto out = std::make_shared<std::vector<T>>();
  return job(
      env, name, [out, work = std::move(work)](Job& j) { *out = work(j); },
      [out](Napi::Env e) -> Napi::Value { return to_js(e, *out); });
}

// ---------------- exported functions ----------------

// Wraps an exported function so that rargen::Error / std::exception thrown outside the
// explicit handlers reach JS as an Error instead of terminating the process, and so that
// every native error names the JS call: "rargen.<fn>: <message>" (call_site_message),
// with the name set_exports passes as the callback's data. While F runs, the name is the
// thread's current call site, which a Job created by F keeps for its rejection.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  const char* fn = static_cast<const char*>(info.Data());
  CallSiteScope scope(fn);
  try {
    return F(info);
  } catch (Napi::Error& e) {
    rename_error(e, fn);
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), call_site_message(fn, e.what()));
  }
}

// One exported function: its JS name and its (guarded) implementation.
struct Export {
  const char* name;
  Napi::Value (*fn)(const Napi::CallbackInfo&);
};
// Sets each function on the exports; its name is also the callback's data, so that
// guarded<F> can name the JS call in native errors.
inline void set_exports(Napi::Env env, Napi::Object exports, std::initializer_list<Export> fns) {
  for (const Export& f : fns)
    exports.Set(f.name, Napi::Function::New(env, f.fn, f.name, const_cast<char*>(f.name)));
}

}  // namespace rargen::napi
