// The one thing src/binding_session.cc needs from src/binding.cc's model handles: the
// generator of a RargenModel, checked (finalized, idle, not freed), with its state kept
// alive while the reference is held. Defined in src/binding.cc.
#pragma once
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>

#include "model/rar.h"

namespace rargen {

struct RarModelRef {
  std::shared_ptr<void> keep;  // the model's state
  std::function<Rar*()> rar;   // null once the model was freed
  std::atomic<bool>* busy = nullptr;  // the model's one-job-at-a-time flag
};

RarModelRef rar_model_ref(Napi::Env env, const Napi::Value& v, const char* fn);

}  // namespace rargen
