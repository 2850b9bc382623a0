// The pooling block of the CPU backend (see pooling.h). Plain loops: these ops are
// memory-bound and a few per Inception block, next to its convolutions.
#include "cpu/pooling.h"

#include <algorithm>
#include <limits>

#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {

// Every output (oy, ox) of every plane = fn(the plane's input, y0, y1, x0, x1): the
// window's in-image rows [y0, y1) and columns [x0, x1).
template <class F>
void for_each_window(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride,
                     int pad, F&& fn) {
  global_pool().parallel_for(static_cast<int64_t>(B) * C, 4, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      const float* x = inp + bc * H * W;
      float* y = out + bc * Ho * Wo;
      for (int oy = 0; oy < Ho; oy++) {
        const int y0 = std::max(oy * stride - pad, 0), y1 = std::min(oy * stride - pad + k, H);
        for (int ox = 0; ox < Wo; ox++) {
          const int x0 = std::max(ox * stride - pad, 0), x1 = std::min(ox * stride - pad + k, W);
          y[oy * Wo + ox] = fn(x, y0, y1, x0, x1);
        }
      }
    }
  });
}

}  // namespace

void relu(float* out, const float* inp, int64_t n) {
  global_pool().parallel_for(n, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; i++) out[i] = inp[i] > 0.f ? inp[i] : 0.f;
  });
}

void maxpool2d(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride, int pad) {
  for_each_window(out, inp, B, C, H, W, Ho, Wo, k, stride, pad, [W](const float* x, int y0, int y1, int x0, int x1) {
    float m = -std::numeric_limits<float>::infinity();
    for (int iy = y0; iy < y1; iy++)
      for (int ix = x0; ix < x1; ix++) m = m < x[iy * W + ix] ? x[iy * W + ix] : m;
    return m;
  });
}

void avgpool2d(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k, int stride, int pad,
               bool count_include_pad) {
  const float full = static_cast<float>(k * k);
  for_each_window(out, inp, B, C, H, W, Ho, Wo, k, stride, pad,
                  [W, full, count_include_pad](const float* x, int y0, int y1, int x0, int x1) {
                    float sum = 0.f;
                    for (int iy = y0; iy < y1; iy++)
                      for (int ix = x0; ix < x1; ix++) sum += x[iy * W + ix];
                    return sum / (count_include_pad ? full : static_cast<float>((y1 - y0) * (x1 - x0)));
                  });
}

void copy_channels(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                   int64_t HW, bool relu) {
  global_pool().parallel_for(static_cast<int64_t>(B) * C, 8, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      const int64_t b = bc / C, c = bc % C;
      const float* x = src + (b * Csrc + src_off + c) * HW;
      float* y = dst + (b * Cdst + dst_off + c) * HW;
      if (relu)
        for (int64_t i = 0; i < HW; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
      else
        std::copy(x, x + HW, y);
    }
  });
}

}  // namespace cpu
}  // namespace rargen
