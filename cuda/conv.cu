// conv2d (NCHW, weights (Cout, Cin, kh, kw) in F32/F16/BF16) as an implicit GEMM:
//   C (M = B*Ho*Wo pixels, N = Cout) = A (M, K = Cin*kh*kw) * B (K, N)
// where A(m, k) is the input patch element gathered on the fly (zero padding), and
// B(k, n) = w[n*K + k] is the weight row, exactly a PyTorch linear weight. Pixels are
// the GEMM's M so that consecutive threads gather and store consecutive x positions.
// - F16/BF16 weights: tensor cores (gemm_tile.cuh, WMMA, fp32 accumulation; the fp32
//   activations are rounded to the weight type when staged in shared memory).
// - F32 weights: fp32 on TF32 tensor cores with the 3xTF32 split (fp32 accuracy, see
//   gemm_tile.cuh); RARGEN_CONV_SIMT=1 selects the plain fp32 SIMT tile kernel instead.
// - Split-K (deterministic: partials reduced in order) when the tile grid is small.
// - Cout < 32: a direct kernel (one thread per output value), because a 128-wide tile
//   would be almost all padding (the decoder's conv_out has Cout = 3). It is fully
//   general (any kh, kw, stride, padding, dtype) and also the reference of the others.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "gemm_tile.cuh"
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

template <typename TW>
struct ConvProb : WeightRowsProb<TW> {  // M = B * Ho * Wo, N = Cout, K = Cin * kh * kw
  int Cin, H, W, kh, kw, sh, sw, ph, pw, Wo;
  int64_t HWo;
  using Base = WeightRowsProb<TW>;
  using Base::bias, Base::inp, Base::K, Base::M, Base::N, Base::out;
  static constexpr bool kAMFast = true, kOutMFast = true;

  __device__ __forceinline__ void load_a8(int64_t m, int k0, float v[8]) const {
    if (m >= M) {
#pragma unroll
      for (int e = 0; e < 8; e++) v[e] = 0.f;
      return;
    }
    const int64_t b = m / HWo;
    const int p = static_cast<int>(m - b * HWo);
    const int oy = p / Wo, ox = p - (p / Wo) * Wo;
    const int iy0 = oy * sh - ph, ix0 = ox * sw - pw;
    const float* base = inp + b * Cin * static_cast<int64_t>(H) * W;
    const int khw = kh * kw;
    int ci = k0 / khw;
    int r = k0 - ci * khw;
    int ky = r / kw;
    int kx = r - ky * kw;
#pragma unroll
    for (int e = 0; e < 8; e++) {
      float x = 0.f;
      if (k0 + e < K) {
        const int iy = iy0 + ky, ix = ix0 + kx;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) x = __ldg(base + (static_cast<int64_t>(ci) * H + iy) * W + ix);
      }
      v[e] = x;
      if (++kx == kw) {
        kx = 0;
        if (++ky == kh) {
          ky = 0;
          ++ci;
        }
      }
    }
  }
  __device__ __forceinline__ void store(int64_t m, int n, float acc) const {
    const int64_t b = m / HWo;
    const int64_t p = m - b * HWo;
    out[(b * N + n) * HWo + p] = acc + (bias ? bias[n] : 0.f);
  }
};

// Split-K for small images (the decoder's 16x16 and 32x32 levels give a grid of a few
// tiles with K up to 4608): block z writes its partial product to part[z][m][n]; the
// reduction adds the S partials in order (deterministic), the bias, and scatters NCHW.
template <class Inner>
struct SplitProb : Inner {
  float* part;
  static constexpr bool kOutMFast = false;
  __device__ __forceinline__ void store(int64_t m, int n, float acc) const {
    part[(static_cast<int64_t>(blockIdx.z) * this->M + m) * this->N + n] = acc;
  }
};

__global__ void split_reduce_kernel(float* __restrict__ out, const float* __restrict__ part,
                                    const float* __restrict__ bias, int S, int64_t M, int N, int64_t HWo) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int n = static_cast<int>(i / M);
    const int64_t m = i - static_cast<int64_t>(n) * M;  // consecutive threads: consecutive pixels
    float acc = 0.f;
    for (int z = 0; z < S; z++) acc += part[(z * M + m) * N + n];
    const int64_t b = m / HWo, p = m - b * HWo;
    out[(b * N + n) * HWo + p] = acc + (bias ? bias[n] : 0.f);
  }
}

template <typename TW>
__global__ void conv_direct_kernel(float* __restrict__ out, const float* __restrict__ inp, const TW* __restrict__ w,
                                   const float* __restrict__ bias, int B, int Cin, int H, int W, int Cout, int kh,
                                   int kw, int sh, int sw, int ph, int pw, int Ho, int Wo) {
  const int64_t HWo = static_cast<int64_t>(Ho) * Wo;
  const int64_t n = static_cast<int64_t>(B) * Cout * HWo;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i % HWo;
    const int64_t bc = i / HWo;
    const int co = static_cast<int>(bc % Cout);
    const int64_t b = bc / Cout;
    const int oy = static_cast<int>(p / Wo), ox = static_cast<int>(p % Wo);
    const float* x = inp + b * Cin * static_cast<int64_t>(H) * W;
    const TW* wr = w + static_cast<int64_t>(co) * Cin * kh * kw;
    float acc = 0.f;
    for (int ci = 0; ci < Cin; ci++) {
      for (int ky = 0; ky < kh; ky++) {
        const int iy = oy * sh - ph + ky;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < kw; kx++) {
          const int ix = ox * sw - pw + kx;
          if (ix < 0 || ix >= W) continue;
          acc = fmaf(to_float(wr[(ci * kh + ky) * kw + kx]), x[(static_cast<int64_t>(ci) * H + iy) * W + ix], acc);
        }
      }
    }
    out[i] = acc + (bias ? bias[co] : 0.f);
  }
}

template <typename TW>
ConvProb<TW> make_prob(float* out, const float* inp, const void* w, const float* bias, int B, int Cin, int H, int W,
                       int Cout, int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo) {
  ConvProb<TW> p;
  p.inp = inp;
  p.w = static_cast<const TW*>(w);
  p.bias = bias;
  p.out = out;
  p.HWo = static_cast<int64_t>(Ho) * Wo;
  p.M = static_cast<int64_t>(B) * p.HWo;
  p.N = Cout;
  p.K = Cin * kh * kw;
  p.Cin = Cin;
  p.H = H;
  p.W = W;
  p.kh = kh;
  p.kw = kw;
  p.sh = sh;
  p.sw = sw;
  p.ph = ph;
  p.pw = pw;
  p.Wo = Wo;
  // 8 weights of a row are one 16-byte load (bf16/f16) or two (f32) when rows stay aligned.
  p.vecB = aligned16(w) && (p.K % 8 == 0);
  return p;
}

template <typename TW>
void launch_direct(float* out, const float* inp, const void* w, const float* bias, int B, int Cin, int H, int W,
                   int Cout, int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo, cudaStream_t stream) {
  int64_t n = static_cast<int64_t>(B) * Cout * Ho * Wo;
  conv_direct_kernel<TW><<<grid_for(n, 256), 256, 0, stream>>>(out, inp, static_cast<const TW*>(w), bias, B, Cin, H, W,
                                                               Cout, kh, kw, sh, sw, ph, pw, Ho, Wo);
  CUDA_LAUNCH_CHECK();
}

// Launches a tiled kernel (via `launch(grid, problem, stream)`), with split-K when the
// tile grid would leave most SMs idle and K is long enough: S splits of >= 8 k-tiles,
// aiming at about one block per SM.
template <int BM, int BN, int BK, class Prob, class Launch>
void launch_tiled(const Prob& p, int num_sms, ScratchProvider& sp, cudaStream_t stream, Launch launch) {
  const int64_t mt = ceil_div(p.M, BM), nt = ceil_div(p.N, BN), blocks = mt * nt;
  const int ktiles = static_cast<int>(ceil_div(p.K, BK));
  const int sms = num_sms > 0 ? num_sms : 108;
  int64_t S = 1;
  if (2 * blocks <= sms && ktiles >= 16) S = std::min<int64_t>({ceil_div(sms, blocks), ktiles / 8, 32});
  if (S <= 1) {
    launch(dim3(static_cast<unsigned>(mt), static_cast<unsigned>(nt), 1), p, stream);
    CUDA_LAUNCH_CHECK();
    return;
  }
  const int kps = static_cast<int>(ceil_div(ktiles, S));
  S = ceil_div(ktiles, kps);  // every split non-empty
  SplitProb<Prob> q;
  static_cast<Prob&>(q) = p;
  q.kps = kps;
  q.part = static_cast<float*>(sp.scratch(kScratchSplitK, static_cast<size_t>(S * p.M * p.N) * sizeof(float)));
  launch(dim3(static_cast<unsigned>(mt), static_cast<unsigned>(nt), static_cast<unsigned>(S)), q, stream);
  CUDA_LAUNCH_CHECK();
  split_reduce_kernel<<<grid_for(p.M * p.N, 256), 256, 0, stream>>>(p.out, q.part, p.bias, static_cast<int>(S), p.M,
                                                                    p.N, p.HWo);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void conv2d_forward(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W, int Cout,
                    int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo, int num_sms, ScratchProvider& sp,
                    cudaStream_t stream) {
  const int64_t M = static_cast<int64_t>(B) * Ho * Wo;
  if (M <= 0) return;
  if (static_cast<int64_t>(Cin) * kh * kw > 0x7fffffffLL) fail("conv2d", "Cin*kh*kw too large");
  if (Cout < 32) {
    switch (w.dtype) {
      case DType::F32: launch_direct<float>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo, stream); return;
      case DType::F16: launch_direct<__half>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo, stream); return;
      case DType::BF16: launch_direct<__nv_bfloat16>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo, stream); return;
      default: fail("conv2d", "weight dtype must be F32, F16 or BF16");
    }
  }
  if (ceil_div(M, kTcBM) > 0x7fffffffLL) fail("conv2d", "too many output pixels");
  static const bool simt = [] {
    const char* e = std::getenv("RARGEN_CONV_SIMT");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  switch (w.dtype) {
    case DType::F32: {
      auto p = make_prob<float>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo);
      if (simt) launch_tiled<kSimtBM, kSimtBN, kSimtBK>(p, num_sms, sp, stream, [](dim3 g, auto q, cudaStream_t st) {
        simt_gemm_kernel<<<g, kSimtThreads, 0, st>>>(q);
      });
      else launch_tiled<kTcBM, kTcBN, kTcBK>(p, num_sms, sp, stream, [](dim3 g, auto q, cudaStream_t st) {
        tf32x3_gemm_kernel<<<g, kTcThreads, 0, st>>>(q);
      });
      return;
    }
    case DType::F16: {
      auto p = make_prob<__half>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo);
      launch_tiled<kTcBM, kTcBN, kTcBK>(p, num_sms, sp, stream, [](dim3 g, auto q, cudaStream_t st) {
        tc_gemm_kernel<__half><<<g, kTcThreads, 0, st>>>(q);
      });
      return;
    }
    case DType::BF16: {
      auto p = make_prob<__nv_bfloat16>(out, inp, w.data, bias, B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, Ho, Wo);
      launch_tiled<kTcBM, kTcBN, kTcBK>(p, num_sms, sp, stream, [](dim3 g, auto q, cudaStream_t st) {
        tc_gemm_kernel<__nv_bfloat16><<<g, kTcThreads, 0, st>>>(q);
      });
      return;
    }
    default:
      fail("conv2d", "weight dtype must be F32, F16 or BF16");
  }
}

}  // namespace cuda
}  // namespace rargen
