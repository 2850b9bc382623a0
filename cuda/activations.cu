// Elementwise ops: fill, GELU (exact, erf), SiLU, add, and the f32 -> f16/bf16
// conversion used by upload_weight and by the cuBLASLt path; for training the GELU and
// SiLU backward (beside their forwards, one functor per activation) and the
// counter-based dropout (dropout_bits, as the CPU). Grid-stride loops with
// 64-bit indices; float4 when every pointer is 16-byte aligned (then n/4 vectors plus
// a scalar tail). Formulas are the CPU backend's, so results agree to rounding.
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// operator(): the forward; backward(dy, x): dL/dx from dL/dy (training), the
// expressions of src/cpu/backward.cc.
struct GeluOp {
  __device__ float operator()(float x) const { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
  __device__ float backward(float dy, float x) const {
    const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return dy * (cdf + x * pdf);
  }
};
struct SiluOp {
  __device__ float operator()(float x) const { return silu_f(x); }
  __device__ float backward(float dy, float x) const {
    const float s = 1.f / (1.f + expf(-x));
    return dy * s * (1.f + x * (1.f - s));
  }
};

template <class Op>
__global__ void unary_kernel(float* out, const float* inp, int64_t n, Op op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = op(inp[i]);
}

template <class Op>
__global__ void unary4_kernel(float4* out, const float4* inp, int64_t n4, Op op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    float4 v = inp[i];
    v.x = op(v.x);
    v.y = op(v.y);
    v.z = op(v.z);
    v.w = op(v.w);
    out[i] = v;
  }
}

// dinp may alias dout (each element is read before it is written).
template <class Op>
__global__ void unary_backward_kernel(float* dinp, const float* dout, const float* __restrict__ inp, int64_t n, Op op) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dinp[i] = op.backward(dout[i], inp[i]);
}

__global__ void fill_kernel(float* dst, float value, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = value;
}

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void add4_kernel(float4* out, const float4* a, const float4* b, int64_t n4) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    float4 x = a[i], y = b[i];
    out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

template <typename T>
__global__ void convert_kernel(T* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = from_float<T>(src[i]);
}

template <class Op>
void unary(float* out, const float* inp, int64_t n, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  int64_t head = 0;
  if (aligned16(out) && aligned16(inp)) {
    int64_t n4 = n / 4;
    if (n4 > 0) {
      unary4_kernel<<<grid_for(n4, kThreads), kThreads, 0, stream>>>(reinterpret_cast<float4*>(out),
                                                                      reinterpret_cast<const float4*>(inp), n4, op);
      CUDA_LAUNCH_CHECK();
    }
    head = n4 * 4;
  }
  if (head < n) {
    unary_kernel<<<grid_for(n - head, kThreads), kThreads, 0, stream>>>(out + head, inp + head, n - head, op);
    CUDA_LAUNCH_CHECK();
  }
}

__global__ void dropout_kernel(float* x, int64_t n, uint32_t threshold, float keep_scale, uint64_t seed, uint64_t site) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = dropout_bits_dev(seed, site, static_cast<uint64_t>(i)) >= threshold ? x[i] * keep_scale : 0.f;
}

template <class Op>
void unary_backward(float* dinp, const float* dout, const float* inp, int64_t n, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  unary_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dinp, dout, inp, n, op);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void fill_forward(float* dst, float value, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, value, n);
  CUDA_LAUNCH_CHECK();
}

void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream) { unary(out, inp, n, GeluOp(), stream); }

void silu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream) { unary(out, inp, n, SiluOp(), stream); }

void add_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  int64_t head = 0;
  if (aligned16(out) && aligned16(a) && aligned16(b)) {
    int64_t n4 = n / 4;
    if (n4 > 0) {
      add4_kernel<<<grid_for(n4, kThreads), kThreads, 0, stream>>>(
          reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(a), reinterpret_cast<const float4*>(b), n4);
      CUDA_LAUNCH_CHECK();
    }
    head = n4 * 4;
  }
  if (head < n) {
    add_kernel<<<grid_for(n - head, kThreads), kThreads, 0, stream>>>(out + head, a + head, b + head, n - head);
    CUDA_LAUNCH_CHECK();
  }
}

void convert_from_f32(void* dst, DType dtype, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (dtype == DType::BF16) {
    convert_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), src, n);
  } else if (dtype == DType::F16) {
    convert_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<__half*>(dst), src, n);
  } else {
    fail("convert", "target dtype must be F16 or BF16");
  }
  CUDA_LAUNCH_CHECK();
}

void train_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream) {
  unary_backward(dinp, dout, inp, n, GeluOp(), stream);
}

void train_silu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream) {
  unary_backward(dinp, dout, inp, n, SiluOp(), stream);
}

void train_dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site, cudaStream_t stream) {
  if (p <= 0.f || n <= 0) return;
  dropout_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, dropout_threshold(p), 1.f / (1.f - p), seed,
                                                                 site);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
