// The pooling block of src/backend.h (the FID InceptionV3's ops), NCHW: ReLU, max and
// average pooling with stride and padding (avgpool2x2 is avgpool2d(2, 2, 0, true)), and
// channel slice copies (the branch concatenation), ReLU optional. One thread per output
// element, consecutive threads on consecutive x (coalesced). Windows are reduced in
// row-major order and divided as the CPU backend does (src/cpu/pooling.cc), so both
// give the same bits. src/backend.cc checks the arguments (the Backend wrappers;
// Ho, Wo from Backend::pool_out).
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// Max: padding never wins (starts at -inf); NaN never replaces a value (as the CPU's m < v).
struct MaxWindow {
  __device__ float init() const { return -INFINITY; }
  __device__ float add(float acc, float v) const { return acc < v ? v : acc; }
  __device__ float finish(float acc, int, int) const { return acc; }
};
// Average: the window sum over k*k (count_include_pad) or over the in-image count.
struct AvgWindow {
  bool include_pad;
  __device__ float init() const { return 0.f; }
  __device__ float add(float acc, float v) const { return acc + v; }
  __device__ float finish(float acc, int in_image, int full) const {
    return acc / static_cast<float>(include_pad ? full : in_image);
  }
};

template <class Op>
__global__ void pool2d_kernel(float* __restrict__ out, const float* __restrict__ inp, int64_t planes, int H, int W,
                              int Ho, int Wo, int k, int stride, int pad, Op op) {
  const int64_t n = planes * Ho * Wo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int ox = static_cast<int>(i % Wo);
    const int64_t t = i / Wo;
    const int oy = static_cast<int>(t % Ho);
    const float* x = inp + (t / Ho) * H * W;
    const int y0 = max(oy * stride - pad, 0), y1 = min(oy * stride - pad + k, H);
    const int x0 = max(ox * stride - pad, 0), x1 = min(ox * stride - pad + k, W);
    float acc = op.init();
    for (int iy = y0; iy < y1; iy++)
      for (int ix = x0; ix < x1; ix++) acc = op.add(acc, x[iy * W + ix]);
    out[i] = op.finish(acc, (y1 - y0) * (x1 - x0), k * k);
  }
}

__global__ void relu_kernel(float* out, const float* inp, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = inp[i];
    out[i] = v > 0.f ? v : 0.f;
  }
}

__global__ void copy_channels_kernel(float* __restrict__ dst, int Cdst, int dst_off, const float* __restrict__ src,
                                     int Csrc, int src_off, int C, int64_t HW, int64_t n, bool relu) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i % HW, bc = i / HW;
    const int64_t b = bc / C, c = bc % C;
    const float v = src[(b * Csrc + src_off + c) * HW + p];
    dst[(b * Cdst + dst_off + c) * HW + p] = relu ? (v > 0.f ? v : 0.f) : v;
  }
}

template <class Op>
void launch_pool(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride, int pad,
                 Op op, cudaStream_t stream) {
  const int64_t planes = static_cast<int64_t>(B) * C, n = planes * Ho * Wo;
  if (n <= 0) return;
  pool2d_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, inp, planes, H, W, Ho, Wo, k, stride, pad, op);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void relu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  relu_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, inp, n);
  CUDA_LAUNCH_CHECK();
}

void maxpool2d_forward(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride,
                       int pad, cudaStream_t stream) {
  launch_pool(out, inp, B, C, H, W, Ho, Wo, k, stride, pad, MaxWindow{}, stream);
}

void avgpool2d_forward(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride,
                       int pad, bool count_include_pad, cudaStream_t stream) {
  launch_pool(out, inp, B, C, H, W, Ho, Wo, k, stride, pad, AvgWindow{count_include_pad}, stream);
}

void copy_channels_forward(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                           int64_t HW, bool relu, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(B) * C * HW;
  if (n <= 0) return;
  copy_channels_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, Cdst, dst_off, src, Csrc, src_off, C, HW,
                                                                        n, relu);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
