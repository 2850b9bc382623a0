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

struct SessionState : NativeObject {
  static constexpr napi_type_tag kTag = tags::kSession;
  static constexpr const char* kKind = "decode session";
  static constexpr const char* kWhat = "a decode session from sessionCreate()";
  rargen::RarModelRef model;
  std::unique_ptr<rargen::RarSession> session;
  bool dispose_requested = false;
};
using StatePtr = std::shared_ptr<SessionState>;

// add() and cancel() may run while a step does (Use::Any); the session orders them.
StatePtr session_arg(Napi::Env env, const Napi::Value& v, const char* fn, Use use = Use::Any) {
  StatePtr st = handle_arg<SessionState>(env, v, fn, use, "session");
  if (!st->session || st->dispose_requested)
    throw Napi::Error::New(env, std::string("rargen.") + fn + ": this decode session was disposed");
  return st;
}

void dispose_now(SessionState& st) {
  st.session.reset();
  st.model = rargen::RarModelRef{};
  st.freed = true;
}

Napi::Value SessionCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rargen::RarModelRef ref = rargen::rar_model_ref(env, info[0], "sessionCreate");
  double rows = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(rows >= 0 && rows <= 4096 && rows == std::floor(rows)))
    range_error(env, "sessionCreate: maxRows must be an integer between 1 and 4096 (0: from the memory budget)");
  auto st = std::make_shared<SessionState>();
  st->session = std::make_unique<rargen::RarSession>(*ref.rar(), static_cast<int>(rows));
  st->model = std::move(ref);
  return make_handle(env, st);
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

Napi::Value SessionAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = session_arg(env, info[0], "sessionAdd");
  if (!info[1].IsObject()) type_error(env, "sessionAdd: spec must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  const std::string w = "sessionAdd spec";
  rargen::RarSequenceOptions s;
  s.class_id = get_int(env, o, "classId", w, 0, 1 << 30);
  get_sampling(env, o, w, 1 << 30, s);  // the session checks the ranges (rargen::RarSession::add)
  s.index = get_image_index(env, o, "index", w);
  try {
    return Napi::Number::New(env, static_cast<double>(st->session->add(s)));
  } catch (const rargen::SessionFull& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, "RARGEN_SESSION_FULL"));
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
  StatePtr st = session_arg(env, info[0], "sessionStep", Use::Idle);  // one step at a time
  if (!st->model.rar()) throw Napi::Error::New(env, "rargen.sessionStep: the generator was freed");
  if (st->model.obj->jobs.load() > 0)
    throw Napi::Error::New(env, "rargen.sessionStep: the generator is busy with another job (one job at a time; await it first)");
  auto res = std::make_shared<rargen::RarSession::StepResult>();
  Job* j = job(
      env, "rargen-session", [st, res](Job&) { *res = st->session->step(); },
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
      });
  j->hold(st).hold(st->model.obj);
  j->on_finish = [st] {
    if (st->dispose_requested) dispose_now(*st);
  };
  return j->start();
}

Napi::Value SessionDispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StatePtr st = handle_state<SessionState>(info[0]);
  if (!st) handle_arg<SessionState>(env, info[0], "sessionDispose", Use::Any, "session");  // throws the TypeError
  st->dispose_requested = true;  // idempotent; a running step frees it when it ends
  if (st->jobs.load() == 0 && st->session) dispose_now(*st);
  return env.Undefined();
}

}  // namespace
namespace rargen {
void register_session(Napi::Env env, Napi::Object exports) {
  using namespace rargen::napi;
  set_exports(env, exports,
              {{"sessionCreate", guarded<SessionCreate>},
               {"sessionInfo", guarded<SessionInfo>},
               {"sessionAdd", guarded<SessionAdd>},
               {"sessionCancel", guarded<SessionCancel>},
               {"sessionStep", guarded<SessionStep>},
               {"sessionDispose", guarded<SessionDispose>}});
}
}  // namespace rargen
