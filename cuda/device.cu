// Device discovery for the CUDA backend. cudart is linked statically and loads the
// driver (libcuda.so) itself at run time, so every call here must tolerate a machine
// without a driver or a GPU and turn that into a one-line reason.
#include <cuda_runtime.h>
#include <cstdio>
#include "cuda_api.h"

namespace rargen {

CudaProbe cuda_probe() {
  CudaProbe p;
  cudaRuntimeGetVersion(&p.runtime_version);
  cudaError_t e = cudaDriverGetVersion(&p.driver_version);
  if (e != cudaSuccess || p.driver_version == 0) {
    p.reason = "no NVIDIA driver found (libcuda.so could not be loaded)";
    return p;
  }
  if (p.driver_version < p.runtime_version) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "NVIDIA driver too old: it supports CUDA %d.%d, rargen was built with CUDA %d.%d",
                  p.driver_version / 1000, (p.driver_version % 1000) / 10,
                  p.runtime_version / 1000, (p.runtime_version % 1000) / 10);
    p.reason = buf;
    // Minor-version compatibility may still let it run; try the device count anyway.
  }
  int n = 0;
  e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (p.reason.empty()) p.reason = std::string("CUDA unusable: ") + cudaGetErrorString(e);
    cudaGetLastError();
    return p;
  }
  if (n == 0) {
    p.reason = "no CUDA device found";
    return p;
  }
  for (int i = 0; i < n; i++) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.total_memory = prop.totalGlobalMem;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    p.devices.push_back(d);
  }
  p.available = !p.devices.empty();
  if (p.available) p.reason.clear();
  return p;
}

}  // namespace rargen
