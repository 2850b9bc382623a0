// N-API entry point (the NativeAddon contract of lib/native.ts). Each exported
// function validates its arguments again (the TypeScript layer has already validated
// them), copies them into plain structs and, for long work, runs a napi::Job on a
// worker thread returning a promise; the worker never touches JS values. rargen::Error
// and other C++ exceptions become JS errors.
//
// A model handle is a napi handle (src/napi_util.h: a type-tagged External) owning a
// shared ModelState; a running job holds that state, so neither GC nor free() can
// pull the weights from under it, and a model runs one job at a time.
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend.h"
#include "cuda_api.h"
#include "model/inception_params.h"
#include "model/rar.h"
#include "model/rar_params.h"
#include "model/vqgan.h"
#include "model/vqgan_params.h"
#include "napi_util.h"
#include "session_ref.h"

namespace {

using rargen::Backend;
using namespace rargen::napi;  // src/napi_util.h

// ---------------- argument helpers ----------------

void check_range(Napi::Env env, const std::vector<int32_t>& v, int lo, int hi, const std::string& what,
                 const std::string& meaning) {
  for (size_t i = 0; i < v.size(); i++)
    if (v[i] < lo || v[i] > hi)
      range_error(env, "expected an integer between " + std::to_string(lo) + " and " + std::to_string(hi) + " (" +
                           meaning + ") for " + what + "[" + std::to_string(i) + "] but received " +
                           std::to_string(v[i]));
}

// In a build without CUDA, a CUDA device's error ends with this advice.
const char* const kNoCudaDetail =
    " (nvcc was not found at build time); use device 'cpu' or rebuild with the CUDA toolkit";

// ---------------- models ----------------

struct ModelState : NativeObject {
  static constexpr napi_type_tag kTag = tags::kModel;
  static constexpr const char* kKind = "model";
  static constexpr const char* kWhat = "a model from createRar() or createVq()";
  std::unique_ptr<rargen::Rar> rar;
  std::unique_ptr<rargen::Vq> vq;
  std::string device;
  bool finalized = false;
  rargen::ParamTable& params() { return rar ? rar->params() : vq->params(); }
};

enum class Want { Any, Rar, Vq };

// The model's state, checked: a model handle, not freed, idle, of the wanted kind.
std::shared_ptr<ModelState> model_arg(Napi::Env env, const Napi::Value& v, const char* fn, Want want,
                                      bool need_finalized) {
  auto st = handle_arg<ModelState>(env, v, fn, Use::Idle, "model");
  if (want == Want::Rar && !st->rar)
    throw Napi::TypeError::New(env, std::string("rargen.") + fn +
                                        ": Expected a generator model (from createRar()) for model but received a "
                                        "tokenizer (from createVq())");
  if (want == Want::Vq && !st->vq)
    throw Napi::TypeError::New(env, std::string("rargen.") + fn +
                                        ": Expected a tokenizer model (from createVq()) for model but received a "
                                        "generator (from createRar())");
  if (need_finalized && !st->finalized)
    throw Napi::Error::New(env, std::string("rargen.") + fn +
                                    ": the model is not finalized: set every weight, then call finalize()");
  return st;
}

}  // namespace

namespace rargen {
// For src/binding_session.cc: the generator of a model handle, checked as model_arg
// does (a finalized generator, idle), with its state kept alive while held.
RarModelRef rar_model_ref(Napi::Env env, const Napi::Value& v, const char* fn) {
  auto st = model_arg(env, v, fn, Want::Rar, true);
  RarModelRef r;
  r.obj = st;
  r.rar = [st]() -> Rar* { return st->freed ? nullptr : st->rar.get(); };
  return r;
}
}  // namespace rargen

namespace {

Napi::Value CreateRar(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = object_arg(env, info[0], "createRar", "config");
  std::string device = string_arg(env, info[1], "createRar", "device");
  if (!info[2].IsString()) type_error(env, "createRar: weightDtype must be 'f32', 'f16' or 'bf16'");
  rargen::RarConfig cfg = get_rar_config(env, c, "createRar config");
  int D = cfg.hidden / cfg.heads;
  if (D > 128) range_error(env, "createRar config: head dim hiddenSize/numHeads = " + std::to_string(D) + " exceeds 128");
  std::string dt = info[2].As<Napi::String>().Utf8Value();
  rargen::DType dtype;
  if (dt == "f32") dtype = rargen::DType::F32;
  else if (dt == "f16") dtype = rargen::DType::F16;
  else if (dt == "bf16") dtype = rargen::DType::BF16;
  else range_error(env, "createRar: weightDtype must be 'f32', 'f16' or 'bf16' but received '" + dt + "'");
  Backend* be = backend_for(env, device, kNoCudaDetail);
  auto st = std::make_shared<ModelState>();
  st->rar = std::make_unique<rargen::Rar>(be, cfg, dtype);  // its errors: guarded<>
  st->device = device;
  return make_handle(env, st);
}

// The VqConfig fields of a JS config object (createVq, vqParamTable).
rargen::VqConfig vq_config_arg(Napi::Env env, const Napi::Object& c, const std::string& w) {
  rargen::VqConfig cfg;
  cfg.hidden = get_int(env, c, "hiddenChannels", w, 1, 1 << 14);
  cfg.num_res_blocks = get_int(env, c, "numResBlocks", w, 1, 64);
  cfg.z = get_int(env, c, "zChannels", w, 1, 1 << 14);
  cfg.codebook = get_int(env, c, "codebookSize", w, 1, 1 << 20);
  cfg.resolution = get_int(env, c, "resolution", w, 1, 1 << 14);
  Napi::Value m = c.Get("channelMult");
  if (!m.IsArray() || m.As<Napi::Array>().Length() == 0 || m.As<Napi::Array>().Length() > 10)
    type_error(env, w + ": channelMult must be a non-empty array of integers");
  Napi::Array ma = m.As<Napi::Array>();
  for (uint32_t i = 0; i < ma.Length(); i++) {
    Napi::Value e = ma.Get(i);
    if (!e.IsNumber() || e.As<Napi::Number>().DoubleValue() != std::floor(e.As<Napi::Number>().DoubleValue()) ||
        e.As<Napi::Number>().DoubleValue() < 1 || e.As<Napi::Number>().DoubleValue() > 64)
      range_error(env, w + ": channelMult[" + std::to_string(i) + "] must be an integer between 1 and 64");
    cfg.mult.push_back(e.As<Napi::Number>().Int32Value());
  }
  return cfg;
}

Napi::Value CreateVq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = object_arg(env, info[0], "createVq", "config");
  std::string device = string_arg(env, info[1], "createVq", "device");
  rargen::VqConfig cfg = vq_config_arg(env, c, "createVq config");
  Backend* be = backend_for(env, device, kNoCudaDetail);
  auto st = std::make_shared<ModelState>();
  st->vq = std::make_unique<rargen::Vq>(be, cfg);
  st->device = device;
  return make_handle(env, st);
}

Napi::Value SetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "setWeight", Want::Any, false);
  std::string name = string_arg(env, info[1], "setWeight", "name");
  expect_typed_array(env, info[2], napi_float32_array, "setWeight", "the data of '" + name + "'");
  Napi::Float32Array data = info[2].As<Napi::Float32Array>();
  if (!info[3].IsArray()) type_error(env, "setWeight: shape for '" + name + "' must be an array of integers");
  Napi::Array sa = info[3].As<Napi::Array>();
  std::vector<int64_t> shape;
  double numel = 1;
  for (uint32_t i = 0; i < sa.Length(); i++) {
    Napi::Value e = sa.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d == std::floor(d) && d < 9e15))
      range_error(env, "setWeight: shape[" + std::to_string(i) + "] of '" + name + "' must be a non-negative integer");
    shape.push_back(static_cast<int64_t>(d));
    numel *= d;
  }
  if (!st->params().has(name))
    throw Napi::Error::New(env, "rargen: unknown weight '" + name + "': not a parameter of this " +
                                    (st->rar ? "RAR generator" : "MaskGIT-VQGAN") + " (check the checkpoint and config)");
  if (numel != static_cast<double>(data.ElementLength()))
    range_error(env, "setWeight: data for '" + name + "' has " + std::to_string(data.ElementLength()) +
                         " elements but shape " + rargen::shape_str(shape) + " needs " +
                         std::to_string(static_cast<int64_t>(numel)));
  st->params().set(name, data.Data(), shape);
  st->finalized = false;
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "finalize", Want::Any, false);
  st->params().finalize();
  st->finalized = true;
  return env.Undefined();
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = handle_state<ModelState>(info[0]);
  if (st && st->freed) return env.Undefined();  // idempotent
  st = handle_arg<ModelState>(env, info[0], "free", Use::Idle, "model");
  st->rar.reset();
  st->vq.reset();
  st->freed = true;
  return env.Undefined();
}

// Checks ids (B*N tokens) and condition (B embedding indices) of a generator.
int check_rar_inputs(Napi::Env env, const rargen::RarConfig& c, const char* fn, const std::vector<int32_t>& ids,
                     const std::vector<int32_t>& cond) {
  const int64_t B = static_cast<int64_t>(cond.size());
  if (B < 1) range_error(env, std::string(fn) + ": condition must hold at least one entry");
  if (static_cast<int64_t>(ids.size()) != B * c.seq_len)
    range_error(env, std::string(fn) + ": ids has " + std::to_string(ids.size()) + " entries but condition has " +
                         std::to_string(B) + " images of " + std::to_string(c.seq_len) + " tokens (" +
                         std::to_string(B * c.seq_len) + " expected)");
  check_range(env, ids, 0, c.codebook - 1, std::string(fn) + ": ids", "image token ids");
  check_range(env, cond, c.codebook + 1, c.codebook + c.classes + 1, std::string(fn) + ": condition",
              "class embedding indices V+1+k, or V+K+1 for the null class");
  return static_cast<int>(B);
}

Napi::Value RarForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "rarForward", Want::Rar, true);
  const auto& c = st->rar->config();
  auto ids = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[1], "rarForward", "ids"));
  auto cond = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[2], "rarForward", "condition"));
  auto orders = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[3], "rarForward", "orders"));
  int B = check_rar_inputs(env, c, "rarForward", *ids, *cond);
  if (orders->size() != ids->size())
    range_error(env, "rarForward: orders has " + std::to_string(orders->size()) + " entries, expected " +
                         std::to_string(ids->size()));
  for (int b = 0; b < B; b++) {
    std::vector<char> seen(c.seq_len, 0);
    for (int k = 0; k < c.seq_len; k++) {
      int32_t o = (*orders)[static_cast<size_t>(b) * c.seq_len + k];
      if (o < 0 || o >= c.seq_len || seen[o])
        range_error(env, "rarForward: orders[" + std::to_string(b) + "] is not a permutation of 0.." +
                             std::to_string(c.seq_len - 1) + " (value " + std::to_string(o) + " at position " +
                             std::to_string(k) + ")");
      seen[o] = 1;
    }
  }
  return array_job<float>(env, "rargen:rarForward",
                          [=](Job&) { return st->rar->forward(ids->data(), cond->data(), orders->data(), B); })
      ->hold(st)
      .start();
}

Napi::Value RarDecodeSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "rarDecodeSteps", Want::Rar, true);
  const auto& c = st->rar->config();
  auto ids = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[1], "rarDecodeSteps", "ids"));
  auto cond = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[2], "rarDecodeSteps", "condition"));
  int B = check_rar_inputs(env, c, "rarDecodeSteps", *ids, *cond);
  return array_job<float>(env, "rargen:rarDecodeSteps",
                          [=](Job&) { return st->rar->decode_steps(ids->data(), cond->data(), B); })
      ->hold(st)
      .start();
}

Napi::Value RarGenerate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "rarGenerate", Want::Rar, true);
  const auto& c = st->rar->config();
  Napi::Object o = object_arg(env, info[1], "rarGenerate", "options");
  const std::string w = "rarGenerate options";
  rargen::RarGenerateOptions opts;
  opts.class_ids = get_int32_array(env, o.Get("classIds"), "rarGenerate", "classIds");
  if (opts.class_ids.empty()) range_error(env, "rarGenerate: classIds must hold at least one class id");
  check_range(env, opts.class_ids, 0, c.classes - 1, "classIds", "class ids");
  get_sampling(env, o, w, c.codebook, opts);
  if (!(opts.temperature > 0)) range_error(env, w + ": temperature must be > 0");
  if (!(opts.top_p > 0 && opts.top_p <= 1)) range_error(env, w + ": topP must be in (0, 1]");
  opts.index_offset = get_image_index(env, o, "indexOffset", w);
  Napi::Value cb = o.Get("onProgress");
  if (!cb.IsUndefined() && !cb.IsFunction()) type_error(env, w + ": onProgress must be a function");
  Napi::Value jid = o.Get("jobId");
  if (!jid.IsUndefined() && !jid.IsNumber()) type_error(env, w + ": jobId must be a number");

  auto optsp = std::make_shared<rargen::RarGenerateOptions>(std::move(opts));
  return array_job<int32_t>(env, "rargen:rarGenerate",
                            [=](Job& j) {
                              return st->rar->generate(*optsp, [&j](int64_t d, int64_t t) { j.report(d, t); },
                                                       j.cancel_flag());
                            })
      ->hold(st)
      .progress(cb)
      .cancellable(jid)
      .start();
}

Napi::Value Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) type_error(env, "cancel: jobId must be a number");
  Job::cancel(env, info[0].As<Napi::Number>().DoubleValue());
  return env.Undefined();
}

// A tokenizer may be used for one direction only: decoding needs the decoder and the
// codebook, encoding the encoder and the codebook. finalize() still checks them all.
void require_part(Napi::Env env, ModelState& st, const std::vector<std::string>& prefixes, const char* what) {
  if (!st.finalized) st.params().require(prefixes, what);
}

int get_batch(Napi::Env env, const Napi::Value& v, const char* fn) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 1 && d == std::floor(d) && d <= (1 << 24)))
    range_error(env, std::string(fn) + ": batch must be a positive integer");
  return static_cast<int>(d);
}

Napi::Value VqDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "vqDecode", Want::Vq, false);
  require_part(env, *st, {"decoder.", "quantize."}, "decoder");
  const auto& c = st->vq->config();
  auto tokens = std::make_shared<std::vector<int32_t>>(get_int32_array(env, info[1], "vqDecode", "tokens"));
  int B = get_batch(env, info[2], "vqDecode");
  int64_t per = static_cast<int64_t>(c.grid()) * c.grid();
  if (static_cast<int64_t>(tokens->size()) != B * per)
    range_error(env, "vqDecode: tokens has " + std::to_string(tokens->size()) + " entries, expected batch " +
                         std::to_string(B) + " x " + std::to_string(per));
  check_range(env, *tokens, 0, c.codebook - 1, "vqDecode: tokens", "codebook indices");
  return array_job<float>(env, "rargen:vqDecode", [=](Job&) { return st->vq->decode(tokens->data(), B); })
      ->hold(st)
      .start();
}

Napi::Value VqEncode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = model_arg(env, info[0], "vqEncode", Want::Vq, false);
  require_part(env, *st, {"encoder.", "quantize."}, "encoder");
  const auto& c = st->vq->config();
  auto pixels = std::make_shared<std::vector<float>>(get_float32_array(env, info[1], "vqEncode", "pixels"));
  int B = get_batch(env, info[2], "vqEncode");
  int64_t per = 3LL * c.resolution * c.resolution;
  if (static_cast<int64_t>(pixels->size()) != B * per)
    range_error(env, "vqEncode: pixels has " + std::to_string(pixels->size()) + " entries, expected batch " +
                         std::to_string(B) + " x 3 x " + std::to_string(c.resolution) + " x " +
                         std::to_string(c.resolution));
  for (size_t i = 0; i < pixels->size(); i++)
    if (!std::isfinite((*pixels)[i])) range_error(env, "vqEncode: pixels[" + std::to_string(i) + "] is not finite");
  auto lat = std::make_shared<std::vector<float>>();
  auto tok = std::make_shared<std::vector<int32_t>>();
  return job(
             env, "rargen:vqEncode", [=](Job&) { st->vq->encode(pixels->data(), B, *lat, *tok); },
             [=](Napi::Env e) -> Napi::Value {
               Napi::Object r = Napi::Object::New(e);
               r.Set("latents", to_js(e, *lat));
               r.Set("tokens", to_js(e, *tok));
               return r;
             })
      ->hold(st)
      .start();
}

// ---------------- build info ----------------

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef RARGEN_CUDA
  o.Set("cuda", true);
#else
  o.Set("cuda", false);
#endif
#if defined(__x86_64__)
  o.Set("arch", "x64");
  __builtin_cpu_init();
  o.Set("avx2", static_cast<bool>(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
#else
  o.Set("arch", "other");
  o.Set("avx2", false);
#endif
  o.Set("hardwareThreads", static_cast<double>(std::thread::hardware_concurrency()));
  return o;
}

Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef RARGEN_CUDA
  rargen::CudaProbe p = rargen::cuda_probe();
  o.Set("built", true);
  o.Set("available", p.available);
  o.Set("reason", p.reason);
  o.Set("driverVersion", p.driver_version);
  o.Set("runtimeVersion", p.runtime_version);
  Napi::Array devs = Napi::Array::New(env, p.devices.size());
  for (size_t i = 0; i < p.devices.size(); i++) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("index", p.devices[i].index);
    d.Set("name", p.devices[i].name);
    d.Set("totalMemory", static_cast<double>(p.devices[i].total_memory));
    d.Set("computeCapability", std::to_string(p.devices[i].cc_major) + "." + std::to_string(p.devices[i].cc_minor));
    devs.Set(i, d);
  }
  o.Set("devices", devs);
#else
  o.Set("built", false);
  o.Set("available", false);
  o.Set("reason", "this rargen addon was built without CUDA (nvcc was not found at build time)");
  o.Set("devices", Napi::Array::New(env, 0));
#endif
  return o;
}

// backendSupports(device, op?, dtype?): Backend::supports (src/backend.h) of the device's
// backend, so tests and benches skip by capability instead of by device name. With op
// and dtype: a boolean. Without them: every op (src/backend.h's list) -> the dtypes it
// runs ([] for none).
Napi::Value BackendSupports(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "backendSupports";
  rargen::Backend* be = backend_for(env, string_arg(env, info[0], fn, "device"));
  const rargen::DType all[] = {rargen::DType::F32, rargen::DType::F16, rargen::DType::BF16, rargen::DType::I32};
  if (info.Length() < 2 || info[1].IsUndefined()) {
    Napi::Object o = Napi::Object::New(env);
    for (int i = 0; i < rargen::kOpCount; i++) {
      const auto op = static_cast<rargen::Op>(i);
      Napi::Array a = Napi::Array::New(env);
      for (rargen::DType t : all)
        if (be->supports(op, t)) a.Set(a.Length(), rargen::dtype_name(t));
      o.Set(rargen::op_name(op), a);
    }
    return o;
  }
  const std::string op_s = string_arg(env, info[1], fn, "op"), dt_s = string_arg(env, info[2], fn, "dtype");
  rargen::Op op;
  rargen::DType dt;
  if (!rargen::op_from_name(op_s, &op))
    range_error(env, "rargen." + fn + ": Expected an op of src/backend.h (e.g. 'attention', 'linear_backward') for op but received '" + op_s + "'");
  if (!rargen::dtype_from_name(dt_s, &dt))
    range_error(env, "rargen." + fn + ": Expected 'f32', 'f16', 'bf16' or 'i32' for dtype but received '" + dt_s + "'");
  return Napi::Boolean::New(env, be->supports(op, dt));
}

}  // namespace

// Feature bindings that live in their own files register their functions here.
// Declared weak so that a build without one of those files still links.
namespace rargen {
void register_eval(Napi::Env env, Napi::Object exports) __attribute__((weak));   // src/binding_eval.cc
void register_train(Napi::Env env, Napi::Object exports) __attribute__((weak));  // src/binding_train.cc
void register_session(Napi::Env env, Napi::Object exports) __attribute__((weak));  // src/binding_session.cc
}  // namespace rargen

namespace {

// A parameter table as [{name, shape, kind, init, decayed, block}] (block: the block
// index of a per-block tensor, else -1).
Napi::Array param_table_js(Napi::Env env, const std::vector<rargen::ParamSpec>& table) {
  Napi::Array out = Napi::Array::New(env, table.size());
  for (size_t i = 0; i < table.size(); i++) {
    const rargen::ParamSpec& p = table[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, p.name));
    Napi::Array shape = Napi::Array::New(env, p.shape.size());
    for (size_t k = 0; k < p.shape.size(); k++) shape.Set(k, Napi::Number::New(env, static_cast<double>(p.shape[k])));
    o.Set("shape", shape);
    o.Set("kind", Napi::String::New(env, rargen::param_kind_name(p.kind)));
    o.Set("init", Napi::String::New(env, rargen::param_init_name(p.init)));
    o.Set("decayed", Napi::Boolean::New(env, p.decayed));
    o.Set("block", Napi::Number::New(env, p.block));
    out.Set(i, o);
  }
  return out;
}

// rarParamTable(config): the generator's parameter table (src/model/rar_params.h), in
// state-dict order: [{name, shape, kind, init, decayed}]. lib/config.ts derives the
// expected keys and shapes from it, lib/train/init.ts the initialisation and decay.
// The config is checked as createRar checks it (get_rar_config); the
// table is computed, nothing is allocated.
Napi::Value RarParamTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = object_arg(env, info[0], "rarParamTable", "config");
  return param_table_js(env, rargen::rar_param_table(get_rar_config(env, c, "rarParamTable config")));
}

// vqParamTable(config): the tokenizer's parameter table (src/model/vqgan_params.h),
// the same format; the config is checked as createVq checks it.
Napi::Value VqParamTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = object_arg(env, info[0], "vqParamTable", "config");
  return param_table_js(env, rargen::vq_param_table(vq_config_arg(env, c, "vqParamTable config")));
}

// inceptionParamTable(): the FID InceptionV3's parameter table
// (src/model/inception_params.h), the same format; lib/inception.ts checks checkpoints
// against it. No config: the network is fixed.
Napi::Value InceptionParamTable(const Napi::CallbackInfo& info) {
  return param_table_js(info.Env(), rargen::inception_param_table());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  addon_data(env);  // the instance data (src/napi_util.h)
  if (rargen::register_eval) rargen::register_eval(env, exports);
  if (rargen::register_train) rargen::register_train(env, exports);
  if (rargen::register_session) rargen::register_session(env, exports);
  set_exports(env, exports,
              {{"buildInfo", guarded<BuildInfo>},
               {"cudaStatus", guarded<CudaStatus>},
               {"backendSupports", guarded<BackendSupports>},
               {"createRar", guarded<CreateRar>},
               {"createVq", guarded<CreateVq>},
               {"setWeight", guarded<SetWeight>},
               {"finalize", guarded<Finalize>},
               {"free", guarded<Free>},
               {"rarForward", guarded<RarForward>},
               {"rarDecodeSteps", guarded<RarDecodeSteps>},
               {"rarGenerate", guarded<RarGenerate>},
               {"cancel", guarded<Cancel>},
               {"vqDecode", guarded<VqDecode>},
               {"vqEncode", guarded<VqEncode>},
               {"rarParamTable", guarded<RarParamTable>},
               {"vqParamTable", guarded<VqParamTable>},
               {"inceptionParamTable", guarded<InceptionParamTable>}});
  return exports;
}

}  // namespace

NODE_API_MODULE(rargen, Init)
