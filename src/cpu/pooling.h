// CPU implementations of the pooling block of src/backend.h (relu, maxpool2d,
// avgpool2d, copy_channels; avgpool2x2 is avgpool2d(2, 2, 0, true)). CpuBackend checks
// the arguments (the Backend wrappers in src/backend.cc) and forwards here; contracts
// are the op table's. Work is split over planes (b, c) on the CPU backend's thread pool
// (cpu/threadpool.h).
#pragma once
#include <cstdint>

namespace rargen {
namespace cpu {

void relu(float* out, const float* inp, int64_t n);
// Ho, Wo: the output size, Backend::pool_out.
void maxpool2d(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride, int pad);
void avgpool2d(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride, int pad,
               bool count_include_pad);
void copy_channels(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                   int64_t HW, bool relu);

}  // namespace cpu
}  // namespace rargen
