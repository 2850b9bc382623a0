// N-API functions for training (the TrainAddon contract of lib/train/native.ts),
// registered on the addon's exports by rargen::register_train(), which src/binding.cc's
// Init calls (a weak symbol there, so builds without this file still link).
//
// A trainer handle is a plain JS object holding a Napi::External to a shared
// TrainerState (not an ObjectWrap: the env's single instance-data slot belongs to
// binding.cc). Long calls (forward+backward, the optimizer step) run on a worker
// thread (Napi::AsyncWorker) and return promises; a trainer runs one job at a time,
// and a running job keeps the state alive even if the handle is freed or collected.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda_api.h"
#include "model/rar_train.h"

namespace {

using rargen::Backend;

constexpr uint32_t kMagic = 0x52415254;  // "RART"

struct TrainerState {
  uint32_t magic = kMagic;
  std::unique_ptr<rargen::RarTrainer> trainer;
  std::string device;
  std::atomic<bool> busy{false};
  bool freed = false;
};
using StatePtr = std::shared_ptr<TrainerState>;
struct Holder {
  StatePtr st;
};

[[noreturn]] void type_error(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, "rargen: " + msg); }
[[noreturn]] void range_error(Napi::Env env, const std::string& msg) {
  throw Napi::RangeError::New(env, "rargen: " + msg);
}

double num(Napi::Env env, const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) type_error(env, where + ": expected a number for " + key);
  return v.As<Napi::Number>().DoubleValue();
}
int integer(Napi::Env env, const Napi::Object& o, const char* key, const std::string& where, int lo, int hi) {
  double d = num(env, o, key, where);
  if (d != std::floor(d) || d < lo || d > hi)
    range_error(env, where + ": expected an integer between " + std::to_string(lo) + " and " + std::to_string(hi) +
                         " for " + key);
  return static_cast<int>(d);
}
std::vector<int32_t> int32s(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    type_error(env, what + " must be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

Backend* backend_for(Napi::Env env, const std::string& device) {
  if (device == "cpu") return rargen::cpu_backend();
  int index = -1;
  if (device == "cuda") index = 0;
  else if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() < 9 &&
           device.find_first_not_of("0123456789", 5) == std::string::npos)
    index = std::atoi(device.c_str() + 5);
  if (index < 0) range_error(env, "unknown device '" + device + "' (expected 'cpu', 'cuda' or 'cuda:N')");
#ifdef RARGEN_CUDA
  try {
    return rargen::cuda_backend(index);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("rargen: device '") + device + "' is unavailable: " + e.what());
  }
#else
  throw Napi::Error::New(env, "rargen: device '" + device + "' is unavailable: this rargen addon was built without CUDA");
#endif
}

StatePtr state_arg(Napi::Env env, const Napi::Value& v, const char* fn, bool idle = true) {
  if (v.IsObject()) {
    Napi::Value h = v.As<Napi::Object>().Get("__rargenTrainer");
    if (h.IsExternal()) {
      Holder* holder = h.As<Napi::External<Holder>>().Data();
      if (holder && holder->st && holder->st->magic == kMagic) {
        StatePtr st = holder->st;
        if (st->freed) throw Napi::Error::New(env, std::string("rargen: ") + fn + ": this trainer was freed");
        if (idle && st->busy.load())
          throw Napi::Error::New(env, std::string("rargen: ") + fn +
                                          ": the trainer is busy with another call (await it first)");
        return st;
      }
    }
  }
  type_error(env, std::string(fn) + ": the first argument must be a trainer from createTrainer()");
}

rargen::TrainTensor kind_arg(Napi::Env env, const Napi::Value& v, const char* fn, bool allow_grad) {
  std::string k = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (k == "param") return rargen::TrainTensor::Param;
  if (k == "exp_avg") return rargen::TrainTensor::ExpAvg;
  if (k == "exp_avg_sq") return rargen::TrainTensor::ExpAvgSq;
  if (k == "grad" && allow_grad) return rargen::TrainTensor::Grad;
  range_error(env, std::string(fn) + ": kind must be one of 'param', " + (allow_grad ? "'grad', " : "") +
                       "'exp_avg', 'exp_avg_sq' but received '" + k + "'");
}

// Runs work() off the main thread with the trainer marked busy; resolves with result().
class TrainJob : public Napi::AsyncWorker {
 public:
  TrainJob(Napi::Env env, StatePtr st, std::function<void()> work, std::function<Napi::Value(Napi::Env)> result)
      : Napi::AsyncWorker(env, "rargen-train"), deferred_(Napi::Promise::Deferred::New(env)), st_(std::move(st)),
        work_(std::move(work)), result_(std::move(result)) {
    st_->busy.store(true);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("rargen: unknown native error");
    }
  }
  void OnOK() override {
    st_->busy.store(false);
    try {
      deferred_.Resolve(result_(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    st_->busy.store(false);
    deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  StatePtr st_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> result_;
};

Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) type_error(env, "createTrainer: config must be an object");
  if (!info[1].IsString()) type_error(env, "createTrainer: device must be a string");
  if (!info[2].IsObject()) type_error(env, "createTrainer: options must be an object {dropout, attnDropout}");
  Napi::Object c = info[0].As<Napi::Object>();
  const std::string w = "createTrainer config";
  rargen::RarConfig cfg;
  cfg.hidden = integer(env, c, "hiddenSize", w, 1, 1 << 16);
  cfg.depth = integer(env, c, "depth", w, 1, 1024);
  cfg.heads = integer(env, c, "numHeads", w, 1, 1024);
  cfg.mlp = integer(env, c, "mlpDim", w, 1, 1 << 18);
  cfg.seq_len = integer(env, c, "seqLen", w, 1, 1 << 16);
  cfg.codebook = integer(env, c, "codebookSize", w, 1, 1 << 20);
  cfg.classes = integer(env, c, "numClasses", w, 1, 1 << 20);
  cfg.pos_rows = integer(env, c, "posEmbedRows", w, cfg.seq_len + 2, 1 << 20);
  cfg.ts_rows = integer(env, c, "timestepRows", w, cfg.seq_len + 2, 1 << 20);
  if (cfg.hidden % cfg.heads) range_error(env, "createTrainer config: hiddenSize must be divisible by numHeads");
  Napi::Object o = info[2].As<Napi::Object>();
  rargen::RarTrainOptions opt;
  opt.dropout = static_cast<float>(num(env, o, "dropout", "createTrainer options"));
  opt.attn_dropout = static_cast<float>(num(env, o, "attnDropout", "createTrainer options"));
  if (!(opt.dropout >= 0.f && opt.dropout < 1.f) || !(opt.attn_dropout >= 0.f && opt.attn_dropout < 1.f))
    range_error(env, "createTrainer options: dropout and attnDropout must be in [0, 1)");
  std::string device = info[1].As<Napi::String>().Utf8Value();
  Backend* be = backend_for(env, device);
  auto st = std::make_shared<TrainerState>();
  st->trainer = std::make_unique<rargen::RarTrainer>(be, cfg, opt);
  st->device = be->name();
  Napi::Object handle = Napi::Object::New(env);
  auto* holder = new Holder{st};
  handle.Set("__rargenTrainer",
             Napi::External<Holder>::New(env, holder, [](Napi::Env, Holder* h) { delete h; }));
  return handle;
}

Napi::Value TrainInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainInfo", false);
  const auto& ps = st->trainer->params();
  Napi::Array names = Napi::Array::New(env, ps.size()), shapes = Napi::Array::New(env, ps.size()),
              decayed = Napi::Array::New(env, ps.size());
  for (size_t i = 0; i < ps.size(); i++) {
    names.Set(i, Napi::String::New(env, ps[i].name));
    Napi::Array s = Napi::Array::New(env, ps[i].shape.size());
    for (size_t k = 0; k < ps[i].shape.size(); k++) s.Set(k, Napi::Number::New(env, static_cast<double>(ps[i].shape[k])));
    shapes.Set(i, s);
    decayed.Set(i, Napi::Boolean::New(env, ps[i].decayed));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("names", names);
  out.Set("shapes", shapes);
  out.Set("decayed", decayed);
  out.Set("numParams", Napi::Number::New(env, static_cast<double>(st->trainer->num_params())));
  out.Set("device", Napi::String::New(env, st->device));
  return out;
}

Napi::Value TrainSetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainSetTensor");
  rargen::TrainTensor kind = kind_arg(env, info[1], "trainSetTensor", false);
  if (!info[2].IsString()) type_error(env, "trainSetTensor: name must be a string");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    type_error(env, "trainSetTensor: data must be a Float32Array");
  Napi::Float32Array a = info[3].As<Napi::Float32Array>();
  st->trainer->set_tensor(kind, info[2].As<Napi::String>().Utf8Value(), a.Data(), static_cast<int64_t>(a.ElementLength()));
  return env.Undefined();
}

Napi::Value TrainGetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainGetTensor");
  rargen::TrainTensor kind = kind_arg(env, info[1], "trainGetTensor", true);
  if (!info[2].IsString()) type_error(env, "trainGetTensor: name must be a string");
  const auto& p = st->trainer->info(info[2].As<Napi::String>().Utf8Value());
  Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(p.numel));
  st->trainer->get_tensor(kind, p.name, a.Data(), p.numel);
  return a;
}

Napi::Value TrainForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainForwardBackward");
  if (!info[1].IsObject()) type_error(env, "trainForwardBackward: batch must be an object");
  Napi::Object b = info[1].As<Napi::Object>();
  const auto& c = st->trainer->config();
  struct Args {
    std::vector<int32_t> ids, cond, orders;
    rargen::RarTrainBatch batch;
    rargen::RarTrainStats stats;
  };
  auto a = std::make_shared<Args>();
  a->ids = int32s(env, b.Get("ids"), "trainForwardBackward: ids");
  a->cond = int32s(env, b.Get("condition"), "trainForwardBackward: condition");
  a->orders = int32s(env, b.Get("orders"), "trainForwardBackward: orders");
  const int64_t B = static_cast<int64_t>(a->cond.size());
  if (B < 1) range_error(env, "trainForwardBackward: condition must hold at least one entry");
  if (static_cast<int64_t>(a->ids.size()) != B * c.seq_len || static_cast<int64_t>(a->orders.size()) != B * c.seq_len)
    range_error(env, "trainForwardBackward: ids and orders must hold " + std::to_string(B * c.seq_len) + " entries (" +
                         std::to_string(B) + " x " + std::to_string(c.seq_len) + ")");
  for (size_t i = 0; i < a->ids.size(); i++)
    if (a->ids[i] < 0 || a->ids[i] >= c.codebook)
      range_error(env, "trainForwardBackward: ids[" + std::to_string(i) + "] = " + std::to_string(a->ids[i]) +
                           " is not an image token id (0.." + std::to_string(c.codebook - 1) + ")");
  for (int64_t i = 0; i < B; i++) {
    if (a->cond[i] < c.codebook + 1 || a->cond[i] > c.codebook + c.classes + 1)
      range_error(env, "trainForwardBackward: condition[" + std::to_string(i) + "] must be a class embedding index");
    std::vector<char> seen(c.seq_len, 0);
    for (int k = 0; k < c.seq_len; k++) {
      int32_t o = a->orders[i * c.seq_len + k];
      if (o < 0 || o >= c.seq_len || seen[o])
        range_error(env, "trainForwardBackward: orders row " + std::to_string(i) + " is not a permutation");
      seen[o] = 1;
    }
  }
  Napi::Value seed = b.Get("dropoutSeed");
  if (!seed.IsArray() || seed.As<Napi::Array>().Length() != 2)
    type_error(env, "trainForwardBackward: dropoutSeed must be [uint32, uint32]");
  uint64_t lo = static_cast<uint32_t>(seed.As<Napi::Array>().Get(uint32_t(0)).As<Napi::Number>().Int64Value());
  uint64_t hi = static_cast<uint32_t>(seed.As<Napi::Array>().Get(uint32_t(1)).As<Napi::Number>().Int64Value());
  a->batch.B = static_cast<int>(B);
  a->batch.dropout_seed = lo | (hi << 32);
  a->batch.loss_scale = static_cast<float>(num(env, b, "lossScale", "trainForwardBackward batch"));
  Napi::Value zg = b.Get("zeroGrad");
  a->batch.zero_grad = zg.IsBoolean() ? zg.As<Napi::Boolean>().Value() : true;
  Napi::Value rl = b.Get("returnLogits");
  a->batch.return_logits = rl.IsBoolean() && rl.As<Napi::Boolean>().Value();
  auto* job = new TrainJob(
      env, st,
      [st, a]() {
        a->batch.ids = a->ids.data();
        a->batch.condition = a->cond.data();
        a->batch.orders = a->orders.data();
        a->stats = st->trainer->forward_backward(a->batch);
      },
      [a](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("loss", Napi::Number::New(env, a->stats.loss));
        out.Set("correct", Napi::Number::New(env, static_cast<double>(a->stats.correct)));
        out.Set("count", Napi::Number::New(env, static_cast<double>(a->stats.count)));
        if (!a->stats.logits.empty()) {
          Napi::Float32Array l = Napi::Float32Array::New(env, a->stats.logits.size());
          std::memcpy(l.Data(), a->stats.logits.data(), a->stats.logits.size() * 4);
          out.Set("logits", l);
        }
        return out;
      });
  Napi::Promise p = job->promise();
  job->Queue();
  return p;
}

Napi::Value TrainOptimizerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainOptimizerStep");
  if (!info[1].IsObject()) type_error(env, "trainOptimizerStep: options must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  const std::string w = "trainOptimizerStep options";
  rargen::AdamWOptions opt;
  opt.lr = static_cast<float>(num(env, o, "lr", w));
  opt.beta1 = static_cast<float>(num(env, o, "beta1", w));
  opt.beta2 = static_cast<float>(num(env, o, "beta2", w));
  opt.eps = static_cast<float>(num(env, o, "eps", w));
  opt.weight_decay = static_cast<float>(num(env, o, "weightDecay", w));
  Napi::Value mg = o.Get("maxGradNorm");
  opt.max_grad_norm = mg.IsNumber() ? static_cast<float>(mg.As<Napi::Number>().DoubleValue()) : 0.f;
  double step = num(env, o, "step", w);
  if (step < 1 || step != std::floor(step)) range_error(env, w + ": step must be an integer >= 1");
  opt.step = static_cast<int64_t>(step);
  if (!(opt.lr >= 0.f) || !(opt.beta1 >= 0.f && opt.beta1 < 1.f) || !(opt.beta2 >= 0.f && opt.beta2 < 1.f) ||
      !(opt.eps > 0.f) || !(opt.weight_decay >= 0.f))
    range_error(env, w + ": expected lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weightDecay >= 0");
  auto norm = std::make_shared<double>(0);
  auto* job = new TrainJob(
      env, st, [st, opt, norm]() { *norm = st->trainer->optimizer_step(opt); },
      [norm](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("gradNorm", Napi::Number::New(env, *norm));
        return out;
      });
  Napi::Promise p = job->promise();
  job->Queue();
  return p;
}

Napi::Value TrainFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainFree");
  st->freed = true;
  st->trainer.reset();
  return env.Undefined();
}

template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

}  // namespace

namespace rargen {

// Adds the training functions to the addon's exports (called from Init in binding.cc).
void register_train(Napi::Env env, Napi::Object exports) {
  exports.Set("createTrainer", Napi::Function::New(env, guarded<CreateTrainer>));
  exports.Set("trainInfo", Napi::Function::New(env, guarded<TrainInfo>));
  exports.Set("trainSetTensor", Napi::Function::New(env, guarded<TrainSetTensor>));
  exports.Set("trainGetTensor", Napi::Function::New(env, guarded<TrainGetTensor>));
  exports.Set("trainForwardBackward", Napi::Function::New(env, guarded<TrainForwardBackward>));
  exports.Set("trainOptimizerStep", Napi::Function::New(env, guarded<TrainOptimizerStep>));
  exports.Set("trainFree", Napi::Function::New(env, guarded<TrainFree>));
}

}  // namespace rargen
