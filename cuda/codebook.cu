// Vector quantisation: nearest codebook row per latent pixel, and codebook lookup.
// The search is a 64-pixel x 64-code tiled "GEMM" whose inner op is (z - e)^2 instead
// of z * e: exact squared differences summed over channels in order 0..Cz-1 (no
// ||z||^2 - 2 z.e + ||e||^2 expansion, which cancels badly and would flip near ties),
// like the CPU reference. Each thread keeps the best (distance, code) of 4 pixels,
// updated only on a strictly smaller distance while codes ascend, and the final
// reduction across threads breaks ties toward the lower index: ties -> lowest index.
#include <climits>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kPix = 64, kCodes = 64, kCh = 16, kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    codebook_nearest_kernel(int32_t* __restrict__ tokens, const float* __restrict__ z, const float* __restrict__ cb, int Cz,
                            int64_t HW, int64_t total, int K) {
  __shared__ float Zs[kCh][kPix + 1];
  __shared__ float Es[kCh][kCodes + 1];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kPix;

  float best_d[4];
  int best_k[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    best_d[i] = INFINITY;
    best_k[i] = INT_MAX;
  }
  for (int k0 = 0; k0 < K; k0 += kCodes) {
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
    for (int c0 = 0; c0 < Cz; c0 += kCh) {
#pragma unroll
      for (int e = 0; e < (kCh * kPix) / kThreads; e++) {
        int idx = tid + e * kThreads;
        int c = idx / kPix, px = idx % kPix;  // consecutive threads: consecutive pixels
        int64_t n = n0 + px;
        float v = 0.f;
        if (n < total && c0 + c < Cz) {
          int64_t b = n / HW, p = n - b * HW;
          v = z[(b * Cz + c0 + c) * HW + p];
        }
        Zs[c][px] = v;
      }
#pragma unroll
      for (int e = 0; e < (kCh * kCodes) / kThreads; e++) {
        int idx = tid + e * kThreads;
        int c = idx % kCh, code = idx / kCh;  // consecutive threads: consecutive channels of a row
        float v = 0.f;
        if (k0 + code < K && c0 + c < Cz) v = cb[static_cast<int64_t>(k0 + code) * Cz + c0 + c];
        Es[c][code] = v;
      }
      __syncthreads();
      // padded channels are 0 on both sides and add exactly 0
#pragma unroll
      for (int c = 0; c < kCh; c++) {
        float a[4], e[4];
#pragma unroll
        for (int i = 0; i < 4; i++) a[i] = Zs[c][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; j++) e[j] = Es[c][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) {
            float d = a[i] - e[j];
            acc[i][j] = fmaf(d, d, acc[i][j]);
          }
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {  // codes tx + 16j ascend with j
      int code = k0 + tx + 16 * j;
      if (code < K) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
          if (acc[i][j] < best_d[i] || best_k[i] == INT_MAX) {
            best_d[i] = acc[i][j];
            best_k[i] = code;
          }
        }
      }
    }
  }
  // The 16 threads sharing ty are 16 consecutive lanes of one warp.
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float d = best_d[i];
    int k = best_k[i];
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) {
      float od = __shfl_xor_sync(0xffffffffu, d, o);
      int ok = __shfl_xor_sync(0xffffffffu, k, o);
      if (od < d || (od == d && ok < k)) {
        d = od;
        k = ok;
      }
    }
    int64_t n = n0 + ty + 16 * i;
    if (tx == 0 && n < total) tokens[n] = k == INT_MAX ? 0 : k;
  }
}

__global__ void codebook_lookup_kernel(float* __restrict__ out, const int32_t* __restrict__ tokens,
                                       const float* __restrict__ cb, int Cz, int64_t HW, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t p = i % HW;
    int64_t bc = i / HW;
    int c = static_cast<int>(bc % Cz);
    int64_t b = bc / Cz;
    int32_t t = tokens[b * HW + p];
    out[i] = cb[static_cast<int64_t>(t) * Cz + c];
  }
}

}  // namespace

void codebook_nearest_forward(int32_t* tokens, const float* z, const float* codebook, int B, int Cz, int64_t HW, int K,
                              cudaStream_t stream) {
  int64_t total = static_cast<int64_t>(B) * HW;
  if (total <= 0) return;
  int64_t blocks = ceil_div(total, kPix);
  if (blocks > 0x7fffffffLL) fail("codebook_nearest", "too many pixels");
  codebook_nearest_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(tokens, z, codebook, Cz, HW, total, K);
  CUDA_LAUNCH_CHECK();
}

void codebook_lookup_forward(float* out, const int32_t* tokens, const float* codebook, int B, int Cz, int64_t HW,
                             cudaStream_t stream) {
  int64_t n = static_cast<int64_t>(B) * Cz * HW;
  if (n <= 0) return;
  codebook_lookup_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, tokens, codebook, Cz, HW, n);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
