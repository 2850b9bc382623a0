// N-API bindings of the continuous-batching decode session (rargen::RarSession,
// src/model/rar.h), registered by rargen::register_session() (src/binding.cc's Init):
//   sessionCreate(model, maxRows)  -> handle     (maxRows 0: from the memory budget)
//   sessionInfo(handle)            -> {maxRows, freeRows, active}
//   sessionAdd(handle, spec)       -> id         (spec: every field of SequenceSpec, filled)
//   sessionCancel(handle, id)      -> boolean
//   sessionStep(handle)            -> Promise<{progressed: Float64Array [id, tokens]*, finished: [{id, tokens}]}>
//   sessionDispose(handle)
// lib/session.ts (DecodeSession) is the typed wrapper; it validates first, and these
// check again. step() runs on a worker thread with the model marked busy, so free()
// and other jobs wait for it; add() and cancel() may be called while it runs.
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>

#include "model/rar.h"
#include "napi_util.h"
#include "session_ref.h"

namespace {

using namespace rargen::napi;  // src/napi_util.h

constexpr napi_type_tag kSessionTag = {0x72617267656e5365ULL, 0x7373696f6e000005ULL};

struct SessionState {
  rargen::RarModelRef model;
  std::unique_ptr<rargen::RarSession> session;
  std::atomic<bool> stepping{false};
  bool dispose_requested = false;
};
using StatePtr = std::shared_ptr<SessionState>;
struct Holder {
  StatePtr st;
};

StatePtr session_arg(Napi::Env env, const Napi::Value& v, const char* fn) {
  Holder* h = handle_data<Holder>(v, kSessionTag);
  if (!h) type_error(env, std::string(fn) + ": the first argument must be a session from sessionCreate()");
  if (!h->st->session || h->st->dispose_requested)
    throw Napi::Error::New(env, std::string("rargen: ") + fn + ": this decode session was disposed");
  return h->st;
}

void dispose_now(SessionState& st) {
  st.session.reset();
  st.model = rargen::RarModelRef{};
}

Napi::Value SessionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rargen::RarModelRef ref = rargen::rar_model_ref(env, info[0], "sessionCreate");
  double rows = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(rows >= 0 && rows <= 4096 && rows == std::floor(rows)))
    range_error(env, "sessionCreate: maxRows must be an integer between 1 and 4096 (0: from the memory budget)");
  auto st = std::make_shared<SessionState>();
  try {
    st->session = std::make_unique<rargen::RarSession>(*ref.rar(), static_cast<int>(rows));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  st->model = std::move(ref);
  return new_handle(env, new Holder{st}, kSessionTag);
}

Napi::Value SessionInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = session_arg(env, info[0], "sessionInfo");
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxRows", st->session->max_rows());
  o.Set("freeRows", st->session->free_rows());
  o.Set("active", st->session->active());
  return o;
}

bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || *end) return false;
  out = v;
  return true;
}

Napi::Value SessionAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = session_arg(env, info[0], "sessionAdd");
  if (!info[1].IsObject()) type_error(env, "sessionAdd: spec must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  const std::string w = "sessionAdd spec";
  rargen::RarSequenceOptions s;
  auto finite = [&](const char* key) {
    double d = get_number(env, o, key, w);
    if (!std::isfinite(d)) range_error(env, w + ": " + key + " must be a finite number");
    return d;
  };
  s.class_id = get_int(env, o, "classId", w, 0, 1 << 30);
  s.guidance_scale = static_cast<float>(finite("guidanceScale"));
  s.guidance_scale_pow = static_cast<float>(finite("guidanceScalePow"));
  s.temperature = static_cast<float>(finite("temperature"));
  s.top_k = get_int(env, o, "topK", w, 0, 1 << 30);
  s.top_p = static_cast<float>(finite("topP"));
  Napi::Value g = o.Get("greedy");
  if (!g.IsBoolean()) type_error(env, w + ": greedy must be a boolean");
  s.greedy = g.As<Napi::Boolean>().Value();
  Napi::Value seed = o.Get("seed");
  if (!seed.IsString() || !parse_u64(seed.As<Napi::String>().Utf8Value(), s.seed))
    type_error(env, w + ": seed must be a decimal string of an unsigned 64-bit integer");
  double idx = get_number(env, o, "index", w);
  if (!(idx >= 0 && idx == std::floor(idx) && idx <= 9007199254740991.0))
    range_error(env, w + ": index must be a non-negative safe integer");
  s.index = static_cast<int64_t>(idx);
  try {
    return Napi::Number::New(env, static_cast<double>(st->session->add(s)));
  } catch (const rargen::SessionFull& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, "ERR_SESSION_FULL"));
    throw err;
  } catch (const std::exception& e) {
    throw Napi::RangeError::New(env, e.what());
  }
}

Napi::Value SessionCancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = session_arg(env, info[0], "sessionCancel");
  if (!info[1].IsNumber()) type_error(env, "sessionCancel: id must be a number");
  return Napi::Boolean::New(env, st->session->cancel(static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue())));
}

Napi::Value SessionStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = session_arg(env, info[0], "sessionStep");
  if (st->stepping.load()) throw Napi::Error::New(env, "rargen: sessionStep: a step is already running; await it first");
  if (!st->model.rar()) throw Napi::Error::New(env, "rargen: sessionStep: the generator was freed");
  if (st->model.busy->load())
    throw Napi::Error::New(env, "rargen: sessionStep: the model is busy with another job (one job at a time per model; await it first)");
  st->model.busy->store(true);
  st->stepping.store(true);
  auto res = std::make_shared<rargen::RarSession::StepResult>();
  auto* job = new PromiseWorker(
      env, "rargen-session", [st, res] { *res = st->session->step(); },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        Napi::Float64Array pr = Napi::Float64Array::New(e, 2 * res->progressed.size());
        for (size_t i = 0; i < res->progressed.size(); i++) {
          pr[2 * i] = static_cast<double>(res->progressed[i].first);
          pr[2 * i + 1] = res->progressed[i].second;
        }
        o.Set("progressed", pr);
        Napi::Array fin = Napi::Array::New(e, res->finished.size());
        for (size_t i = 0; i < res->finished.size(); i++) {
          Napi::Object f = Napi::Object::New(e);
          f.Set("id", Napi::Number::New(e, static_cast<double>(res->finished[i].id)));
          f.Set("tokens", to_js(e, res->finished[i].tokens));
          fin.Set(i, f);
        }
        o.Set("finished", fin);
        return o;
      },
      "rargen: unknown native error");
  job->on_finish = [st] {
    st->model.busy->store(false);
    st->stepping.store(false);
    if (st->dispose_requested) dispose_now(*st);
  };
  return queue(job);
}

Napi::Value SessionDispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Holder* h = handle_data<Holder>(info[0], kSessionTag);
  if (!h) type_error(env, "sessionDispose: the argument must be a session from sessionCreate()");
  SessionState& st = *h->st;
  st.dispose_requested = true;  // idempotent; a running step frees it when it ends
  if (!st.stepping.load()) dispose_now(st);
  return env.Undefined();
}

}  // namespace

namespace rargen {
void register_session(Napi::Env env, Napi::Object exports) {
  exports.Set("sessionCreate", Napi::Function::New(env, guarded<SessionCreate>));
  exports.Set("sessionInfo", Napi::Function::New(env, guarded<SessionInfo>));
  exports.Set("sessionAdd", Napi::Function::New(env, guarded<SessionAdd>));
  exports.Set("sessionCancel", Napi::Function::New(env, guarded<SessionCancel>));
  exports.Set("sessionStep", Napi::Function::New(env, guarded<SessionStep>));
  exports.Set("sessionDispose", Napi::Function::New(env, guarded<SessionDispose>));
}
}  // namespace rargen
