// N-API entry point. Each exported function validates its arguments again (the
// TypeScript layer has already validated them), copies them into plain structs and,
// for long work, runs on a worker thread (Napi::AsyncWorker) returning a promise.
#include <napi.h>
#include <thread>
#include "cuda_api.h"

namespace {

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatus));
  return exports;
}

}  // namespace

NODE_API_MODULE(rargen, Init)
