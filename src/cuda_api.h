// What the CUDA backend (cuda/*.cu) exposes to the portable C++ code.
// Built only with RARGEN_CUDA; the binding reports "not built with CUDA" otherwise.
#pragma once
#include <string>
#include <vector>

namespace rargen {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  int cc_major = 0, cc_minor = 0;
};

struct CudaProbe {
  bool available = false;       // a usable driver and at least one device
  std::string reason;           // why not, in one line, when !available
  int driver_version = 0;       // e.g. 12080; 0 when no driver
  int runtime_version = 0;      // the statically linked cudart
  std::vector<CudaDeviceInfo> devices;
};

// Never throws; safe to call on machines without a driver.
CudaProbe cuda_probe();

class Backend;
// The CUDA backend on device `device` (see src/backend.h). Throws rargen::Error with
// a one-line reason when CUDA is unusable (no driver, no such device).
Backend* cuda_backend(int device);

}  // namespace rargen
