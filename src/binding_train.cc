// N-API functions for training (the TrainAddon contract of lib/train/native.ts),
// registered on the addon's exports by rargen::register_train(), which src/binding.cc's
// Init calls (a weak symbol there, so builds without this file still link).
//
// A trainer handle is a napi handle (src/napi_util.h: a type-tagged External) owning
// a shared TrainerState. Long calls (forward+backward, the optimizer step) run as a
// napi::Job on a worker thread and return promises; a trainer runs one job at a time,
// and a running job keeps the state alive even if the handle is freed or collected.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "dist/mpi.h"
#include "model/rar_train.h"
#include "napi_util.h"

namespace {

using rargen::Backend;
using namespace rargen::napi;  // src/napi_util.h

struct TrainerState : NativeObject {
  static constexpr napi_type_tag kTag = tags::kTrainer;
  static constexpr const char* kKind = "trainer";
  static constexpr const char* kWhat = "a trainer from createTrainer()";
  std::unique_ptr<rargen::RarTrainer> trainer;
  std::string device;
};
using StatePtr = std::shared_ptr<TrainerState>;

StatePtr state_arg(Napi::Env env, const Napi::Value& v, const char* fn, bool idle = true) {
  return handle_arg<TrainerState>(env, v, fn, idle ? Use::Idle : Use::Any, "trainer");
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

// Runs work() off the main thread with the trainer busy (the job holds the state until
// it is gone); resolves with result().
Napi::Promise train_job(Napi::Env env, const char* name, StatePtr st, std::function<void()> work, Job::Result result) {
  return job(env, name, [work = std::move(work)](Job&) { work(); }, std::move(result))->hold(std::move(st)).start();
}

Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = object_arg(env, info[0], "createTrainer", "config");
  std::string device = string_arg(env, info[1], "createTrainer", "device");
  Napi::Object o = object_arg(env, info[2], "createTrainer", "options {dropout, attnDropout}");
  rargen::RarConfig cfg = get_rar_config(env, c, "createTrainer config", false);
  rargen::RarTrainOptions opt;
  opt.dropout = static_cast<float>(get_number(env, o, "dropout", "createTrainer options"));
  opt.attn_dropout = static_cast<float>(get_number(env, o, "attnDropout", "createTrainer options"));
  if (!(opt.dropout >= 0.f && opt.dropout < 1.f) || !(opt.attn_dropout >= 0.f && opt.attn_dropout < 1.f))
    range_error(env, "createTrainer options: dropout and attnDropout must be in [0, 1)");
  Backend* be = backend_for(env, device);
  auto st = std::make_shared<TrainerState>();
  st->trainer = std::make_unique<rargen::RarTrainer>(be, cfg, opt);
  st->device = be->name();
  return make_handle(env, st);
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
  expect_typed_array(env, info[3], napi_float32_array, "trainSetTensor", "data");
  Napi::Float32Array a = info[3].As<Napi::Float32Array>();
  st->trainer->set_tensor(kind, string_arg(env, info[2], "trainSetTensor", "name"), a.Data(), static_cast<int64_t>(a.ElementLength()));
  return env.Undefined();
}

Napi::Value TrainGetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainGetTensor");
  rargen::TrainTensor kind = kind_arg(env, info[1], "trainGetTensor", true);
  const auto& p = st->trainer->info(string_arg(env, info[2], "trainGetTensor", "name"));
  Napi::Float32Array a = Napi::Float32Array::New(env, static_cast<size_t>(p.numel));
  st->trainer->get_tensor(kind, p.name, a.Data(), p.numel);
  return a;
}

Napi::Value TrainForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainForwardBackward");
  Napi::Object b = object_arg(env, info[1], "trainForwardBackward", "batch");
  const auto& c = st->trainer->config();
  struct Args {
    std::vector<int32_t> ids, cond, orders;
    rargen::RarTrainBatch batch;
    rargen::RarTrainStats stats;
  };
  auto a = std::make_shared<Args>();
  a->ids = get_int32_array(env, b.Get("ids"), "trainForwardBackward", "ids");
  a->cond = get_int32_array(env, b.Get("condition"), "trainForwardBackward", "condition");
  a->orders = get_int32_array(env, b.Get("orders"), "trainForwardBackward", "orders");
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
  a->batch.loss_scale = static_cast<float>(get_number(env, b, "lossScale", "trainForwardBackward batch"));
  Napi::Value zg = b.Get("zeroGrad");
  a->batch.zero_grad = zg.IsBoolean() ? zg.As<Napi::Boolean>().Value() : true;
  Napi::Value rl = b.Get("returnLogits");
  a->batch.return_logits = rl.IsBoolean() && rl.As<Napi::Boolean>().Value();
  // reduceGrads (the last micro-batch of a data-parallel step): each bucket of the
  // gradient all-reduce begins, on this (the main) thread, as soon as backward reports
  // it final; trainAllreduceGrads then finishes (src/dist/mpi.h).
  Napi::Value rg = b.Get("reduceGrads");
  const bool reduce = rg.IsBoolean() && rg.As<Napi::Boolean>().Value();
  if (reduce) {
    if (!rargen::dist::active())
      throw Napi::Error::New(env, "rargen: trainForwardBackward: reduceGrads needs MPI (distInit)");
    rargen::RarTrainer& t = *st->trainer;
    rargen::dist::grads_overlap_begin(*t.backend(), t.flat(rargen::TrainTensor::Grad), t.num_params(), t.grad_stages());
  }
  Job* j = job(
      env, "rargen:trainForwardBackward",
      [st, a, reduce](Job& job) {
        a->batch.ids = a->ids.data();
        a->batch.condition = a->cond.data();
        a->batch.orders = a->orders.data();
        if (reduce) a->batch.on_grads_final = [&job](int done, int total) { job.report(done, total); };
        a->stats = st->trainer->forward_backward(a->batch);
      },
      [a](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("loss", Napi::Number::New(env, a->stats.loss));
        out.Set("correct", Napi::Number::New(env, static_cast<double>(a->stats.correct)));
        out.Set("count", Napi::Number::New(env, static_cast<double>(a->stats.count)));
        if (!a->stats.logits.empty()) out.Set("logits", to_js(env, a->stats.logits));
        return out;
      });
  if (reduce)
    j->progress(Napi::Function::New(env, [](const Napi::CallbackInfo& i) -> Napi::Value {
      rargen::dist::grads_overlap_ready(i[0].As<Napi::Number>().Int32Value());
      return i.Env().Undefined();
    }));
  return j->hold(std::move(st)).start();
}

Napi::Value TrainOptimizerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainOptimizerStep");
  Napi::Object o = object_arg(env, info[1], "trainOptimizerStep", "options");
  const std::string w = "trainOptimizerStep options";
  rargen::AdamWOptions opt;
  opt.lr = static_cast<float>(get_number(env, o, "lr", w));
  opt.beta1 = static_cast<float>(get_number(env, o, "beta1", w));
  opt.beta2 = static_cast<float>(get_number(env, o, "beta2", w));
  opt.eps = static_cast<float>(get_number(env, o, "eps", w));
  opt.weight_decay = static_cast<float>(get_number(env, o, "weightDecay", w));
  Napi::Value mg = o.Get("maxGradNorm");
  opt.max_grad_norm = mg.IsNumber() ? static_cast<float>(mg.As<Napi::Number>().DoubleValue()) : 0.f;
  double step = get_number(env, o, "step", w);
  if (step < 1 || step != std::floor(step)) range_error(env, w + ": step must be an integer >= 1");
  opt.step = static_cast<int64_t>(step);
  if (!(opt.lr >= 0.f) || !(opt.beta1 >= 0.f && opt.beta1 < 1.f) || !(opt.beta2 >= 0.f && opt.beta2 < 1.f) ||
      !(opt.eps > 0.f) || !(opt.weight_decay >= 0.f))
    range_error(env, w + ": expected lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weightDecay >= 0");
  auto norm = std::make_shared<double>(0);
  return train_job(
      env, "rargen:trainOptimizerStep", st, [st, opt, norm]() { *norm = st->trainer->optimizer_step(opt); },
      [norm](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("gradNorm", Napi::Number::New(env, *norm));
        return out;
      });
}

// trainAllreduceGrads(trainer): replaces this rank's gradients by their mean over all
// ranks (src/dist/mpi.h: NCCL on device memory for CUDA trainers, else MPI through
// host memory). Runs on the main thread, between the last forward+backward of a step
// and optimizerStep.
Napi::Value TrainAllreduceGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainAllreduceGrads");
  if (!rargen::dist::active()) throw Napi::Error::New(env, "rargen.trainAllreduceGrads: MPI is not initialised (distInit)");
  rargen::RarTrainer& t = *st->trainer;
  rargen::dist::allreduce_mean_grads(*t.backend(), t.flat(rargen::TrainTensor::Grad), t.num_params(), t.grad_stages());
  return env.Undefined();
}

Napi::Value TrainFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = state_arg(env, info[0], "trainFree");
  st->freed = true;
  st->trainer.reset();
  return env.Undefined();
}

}  // namespace

namespace rargen {

void register_dist(Napi::Env env, Napi::Object exports) __attribute__((weak));  // src/binding_dist.cc

// Adds the training functions to the addon's exports (called from Init in binding.cc).
void register_train(Napi::Env env, Napi::Object exports) {
  napi::set_exports(env, exports,
                    {{"createTrainer", guarded<CreateTrainer>},
                     {"trainInfo", guarded<TrainInfo>},
                     {"trainSetTensor", guarded<TrainSetTensor>},
                     {"trainGetTensor", guarded<TrainGetTensor>},
                     {"trainForwardBackward", guarded<TrainForwardBackward>},
                     {"trainOptimizerStep", guarded<TrainOptimizerStep>},
                     {"trainFree", guarded<TrainFree>},
                     {"trainAllreduceGrads", guarded<TrainAllreduceGrads>}});
  if (register_dist) register_dist(env, exports);
}

}  // namespace rargen
