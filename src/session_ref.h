// The one thing src/binding_session.cc needs from src/binding.cc's model handles: the
// generator of a model handle, checked (a finalized generator, idle), with the model's
// state kept alive (and held busy by a session step's Job) while the reference is held.
// Defined in src/binding.cc.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>

#include "model/rar.h"
#include "napi_util.h"

namespace rargen {

struct RarModelRef {
  std::shared_ptr<napi::NativeObject> obj;  // the model's state (Job::hold it while a step runs)
  std::function<Rar*()> rar;                // null once the model was freed
};

RarModelRef rar_model_ref(Napi::Env env, const Napi::Value& v, const char* fn);

}  // namespace rargen
