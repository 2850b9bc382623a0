// Shared helpers of the CUDA backend: error checking that turns every CUDA failure
// into a rargen::Error naming file:line, loads of F32/F16/BF16 weights as float,
// warp/block reductions and index helpers. Every kernel launch in cuda/ is followed by
// CUDA_LAUNCH_CHECK() (cudaGetLastError), so a bad launch configuration is reported
// at the op that caused it; errors inside kernels surface at the next synchronising
// call (download, synchronize, sample) through CUDA_CHECK.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "backend.h"

namespace rargen {
namespace cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  std::string f(file);
  size_t slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  throw Error(std::string("CUDA error at ") + f + ":" + std::to_string(line) + " (" + what +
              "): " + cudaGetErrorString(e));
}

#define CUDA_CHECK(expr)                                                           \
  do {                                                                             \
    cudaError_t rargen_e_ = (expr);                                                \
    if (rargen_e_ != cudaSuccess) {                                                \
      cudaGetLastError(); /* clear a non-sticky error so later checks are clean */ \
      ::rargen::cuda::throw_cuda(rargen_e_, #expr, __FILE__, __LINE__);            \
    }                                                                              \
  } while (0)

// After every <<<...>>> launch.
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

[[noreturn]] inline void fail(const char* op, const std::string& what) {
  throw Error(std::string("cuda ") + op + ": " + what);
}

inline void check_dim(const char* op, const char* name, int64_t v, int64_t lo = 1) {
  if (v < lo)
    fail(op, std::string(name) + " must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride elementwise kernel over n items (capped: the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t g = ceil_div(n, threads);
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<unsigned>(g);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- device helpers ----

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Eight consecutive weights as floats; p must be 16-byte aligned.
__device__ __forceinline__ void load8_aligned(const float* p, float v[8]) {
  float4 a = __ldg(reinterpret_cast<const float4*>(p));
  float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8_aligned(const __nv_bfloat16* p, float v[8]) {
  uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8_aligned(const __half* p, float v[8]) {
  uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

// float and double (the training ops keep LayerNorm statistics, softmax denominators and
// parameter-gradient reductions in double, as the CPU reference).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Two-pass LayerNorm statistics of x[0..n) by one warp (lane reads x[lane + 32e]):
// the mean, then the variance about it, rstd = 1/sqrt(var + eps), accumulated in Acc
// (float for the model's LayerNorms, double for the attention's q/k norm, as the CPU
// reference). Every lane gets both.
template <typename Acc>
__device__ __forceinline__ void warp_mean_rstd(const float* x, int n, float eps, int lane, float& mean, float& rstd) {
  Acc s = 0;
  for (int c = lane; c < n; c += 32) s += x[c];
  const Acc m = warp_sum(s) / n;
  Acc v = 0;
  for (int c = lane; c < n; c += 32) {
    const Acc d = x[c] - m;
    v += d * d;
  }
  const Acc var = warp_sum(v) / n;
  mean = static_cast<float>(m);
  rstd = static_cast<float>(Acc(1) / sqrt(var + static_cast<Acc>(eps)));
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024), T float or double.
// `scratch` holds 32 T of shared memory. Every thread gets the result. Contains
// __syncthreads().
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T t = lane < nw ? scratch[lane] : T(0);
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(t);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }

// src/backend.h dropout_bits(), verbatim (the host version is not __device__): used by
// the dropout op (activations.cu) and the training attention (attention.cu).
__device__ __forceinline__ uint32_t dropout_bits_dev(uint64_t seed, uint64_t site, uint64_t index) {
  uint64_t z = (seed ^ (site * 0x9E3779B97F4A7C15ull)) + index * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

}  // namespace cuda
}  // namespace rargen
