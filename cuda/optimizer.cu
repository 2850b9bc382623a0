// Optimizer ops for training (src/backend.h sum_squares, adamw): the gradient norm as
// fixed 64 Ki-element chunks (double) summed on the host in chunk order, so the result
// does not depend on the launch; AdamW with the CPU's host-side constants computed the
// same way. Deterministic: no atomics.
#include <cmath>
#include <vector>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

constexpr int64_t kSumChunk = 1 << 16;  // fixed chunks: the sum does not depend on the launch

__global__ void sum_squares_kernel(double* __restrict__ part, const float* __restrict__ x, int64_t n) {
  __shared__ double red[32];
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kSumChunk;
  const int64_t e = min(n, b + kSumChunk);
  double s = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) s += static_cast<double>(x[i]) * x[i];
  s = block_sum(s, red);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float beta1, float beta2, float eps, float decay,
                             float step_size, float bc2_sqrt, float grad_scale) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float p = param[i] * decay;
    const float mi = m[i] * beta1 + (1.f - beta1) * g;
    const float vi = v[i] * beta2 + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2_sqrt + eps;
    param[i] = p - step_size * (mi / denom);
  }
}

}  // namespace

double train_sum_squares(const float* x, int64_t n, ScratchProvider& sp, cudaStream_t stream) {
  if (n <= 0) return 0.0;
  const int64_t chunks = ceil_div(n, kSumChunk);
  double* part = static_cast<double*>(sp.scratch(kScratchTrain, static_cast<size_t>(chunks) * sizeof(double)));
  sum_squares_kernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(part, x, n);
  CUDA_LAUNCH_CHECK();
  std::vector<double> host(static_cast<size_t>(chunks));
  CUDA_CHECK(cudaMemcpyAsync(host.data(), part, host.size() * sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  double s = 0;
  for (double p : host) s += p;  // chunk order, as the CPU
  return s;
}

void train_adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, float grad_scale, int64_t step, cudaStream_t stream) {
  if (n <= 0) return;
  // the CPU's host-side constants, computed the same way
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.f - lr * weight_decay;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(param, grad, m, v, n, beta1, beta2, eps, decay, step_size,
                                                               bc2_sqrt, grad_scale);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
