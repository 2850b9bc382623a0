// GroupNorm (+ optional SiLU), NCHW. Group g of image b is one contiguous span of
// (C/G)*HW floats, so one block per (b, g) makes three passes over it: the sum, the
// sum of squared deviations from the mean (two-pass, like the CPU reference), then
// out = x * a + s with a = rstd * weight[c], s = bias[c] - mean * a (the CPU's exact
// formula), SiLU after when asked. float4 when HW % 4 == 0 and pointers are aligned.
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 512;

template <bool VEC>
__global__ void __launch_bounds__(kThreads)
    groupnorm_kernel(float* out, const float* inp, const float* __restrict__ weight,
                     const float* __restrict__ bias, int C, int64_t HW, int G, float eps, bool silu_after) {
  __shared__ float scratch[32];
  const int64_t bg = blockIdx.x;
  const int g = static_cast<int>(bg % G);
  const int cpg = C / G;
  const int64_t n = static_cast<int64_t>(cpg) * HW;
  const float* x = inp + bg * n;
  float* y = out + bg * n;

  float s = 0.f;
  if (VEC) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t i = threadIdx.x; i < n / 4; i += kThreads) {
      float4 v = x4[i];
      s += (v.x + v.y) + (v.z + v.w);
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) s += x[i];
  }
  const float mean = block_sum(s, scratch) / static_cast<float>(n);
  float q = 0.f;
  if (VEC) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int64_t i = threadIdx.x; i < n / 4; i += kThreads) {
      float4 v = x4[i];
      float a = v.x - mean, b = v.y - mean, c = v.z - mean, d = v.w - mean;
      q += (a * a + b * b) + (c * c + d * d);
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      float d = x[i] - mean;
      q += d * d;
    }
  }
  const float var = block_sum(q, scratch) / static_cast<float>(n);
  const float rstd = 1.f / sqrtf(var + eps);

  for (int ci = 0; ci < cpg; ci++) {
    const int c = g * cpg + ci;
    const float a = rstd * weight[c];
    const float sh = bias[c] - mean * a;
    const float* xc = x + ci * HW;
    float* yc = y + ci * HW;
    if (VEC) {
      const float4* x4 = reinterpret_cast<const float4*>(xc);
      float4* y4 = reinterpret_cast<float4*>(yc);
      for (int64_t i = threadIdx.x; i < HW / 4; i += kThreads) {
        float4 v = x4[i];
        v.x = v.x * a + sh;
        v.y = v.y * a + sh;
        v.z = v.z * a + sh;
        v.w = v.w * a + sh;
        if (silu_after) {
          v.x = silu_f(v.x);
          v.y = silu_f(v.y);
          v.z = silu_f(v.z);
          v.w = silu_f(v.w);
        }
        y4[i] = v;
      }
    } else {
      for (int64_t i = threadIdx.x; i < HW; i += kThreads) {
        float v = xc[i] * a + sh;
        yc[i] = silu_after ? silu_f(v) : v;
      }
    }
  }
}

}  // namespace

void groupnorm_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int C, int64_t HW,
                       int G, float eps, bool silu_after, cudaStream_t stream) {
  int64_t groups = static_cast<int64_t>(B) * G;
  if (groups <= 0 || HW <= 0) return;
  if (groups > 0x7fffffffLL) fail("groupnorm", "too many groups");
  const bool vec = HW % 4 == 0 && aligned16(out) && aligned16(inp);
  if (vec) {
    groupnorm_kernel<true><<<static_cast<unsigned>(groups), kThreads, 0, stream>>>(out, inp, weight, bias, C, HW, G, eps,
                                                                                   silu_after);
  } else {
    groupnorm_kernel<false><<<static_cast<unsigned>(groups), kThreads, 0, stream>>>(out, inp, weight, bias, C, HW, G,
                                                                                    eps, silu_after);
  }
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
