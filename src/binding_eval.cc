// N-API functions of the evaluator: the FID InceptionV3 (src/model/inception.h) and the
// ADM metrics (src/eval/metrics.h). A second binding file so that the evaluator stays
// out of src/binding.cc; its Init calls register_eval(env, exports).
//
// As in binding.cc: arguments are re-checked here (lib/fid.ts and lib/inception.ts
// validate first), copied into plain values, and long work runs on a worker thread
// (Napi::AsyncWorker) that never touches JS values, returning a promise. Typed arrays
// handed to a worker are kept alive by references until it finishes.
#include <napi.h>

#include <atomic>
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

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_uint8_array: return "Uint8Array";
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
  if (v.IsString()) return "string '" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsArray()) return "an array";
  if (v.IsObject()) return "an object";
  return "another type";
}

int64_t get_int(const Napi::CallbackInfo& info, size_t i, const std::string& fn, const char* name, int64_t lo, int64_t hi) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) type_error(info.Env(), fn, std::string("Expected an integer for ") + name + " but received " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    type_error(info.Env(), fn, std::string("Expected an integer between ") + std::to_string(lo) + " and " + std::to_string(hi) + " for " + name + " but received " + describe(v));
  return static_cast<int64_t>(d);
}

std::string get_string(const Napi::CallbackInfo& info, size_t i, const std::string& fn, const char* name) {
  if (!info[i].IsString()) type_error(info.Env(), fn, std::string("Expected a string for ") + name + " but received " + describe(info[i]));
  return info[i].As<Napi::String>().Utf8Value();
}

template <class T>
T get_typed(const Napi::Value& v, napi_typedarray_type type, const char* tname, const std::string& fn, const char* name, size_t want_len) {
  if (!napi::is_typed_array(v, type))
    type_error(v.Env(), fn, std::string("Expected a ") + tname + " for " + name + " but received " + describe(v));
  T a = v.As<T>();
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

using napi::PromiseWorker;  // src/napi_util.h
using napi::queue;
using napi::to_js;

// ---------------- InceptionV3 ----------------

struct InceptionHandle {
  std::unique_ptr<InceptionV3> net;
  std::mutex mu;  // one forward at a time (the workspace is per model)
  std::atomic<int> running{0};
};

InceptionHandle* get_inception(const Napi::CallbackInfo& info, const std::string& fn) {
  Napi::Value v = info[0];
  if (!v.IsExternal()) type_error(info.Env(), fn, "Expected an Inception handle (from inceptionCreate) for model but received " + describe(v));
  auto* h = v.As<Napi::External<InceptionHandle>>().Data();
  if (!h->net) type_error(info.Env(), fn, "the Inception model was freed");
  return h;
}

Napi::Value InceptionWeightShapes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto shapes = InceptionV3::weight_shapes();
  Napi::Array out = Napi::Array::New(env, shapes.size());
  for (size_t i = 0; i < shapes.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", shapes[i].first);
    Napi::Array s = Napi::Array::New(env, shapes[i].second.size());
    for (size_t j = 0; j < shapes[i].second.size(); j++) s.Set(j, static_cast<double>(shapes[i].second[j]));
    o.Set("shape", s);
    out.Set(i, o);
  }
  return out;
}

Napi::Value InceptionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionCreate";
  std::string device = get_string(info, 0, fn, "device");
  int threads = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<int>(get_int(info, 1, fn, "threads", 0, 4096)) : 0;
  auto* h = new InceptionHandle;
  try {
    h->net.reset(new InceptionV3(backend_for(device, threads), threads));
  } catch (const std::exception& e) {
    delete h;
    throw Napi::Error::New(env, std::string("rargen.inceptionCreate: ") + e.what());
  }
  return Napi::External<InceptionHandle>::New(env, h, [](Napi::Env, InceptionHandle* p) { delete p; });
}

Napi::Value InceptionSetWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionSetWeight";
  InceptionHandle* h = get_inception(info, fn);
  std::string name = get_string(info, 1, fn, "name");
  auto data = get_typed<Napi::Float32Array>(info[2], napi_float32_array, "Float32Array", fn, "data", SIZE_MAX);
  if (!info[3].IsArray()) type_error(env, fn, "Expected an array of integers for shape but received " + describe(info[3]));
  Napi::Array sa = info[3].As<Napi::Array>();
  std::vector<int64_t> shape;
  int64_t n = 1;
  for (uint32_t i = 0; i < sa.Length(); i++) {
    Napi::Value d = sa.Get(i);
    if (!d.IsNumber() || d.As<Napi::Number>().DoubleValue() < 0) type_error(env, fn, "Expected non-negative integers in shape");
    shape.push_back(d.As<Napi::Number>().Int64Value());
    n *= shape.back();
  }
  if (static_cast<size_t>(n) != data.ElementLength())
    type_error(env, fn, "weight " + name + ": shape has " + std::to_string(n) + " elements but data has " + std::to_string(data.ElementLength()));
  try {
    h->net->set_weight(name, data.Data(), shape);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen.inceptionSetWeight: ") + e.what());
  }
  return env.Undefined();
}

Napi::Value InceptionFinalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  InceptionHandle* h = get_inception(info, "inceptionFinalize");
  try {
    h->net->finalize();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen.inceptionFinalize: ") + e.what());
  }
  return env.Undefined();
}

Napi::Value InceptionFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  InceptionHandle* h = get_inception(info, "inceptionFree");
  if (h->running.load()) throw Napi::Error::New(env, "rargen.inceptionFree: the model is running (await inceptionForward first)");
  h->net.reset();
  return env.Undefined();
}

// inceptionForward(model, images: Uint8Array (B*H*W*3), batch, height, width)
//   -> Promise<{ pool3: Float32Array (B*2048), spatial: Float32Array (B*2023), logits: Float32Array (B*1008) }>
Napi::Value InceptionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionForward";
  InceptionHandle* h = get_inception(info, fn);
  if (!h->net->finalized()) throw Napi::Error::New(env, "rargen.inceptionForward: call inceptionFinalize first");
  const int B = static_cast<int>(get_int(info, 2, fn, "batch", 1, 1 << 20));
  const int H = static_cast<int>(get_int(info, 3, fn, "height", 1, 1 << 16));
  const int W = static_cast<int>(get_int(info, 4, fn, "width", 1, 1 << 16));
  auto images = get_typed<Napi::Uint8Array>(info[1], napi_uint8_array, "Uint8Array", fn, "images", static_cast<size_t>(B) * H * W * 3);
  struct Out {
    std::vector<float> pool3, spatial, logits;
  };
  auto out = std::make_shared<Out>();
  const uint8_t* src = images.Data();
  InceptionV3* net = h->net.get();
  auto* w = new PromiseWorker(
      env, "rargen:inceptionForward",
      [=] {
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
      });
  w->keep(info[0]);
  w->keep(images);
  h->running++;
  w->on_finish = [h] { h->running--; };
  return queue(w);
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
  auto images = get_typed<Napi::Uint8Array>(info[0], napi_uint8_array, "Uint8Array", fn, "images", static_cast<size_t>(B) * H * W * 3);
  auto out = Napi::Float32Array::New(env, static_cast<size_t>(B) * 3 * oh * ow);
  tf1_resize_bilinear(out.Data(), images.Data(), B, H, W, oh, ow);
  return out;
}

// ---------------- feature statistics ----------------

struct StatsHandle {
  std::unique_ptr<FeatureStats> stats;
  std::mutex mu;
};

StatsHandle* get_stats(const Napi::CallbackInfo& info, const std::string& fn) {
  if (!info[0].IsExternal()) type_error(info.Env(), fn, "Expected a stats handle (from featureStatsCreate) but received " + describe(info[0]));
  return info[0].As<Napi::External<StatsHandle>>().Data();
}

Napi::Value FeatureStatsCreate(const Napi::CallbackInfo& info) {
  const std::string fn = "featureStatsCreate";
  int dim = static_cast<int>(get_int(info, 0, fn, "dim", 1, 1 << 16));
  int threads = info.Length() > 1 && !info[1].IsUndefined() ? static_cast<int>(get_int(info, 1, fn, "threads", 0, 4096)) : 0;
  auto* h = new StatsHandle;
  h->stats.reset(new FeatureStats(dim, threads));
  return Napi::External<StatsHandle>::New(info.Env(), h, [](Napi::Env, StatsHandle* p) { delete p; });
}

// featureStatsAdd(stats, features: Float32Array (rows*dim), rows) -> Promise<void>
Napi::Value FeatureStatsAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "featureStatsAdd";
  StatsHandle* h = get_stats(info, fn);
  const int64_t rows = get_int(info, 2, fn, "rows", 0, int64_t(1) << 40);
  auto feats = get_typed<Napi::Float32Array>(info[1], napi_float32_array, "Float32Array", fn, "features",
                                             static_cast<size_t>(rows) * h->stats->dim());
  const float* p = feats.Data();
  auto* w = new PromiseWorker(
      env, "rargen:featureStatsAdd",
      [=] {
        std::lock_guard<std::mutex> lk(h->mu);
        h->stats->add(p, rows);
      },
      [](Napi::Env e) -> Napi::Value { return e.Undefined(); });
  w->keep(info[0]);
  w->keep(feats);
  return queue(w);
}

// featureStatsResult(stats) -> { count, mu: Float64Array (dim), sigma: Float64Array (dim*dim) }
Napi::Value FeatureStatsResult(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatsHandle* h = get_stats(info, "featureStatsResult");
  std::lock_guard<std::mutex> lk(h->mu);
  const int D = h->stats->dim();
  auto mu = Napi::Float64Array::New(env, D);
  auto sigma = Napi::Float64Array::New(env, static_cast<size_t>(D) * D);
  try {
    h->stats->result(mu.Data(), sigma.Data());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen.featureStatsResult: ") + e.what());
  }
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
  auto mu1 = get_typed<Napi::Float64Array>(info[0], napi_float64_array, "Float64Array", fn, "mu1", SIZE_MAX);
  const size_t D = mu1.ElementLength();
  if (D < 1) type_error(env, fn, "mu1 is empty");
  auto s1 = get_typed<Napi::Float64Array>(info[1], napi_float64_array, "Float64Array", fn, "sigma1", D * D);
  auto mu2 = get_typed<Napi::Float64Array>(info[2], napi_float64_array, "Float64Array", fn, "mu2", D);
  auto s2 = get_typed<Napi::Float64Array>(info[3], napi_float64_array, "Float64Array", fn, "sigma2", D * D);
  int threads = info.Length() > 4 && !info[4].IsUndefined() ? static_cast<int>(get_int(info, 4, fn, "threads", 0, 4096)) : 0;
  auto result = std::make_shared<double>(0);
  const double *a = mu1.Data(), *b = s1.Data(), *c = mu2.Data(), *d = s2.Data();
  auto* w = new PromiseWorker(
      env, "rargen:frechetDistance", [=] { *result = frechet_distance(a, b, c, d, static_cast<int>(D), threads); },
      [=](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *result); });
  for (int i = 0; i < 4; i++) w->keep(info[i]);
  return queue(w);
}

// inceptionScore(logits: Float32Array (rows*classes), rows, classes, splitSize)
//   -> Promise<{ score: number, splits: number[] }>
Napi::Value InceptionScore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "inceptionScore";
  const int64_t rows = get_int(info, 1, fn, "rows", 1, int64_t(1) << 40);
  const int classes = static_cast<int>(get_int(info, 2, fn, "classes", 1, 1 << 24));
  const int64_t split = get_int(info, 3, fn, "splitSize", 1, int64_t(1) << 40);
  auto logits = get_typed<Napi::Float32Array>(info[0], napi_float32_array, "Float32Array", fn, "logits", static_cast<size_t>(rows) * classes);
  struct R {
    double score = 0;
    std::vector<double> splits;
  };
  auto r = std::make_shared<R>();
  const float* p = logits.Data();
  auto* w = new PromiseWorker(
      env, "rargen:inceptionScore", [=] { r->score = inception_score(p, rows, classes, split, &r->splits); },
      [=](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("score", r->score);
        Napi::Array s = Napi::Array::New(e, r->splits.size());
        for (size_t i = 0; i < r->splits.size(); i++) s.Set(i, r->splits[i]);
        o.Set("splits", s);
        return o;
      });
  w->keep(logits);
  return queue(w);
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
  auto ref = get_typed<Napi::Float32Array>(info[0], napi_float32_array, "Float32Array", fn, "ref", static_cast<size_t>(nr) * D);
  auto sam = get_typed<Napi::Float32Array>(info[2], napi_float32_array, "Float32Array", fn, "sample", static_cast<size_t>(ns) * D);
  PrecisionRecallOptions o;
  std::string device = "cpu";
  Napi::Function on_progress;
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
    Napi::Value dv = opts.Get("device");
    if (!dv.IsUndefined()) {
      if (!dv.IsString()) type_error(env, fn, "Expected a string for opts.device but received " + describe(dv));
      device = dv.As<Napi::String>().Utf8Value();
    }
    Napi::Value pv = opts.Get("onProgress");
    if (!pv.IsUndefined()) {
      if (!pv.IsFunction()) type_error(env, fn, "Expected a function for opts.onProgress but received " + describe(pv));
      on_progress = pv.As<Napi::Function>();
    }
  }
  Backend* be;
  try {
    be = backend_for(device, o.threads);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen.precisionRecall: ") + e.what());
  }
  auto tsfn = std::make_shared<Napi::ThreadSafeFunction>();
  const bool has_progress = !on_progress.IsEmpty();
  if (has_progress) {
    *tsfn = Napi::ThreadSafeFunction::New(env, on_progress, "rargen:precisionRecall:progress", 0, 1);
    o.progress = [tsfn](int64_t done, int64_t total) {
      auto* v = new std::pair<int64_t, int64_t>(done, total);
      napi_status st = tsfn->NonBlockingCall(v, [](Napi::Env e, Napi::Function f, std::pair<int64_t, int64_t>* d) {
        f.Call({Napi::Number::New(e, static_cast<double>(d->first)), Napi::Number::New(e, static_cast<double>(d->second))});
        delete d;
      });
      if (st != napi_ok) delete v;
    };
  }
  auto result = std::make_shared<PrecisionRecall>();
  const float *rp = ref.Data(), *sp = sam.Data();
  auto* w = new PromiseWorker(
      env, "rargen:precisionRecall", [=] { *result = precision_recall(be, rp, nr, sp, ns, D, o); },
      [=](Napi::Env e) -> Napi::Value {
        Napi::Object r = Napi::Object::New(e);
        r.Set("precision", result->precision);
        r.Set("recall", result->recall);
        return r;
      });
  w->keep(ref);
  w->keep(sam);
  w->on_finish = [tsfn, has_progress] {
    if (has_progress) tsfn->Release();
  };
  return queue(w);
}

// Native errors (rargen::Error and the rest) become JS Errors "rargen: ..." instead of terminating.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
constexpr auto guarded = napi::guarded<F, napi::ErrorPrefix::Rargen>;

}  // namespace

void register_eval(Napi::Env env, Napi::Object exports) {
  exports.Set("inceptionWeightShapes", Napi::Function::New(env, guarded<InceptionWeightShapes>));
  exports.Set("inceptionCreate", Napi::Function::New(env, guarded<InceptionCreate>));
  exports.Set("inceptionSetWeight", Napi::Function::New(env, guarded<InceptionSetWeight>));
  exports.Set("inceptionFinalize", Napi::Function::New(env, guarded<InceptionFinalize>));
  exports.Set("inceptionForward", Napi::Function::New(env, guarded<InceptionForward>));
  exports.Set("inceptionFree", Napi::Function::New(env, guarded<InceptionFree>));
  exports.Set("tf1ResizeBilinear", Napi::Function::New(env, guarded<Tf1ResizeBilinear>));
  exports.Set("featureStatsCreate", Napi::Function::New(env, guarded<FeatureStatsCreate>));
  exports.Set("featureStatsAdd", Napi::Function::New(env, guarded<FeatureStatsAdd>));
  exports.Set("featureStatsResult", Napi::Function::New(env, guarded<FeatureStatsResult>));
  exports.Set("frechetDistance", Napi::Function::New(env, guarded<FrechetDistance>));
  exports.Set("inceptionScore", Napi::Function::New(env, guarded<InceptionScore>));
  exports.Set("precisionRecall", Napi::Function::New(env, guarded<PrecisionRecallFn>));
}

}  // namespace rargen
