// N-API functions of the evaluator: the FID InceptionV3 (src/model/inception.h) and the
// ADM metrics (src/eval/metrics.h). A second binding file so that the evaluator stays
// out of src/binding.cc; its Init calls register_eval(env, exports).
//
// As in binding.cc: arguments are re-checked here (lib/fid.ts and lib/inception.ts
// validate first), copied into plain values, and long work runs on a worker thread
// (Napi::AsyncWorker) that never touches JS values, returning a promise. Products of
// sizes are overflow-checked and allocations capped (napi::checked_alloc_bytes); handles
// are type-tagged (napi::tags). Typed arrays handed to a worker are copied first
// (napi::owned_copy): a reference would not stop a transfer from freeing the memory.
// (N-API cannot pin a backing store, so an owned copy is the only safe choice.) Its
// cost, measured on 2 cores (sync part of the call = checks + copy, of the whole call):
// featureStatsAdd 256 x 2048, the per-batch hot path: 0.55 ms of 108 ms (0.5%);
// precisionRecall 2000 + 2000 x 2048: 26 ms of 885 ms (3%); inceptionScore 50000 x 1008,
// once per evaluation: 146 ms of 662 ms (22%, 0.15 s once per FID run). Bounded and
// small against a whole evaluation, where a use-after-free is a crash or a wrong FID.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda_api.h"
#include "eval/metrics.h"
#include "model/inception.h"
#include "napi_util.h"

namespace rargen {

void register_eval(Napi::Env env, Napi::Object exports);

namespace {

// ---------------- argument helpers (errors name the function and the parameter) ----------------

[[noreturn]] void type_error(Napi::Env env, const std::string& fn, const std::string& what) {
  throw Napi::TypeError::New(env, "rargen." + fn + ": " + what);
}

using napi::describe;  // src/napi_util.h

int64_t get_int(const Napi::CallbackInfo& info, size_t i, const std::string& fn, const char* name, int64_t lo, int64_t hi) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) type_error(info.Env(), fn, std::string("Expected an integer for ") + name + " but received " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    type_error(info.Env(), fn, std::string("Expected an integer between ") + std::to_string(lo) + " and " + std::to_string(hi) + " for " + name + " but received " + describe(v));
  return static_cast<int64_t>(d);
}

std::string get_string(const Napi::CallbackInfo& info, size_t i, const std::string& fn, const char* name) {
  return napi::string_arg(info.Env(), info[i], fn, name);
}

// want_len: the element count required (SIZE_MAX: any); a product that overflowed is
// passed as kOverflow and always fails.
constexpr size_t kOverflow = SIZE_MAX - 1;
size_t elems(std::initializer_list<uint64_t> dims) {
  uint64_t n = 0;
  return napi::checked_product(dims, &n) && n < kOverflow ? static_cast<size_t>(n) : kOverflow;
}

template <class T>
T get_typed(const Napi::Value& v, napi_typedarray_type type, const std::string& fn, const char* name, size_t want_len) {
  napi::expect_typed_array(v.Env(), v, type, fn, name);
  T a = v.As<T>();
  if (want_len == kOverflow)
    throw Napi::RangeError::New(v.Env(), "rargen." + fn + ": the sizes given for " + name + " overflow 64 bits when multiplied");
  if (want_len != SIZE_MAX && a.ElementLength() != want_len)
    type_error(v.Env(), fn, std::string("Expected ") + std::to_string(want_len) + " elements in " + name + " but received " + std::to_string(a.ElementLength()));
  return a;
}

Backend* backend_for(const std::string& device, int threads) {
  if (device == "cpu") return cpu_backend(threads);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef RARGEN_CUDA
    int idx = 0;
    if (device.size() > 5) {
      const std::string n = device.substr(5);
      if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos || n.size() > 4)
        throw Error("Expected 'cpu', 'cuda' or 'cuda:N' for device but received '" + device + "'");
      idx = std::stoi(n);
    }
    return cuda_backend(idx);
#else
    throw Error("device '" + device + "': this rargen addon was built without CUDA (nvcc was not found at build time)");
#endif
  }
  throw Error("Expected 'cpu', 'cuda' or 'cuda:N' for device but received '" + device + "'");
}

using napi::handle_arg;  // src/napi_util.h
using napi::Job;
using napi::to_js;
using napi::Use;

// ---------------- InceptionV3 ----------------

struct InceptionHandle : napi::NativeObject {
  static constexpr napi_type_tag kTag = napi::tags::kInception;
  static constexpr const char* kKind = "Inception model";
  static constexpr const char* kWhat = "an Inception handle (from inceptionCreate)";
  std::unique_ptr<InceptionV3> net;
  std::mutex mu;  // one forward at a time (the workspace is per model)
};

// Changing calls (setWeight, finalize, free) wait for no job; forwards queue behind each other.
std::shared_ptr<InceptionHandle> get_inception(const Napi::CallbackInfo& info, const std::string& fn, Use use = Use::Idle) {
  return handle_arg<InceptionHandle>(info.Env(), info[0], fn, use, "model");
}

Napi::Value InceptionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionCreate";
  std::string device = get_string(info, 0, fn, "device");
  int threads = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<int>(get_int(info, 1, fn, "threads", 0, 4096)) : 0;
  auto h = std::make_shared<InceptionHandle>();
  h->net.reset(new InceptionV3(backend_for(device, threads)));  // errors: "rargen.inceptionCreate: " (guarded)
  return napi::make_handle(env, h);
}

Napi::Value InceptionSetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionSetWeight";
  auto h = get_inception(info, fn);
  std::string name = get_string(info, 1, fn, "name");
  auto data = get_typed<Napi::Float32Array>(info[2], napi_float32_array, fn, "data", SIZE_MAX);
  if (!info[3].IsArray()) type_error(env, fn, "Expected an array of integers for shape but received " + describe(info[3]));
  Napi::Array sa = info[3].As<Napi::Array>();
  std::vector<int64_t> shape;
  uint64_t n = 1;
  if (sa.Length() > 8) type_error(env, fn, "Expected at most 8 dimensions in shape");
  for (uint32_t i = 0; i < sa.Length(); i++) {
    Napi::Value d = sa.Get(i);
    const double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0 && x == std::floor(x) && x < 9e15)) type_error(env, fn, "Expected non-negative integers in shape");
    shape.push_back(static_cast<int64_t>(x));
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(x), &n)) type_error(env, fn, "weight " + name + ": the shape's product overflows");
  }
  if (n != data.ElementLength())
    type_error(env, fn, "weight " + name + ": shape has " + std::to_string(n) + " elements but data has " + std::to_string(data.ElementLength()));
  h->net->set_weight(name, data.Data(), shape);
  return env.Undefined();
}

Napi::Value InceptionFinalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = get_inception(info, "inceptionFinalize");
  h->net->finalize();
  return env.Undefined();
}

Napi::Value InceptionFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = get_inception(info, "inceptionFree");
  h->net.reset();
  h->freed = true;
  return env.Undefined();
}

// inceptionForward(model, images: Uint8Array (B*H*W*3), batch, height, width)
//   -> Promise<{ pool3: Float32Array (B*2048), spatial: Float32Array (B*2023), logits: Float32Array (B*1008) }>
Napi::Value InceptionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionForward";
  auto h = get_inception(info, fn, Use::Any);
  if (!h->net->finalized()) throw Napi::Error::New(env, "rargen.inceptionForward: call inceptionFinalize first");
  const int B = static_cast<int>(get_int(info, 2, fn, "batch", 1, 1 << 20));
  const int H = static_cast<int>(get_int(info, 3, fn, "height", 1, 1 << 16));
  const int W = static_cast<int>(get_int(info, 4, fn, "width", 1, 1 << 16));
  auto images = get_typed<Napi::Uint8Array>(info[1], napi_uint8_array, fn, "images", elems({uint64_t(B), uint64_t(H), uint64_t(W), 3}));
  napi::checked_alloc_bytes(env, fn, "the outputs of a batch of " + std::to_string(B), {uint64_t(B), kInceptionPool3 + kInceptionSpatial + kInceptionLogits}, 4);
  struct Out {
    std::vector<float> pool3, spatial, logits;
  };
  auto out = std::make_shared<Out>();
  auto input = napi::owned_copy<uint8_t>(images);
  const uint8_t* src = input->data();
  InceptionV3* net = h->net.get();  // not freed while the job holds h (inceptionFree waits for no job)
  return napi::job(
             env, "rargen:inceptionForward",
             [=](Job&) {
               (void)input;  // owned by the worker until it is gone
               std::lock_guard<std::mutex> lk(h->mu);
        out->pool3.resize(static_cast<size_t>(B) * kInceptionPool3);
        out->spatial.resize(static_cast<size_t>(B) * kInceptionSpatial);
        out->logits.resize(static_cast<size_t>(B) * kInceptionLogits);
        net->forward(out->pool3.data(), out->spatial.data(), out->logits.data(), src, B, H, W);
             },
             [=](Napi::Env e) -> Napi::Value {
               Napi::Object o = Napi::Object::New(e);
               o.Set("pool3", to_js(e, out->pool3));
               o.Set("spatial", to_js(e, out->spatial));
               o.Set("logits", to_js(e, out->logits));
               return o;
             })
      ->hold(h)
      .start();
}

// tf1ResizeBilinear(images: Uint8Array (B*H*W*3), batch, height, width, outHeight, outWidth)
//   -> Float32Array (B*3*outHeight*outWidth), NCHW, values in [0, 255]
Napi::Value Tf1ResizeBilinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "tf1ResizeBilinear";
  const int B = static_cast<int>(get_int(info, 1, fn, "batch", 1, 1 << 20));
  const int H = static_cast<int>(get_int(info, 2, fn, "height", 1, 1 << 16));
  const int W = static_cast<int>(get_int(info, 3, fn, "width", 1, 1 << 16));
  const int oh = static_cast<int>(get_int(info, 4, fn, "outHeight", 1, 1 << 16));
  const int ow = static_cast<int>(get_int(info, 5, fn, "outWidth", 1, 1 << 16));
  auto images = get_typed<Napi::Uint8Array>(info[0], napi_uint8_array, fn, "images", elems({uint64_t(B), uint64_t(H), uint64_t(W), 3}));
  napi::checked_alloc_bytes(env, fn, "the output (" + std::to_string(B) + " x 3 x " + std::to_string(oh) + " x " + std::to_string(ow) + " floats)",
                            {uint64_t(B), 3, uint64_t(oh), uint64_t(ow)}, 4);
  auto out = Napi::Float32Array::New(env, static_cast<size_t>(B) * 3 * oh * ow);
  tf1_resize_bilinear(out.Data(), images.Data(), B, H, W, oh, ow);
  return out;
}

// ---------------- feature statistics ----------------

struct StatsHandle : napi::NativeObject {
  static constexpr napi_type_tag kTag = napi::tags::kFeatureStats;
  static constexpr const char* kKind = "feature statistics";
  static constexpr const char* kWhat = "a stats handle (from featureStatsCreate)";
  std::unique_ptr<FeatureStats> stats;
  std::mutex mu;  // adds run one at a time; a result waits for them
};

std::shared_ptr<StatsHandle> get_stats(const Napi::CallbackInfo& info, const std::string& fn) {
  return handle_arg<StatsHandle>(info.Env(), info[0], fn, Use::Any, "stats");
}

Napi::Value FeatureStatsCreate(const Napi::CallbackInfo& info) {
  const std::string fn = "featureStatsCreate";
  int dim = static_cast<int>(get_int(info, 0, fn, "dim", 1, 1 << 16));
  int threads = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<int>(get_int(info, 1, fn, "threads", 0, 4096)) : 0;
  // the accumulators and the result are dim x dim doubles
  napi::checked_alloc_bytes(info.Env(), fn, "the covariance of dim " + std::to_string(dim), {uint64_t(dim), uint64_t(dim)}, 8);
  auto h = std::make_shared<StatsHandle>();
  h->stats.reset(new FeatureStats(dim, threads));
  return napi::make_handle(info.Env(), h);
}

// featureStatsAdd(stats, features: Float32Array (rows*dim), rows) -> Promise<void>
Napi::Value FeatureStatsAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "featureStatsAdd";
  auto h = get_stats(info, fn);
  const int64_t rows = get_int(info, 2, fn, "rows", 0, int64_t(1) << 40);
  auto feats = get_typed<Napi::Float32Array>(info[1], napi_float32_array, fn, "features",
                                             elems({uint64_t(rows), uint64_t(h->stats->dim())}));
  auto copy = napi::owned_copy<float>(feats);
  return napi::job(
             env, "rargen:featureStatsAdd",
             [=](Job&) {
               std::lock_guard<std::mutex> lk(h->mu);
               h->stats->add(copy->data(), rows);
             },
             [](Napi::Env e) -> Napi::Value { return e.Undefined(); })
      ->hold(h)
      .start();
}

// featureStatsResult(stats) -> { count, mu: Float64Array (dim), sigma: Float64Array (dim*dim) }
Napi::Value FeatureStatsResult(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = get_stats(info, "featureStatsResult");
  std::lock_guard<std::mutex> lk(h->mu);
  const int D = h->stats->dim();
  auto mu = Napi::Float64Array::New(env, D);
  auto sigma = Napi::Float64Array::New(env, static_cast<size_t>(D) * D);
  h->stats->result(mu.Data(), sigma.Data());
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", static_cast<double>(h->stats->count()));
  o.Set("mu", mu);
  o.Set("sigma", sigma);
  return o;
}

// ---------------- metrics ----------------

// frechetDistance(mu1, sigma1, mu2, sigma2: Float64Array, threads?) -> Promise<number>
Napi::Value FrechetDistance(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "frechetDistance";
  auto mu1 = get_typed<Napi::Float64Array>(info[0], napi_float64_array, fn, "mu1", SIZE_MAX);
  const size_t D = mu1.ElementLength();
  if (D < 1) type_error(env, fn, "mu1 is empty");
  if (D > (1 << 16)) throw Napi::RangeError::New(env, "rargen.frechetDistance: mu1 has " + std::to_string(D) + " elements, more than the 65536 dimensions supported");
  auto s1 = get_typed<Napi::Float64Array>(info[1], napi_float64_array, fn, "sigma1", D * D);
  auto mu2 = get_typed<Napi::Float64Array>(info[2], napi_float64_array, fn, "mu2", D);
  auto s2 = get_typed<Napi::Float64Array>(info[3], napi_float64_array, fn, "sigma2", D * D);
  // the solver's workspace is a few D x D matrices
  napi::checked_alloc_bytes(env, fn, "the workspace for dimension " + std::to_string(D), {D, D, 8}, 8);
  int threads = info.Length() > 4 && !info[4].IsUndefined() ? static_cast<int>(get_int(info, 4, fn, "threads", 0, 4096)) : 0;
  auto result = std::make_shared<double>(0);
  auto a = napi::owned_copy<double>(mu1), b = napi::owned_copy<double>(s1), c = napi::owned_copy<double>(mu2),
       d = napi::owned_copy<double>(s2);
  return napi::job(
             env, "rargen:frechetDistance",
             [=](Job&) { *result = frechet_distance(a->data(), b->data(), c->data(), d->data(), static_cast<int>(D), threads); },
             [=](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *result); })
      ->start();
}

// inceptionScore(logits: Float32Array (rows*classes), rows, classes, splitSize)
//   -> Promise<{ score: number, splits: number[] }>
Napi::Value InceptionScore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionScore";
  const int64_t rows = get_int(info, 1, fn, "rows", 1, int64_t(1) << 40);
  const int classes = static_cast<int>(get_int(info, 2, fn, "classes", 1, 1 << 24));
  const int64_t split = get_int(info, 3, fn, "splitSize", 1, int64_t(1) << 40);
  auto logits = get_typed<Napi::Float32Array>(info[0], napi_float32_array, fn, "logits", elems({uint64_t(rows), uint64_t(classes)}));
  struct R {
    double score = 0;
    std::vector<double> splits;
  };
  auto r = std::make_shared<R>();
  auto copy = napi::owned_copy<float>(logits);
  return napi::job(
             env, "rargen:inceptionScore",
             [=](Job&) { r->score = inception_score(copy->data(), rows, classes, split, &r->splits); },
             [=](Napi::Env e) -> Napi::Value {
               Napi::Object o = Napi::Object::New(e);
               o.Set("score", r->score);
               Napi::Array s = Napi::Array::New(e, r->splits.size());
               for (size_t i = 0; i < r->splits.size(); i++) s.Set(i, r->splits[i]);
               o.Set("splits", s);
               return o;
             })
      ->start();
}

// precisionRecall(ref: Float32Array (nRef*dim), nRef, sample: Float32Array (nSample*dim), nSample, dim,
//                 opts?: { k?, device?, threads?, rowBlock?, colBlock?, onProgress?(done, total) })
//   -> Promise<{ precision, recall }>
Napi::Value PrecisionRecallFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "precisionRecall";
  const int64_t nr = get_int(info, 1, fn, "nRef", 1, int64_t(1) << 40);
  const int64_t ns = get_int(info, 3, fn, "nSample", 1, int64_t(1) << 40);
  const int D = static_cast<int>(get_int(info, 4, fn, "dim", 1, 1 << 20));
  auto ref = get_typed<Napi::Float32Array>(info[0], napi_float32_array, fn, "ref", elems({uint64_t(nr), uint64_t(D)}));
  auto sam = get_typed<Napi::Float32Array>(info[2], napi_float32_array, fn, "sample", elems({uint64_t(ns), uint64_t(D)}));
  PrecisionRecallOptions o;
  std::string device = "cpu";
  Napi::Value on_progress = env.Undefined();
  if (info.Length() > 5 && info[5].IsObject()) {
    Napi::Object opts = info[5].As<Napi::Object>();
    auto num = [&](const char* key, int64_t lo, int64_t hi, int64_t def) -> int64_t {
      Napi::Value v = opts.Get(key);
      if (v.IsUndefined()) return def;
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1e300;
      if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
        type_error(env, fn, std::string("Expected an integer between ") + std::to_string(lo) + " and " + std::to_string(hi) + " for opts." + key + " but received " + describe(v));
      return static_cast<int64_t>(d);
    };
    o.k = static_cast<int>(num("k", 1, 1 << 20, 3));
    o.threads = static_cast<int>(num("threads", 0, 4096, 0));
    o.row_block = num("rowBlock", 1, 1 << 20, o.row_block);
    o.col_block = num("colBlock", 1, 1 << 20, o.col_block);
    // a rowBlock x colBlock distance tile (and k nearest radii per row)
    napi::checked_alloc_bytes(env, fn, "a rowBlock x colBlock distance tile", {uint64_t(o.row_block), uint64_t(o.col_block)}, 4);
    napi::checked_alloc_bytes(env, fn, "the k-nearest radii", {uint64_t(std::max(nr, ns)), uint64_t(o.k)}, 4);
    Napi::Value dv = opts.Get("device");
    if (!dv.IsUndefined()) {
      if (!dv.IsString()) type_error(env, fn, "Expected a string for opts.device but received " + describe(dv));
      device = dv.As<Napi::String>().Utf8Value();
    }
    Napi::Value pv = opts.Get("onProgress");
    if (!pv.IsUndefined()) {
      if (!pv.IsFunction()) type_error(env, fn, "Expected a function for opts.onProgress but received " + describe(pv));
      on_progress = pv;
    }
  }
  Backend* be = backend_for(device, o.threads);
  auto result = std::make_shared<PrecisionRecall>();
  auto rc = napi::owned_copy<float>(ref), sc = napi::owned_copy<float>(sam);
  return napi::job(
             env, "rargen:precisionRecall",
             [=](Job& j) {
               PrecisionRecallOptions oj = o;
               oj.progress = [&j](int64_t done, int64_t total) { j.report(done, total); };
               *result = precision_recall(be, rc->data(), nr, sc->data(), ns, D, oj);
             },
             [=](Napi::Env e) -> Napi::Value {
               Napi::Object r = Napi::Object::New(e);
               r.Set("precision", result->precision);
               r.Set("recall", result->recall);
               return r;
             })
      ->progress(on_progress)
      .start();
}

}  // namespace

void register_eval(Napi::Env env, Napi::Object exports) {
  using napi::guarded;
  napi::set_exports(env, exports,
                    {{"inceptionCreate", guarded<InceptionCreate>},
                     {"inceptionSetWeight", guarded<InceptionSetWeight>},
                     {"inceptionFinalize", guarded<InceptionFinalize>},
                     {"inceptionForward", guarded<InceptionForward>},
                     {"inceptionFree", guarded<InceptionFree>},
                     {"tf1ResizeBilinear", guarded<Tf1ResizeBilinear>},
                     {"featureStatsCreate", guarded<FeatureStatsCreate>},
                     {"featureStatsAdd", guarded<FeatureStatsAdd>},
                     {"featureStatsResult", guarded<FeatureStatsResult>},
                     {"frechetDistance", guarded<FrechetDistance>},
                     {"inceptionScore", guarded<InceptionScore>},
                     {"precisionRecall", guarded<PrecisionRecallFn>}});
}

}  // namespace rargen
