// Kernel entry points of the CPU backend, in two flavours: portable C++ (kernels.cc,
// gemm.cc) and AVX2/FMA/F16C (*_avx2.cc, compiled with -mavx2 -mfma -mf16c and only
// called when has_avx2() says the CPU supports them). Callers use the dispatching
// wrappers at the bottom; nothing outside src/cpu/ includes this file.
#pragma once
#include <cstdint>

#include "backend.h"

namespace rargen {
namespace cpu {

// True when the CPU has AVX2, FMA and F16C (checked once at run time) and the
// portable path has not been forced (tests compare the two paths).
bool has_avx2();
void force_portable(bool on);
// Tests compare the Winograd 3x3 convolution with the implicit-GEMM one.
bool winograd_disabled();
void disable_winograd(bool on);
// Rows up to which linear() takes the weight-streaming GEMV path instead of the
// packed GEMM (benchmarks move it).
int64_t gemv_max_rows();
void set_gemv_max_rows(int64_t rows);

// ---- packed SGEMM (gemm.cc drives, the micro-kernel is per ISA) ----
// C (M,N) [row stride ldc] (+)= A (M,K) B (K,N) + bias_row[m] + bias_col[n].
// A and B are packed by the caller-provided packers into MR-row / NR-column panels.
constexpr int kMR = 6;
constexpr int kNR = 16;
constexpr int kGemmKC = 256;  // depth of a packed block

struct PackA {
  // dst[p*kc*kMR + k*kMR + i] = A(m0 + p*kMR + i, k0 + k), zero past row M.
  virtual void pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const = 0;
  // Already packed A: a pointer to the panels of (m0, k0), or null to call pack().
  virtual const float* direct(int64_t m0, int mc, int64_t k0, int kc) const { return nullptr; }
  virtual ~PackA() = default;
};
struct PackB {
  // dst[p*kc*kNR + k*kNR + j] = B(k0 + k, n0 + p*kNR + j), zero past column N.
  virtual void pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const = 0;
  virtual ~PackB() = default;
};

void gemm(float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, const PackA& a, const PackB& b,
          const float* bias_row, const float* bias_col, bool accumulate);

// A is a row-major matrix (M,K) in F32/F16/BF16 with row stride lda.
struct PackARowMajor : PackA {
  const void* A;
  DType dtype;
  int64_t lda;
  int64_t M;  // rows, for the zero padding of the last panel
  PackARowMajor(const void* a, DType t, int64_t ld, int64_t m) : A(a), dtype(t), lda(ld), M(m) {}
  void pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const override;
};
// B given transposed, as a PyTorch weight W (N,K): B(k,n) = W[n*K + k].
struct PackBWeight : PackB {
  const void* W;
  DType dtype;
  int64_t N, K;
  PackBWeight(const void* w, DType t, int64_t n, int64_t k) : W(w), dtype(t), N(n), K(k) {}
  void pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const override;
};
// B row-major float (K,N) with row stride ldb (1x1 stride-1 convolutions: B = input).
struct PackBRowMajor : PackB {
  const float* Bm;
  int64_t N, ldb;
  PackBRowMajor(const float* b, int64_t n, int64_t ld) : Bm(b), N(n), ldb(ld) {}
  void pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const override;
};
// Implicit im2col of one NCHW image: B(k, n) with k = (ci, ky, kx), n = (oy, ox).
struct PackBConv : PackB {
  const float* inp;
  int Cin, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo;
  void pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const override;
};

// Micro-kernels: C[mr x nr] (+)= Apanel (kc x MR) * Bpanel (kc x NR), then + biases.
void gemm_kernel_ref(int kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr,
                     bool load_c, const float* bias_row, const float* bias_col);
void gemm_kernel_avx2(int kc, const float* A, const float* B, float* C, int64_t ldc, int mr,
                      int nr, bool load_c, const float* bias_row, const float* bias_col);

// ---- 3x3 stride-1 pad-1 convolution of one image by Winograd F(2x2, 3x3) ----
// out (Cout, H, W) = conv(inp (Cin, H, W), W (Cout, Cin, 3, 3)) + bias.
void winograd_conv3x3(float* out, const float* inp, const void* W, DType dt, const float* bias, int Cin, int H,
                      int Wd, int Cout);
// Fused variants: the input is optionally normalised per channel (x * scale[c] + shift[c],
// then SiLU when silu: GroupNorm folded into scale/shift) and/or nearest-2x upsampled
// (inp is (Cin, H/2, W/2), H and W even) before the zero padding; the output optionally
// gets + residual (same shape as out; may alias out). tile: 2 or 4 for F(2x2)/F(4x4),
// 0 = automatic ($RARGEN_WINOGRAD_TILE, else F(4x4) for images of 8x8 and up).
struct WinoFuse {
  const float* scale = nullptr;
  const float* shift = nullptr;
  bool silu = false;
  bool up2x = false;
  const float* residual = nullptr;
  int tile = 0;
};
void winograd_conv3x3_ex(float* out, const float* inp, const void* W, DType dt, const float* bias, int Cin, int H,
                         int Wd, int Cout, const WinoFuse& f);

// ---- GEMV-style small-M path (decode): out[m, n0:n1] (+)= inp[m] . W[n] + bias[n] ----
// Streams W (N,K) once, converting F16/BF16 in registers.
void gemv_ref(float* out, const float* inp, const void* W, DType dt, const float* bias, int64_t M,
              int64_t n0, int64_t n1, int64_t N, int K, bool accumulate);
void gemv_avx2(float* out, const float* inp, const void* W, DType dt, const float* bias, int64_t M,
               int64_t n0, int64_t n1, int64_t N, int K, bool accumulate);

// ---- conversions ----
void convert_to_f32_ref(float* dst, const void* src, DType dt, int64_t n);
void convert_to_f32_avx2(float* dst, const void* src, DType dt, int64_t n);
inline void convert_to_f32(float* dst, const void* src, DType dt, int64_t n) {
  if (has_avx2()) convert_to_f32_avx2(dst, src, dt, n);
  else convert_to_f32_ref(dst, src, dt, n);
}

// ---- vector math ----
float dot_ref(const float* a, const float* b, int n);
float dot_avx2(const float* a, const float* b, int n);
void axpy_ref(float* y, float a, const float* x, int n);  // y += a x
void axpy_avx2(float* y, float a, const float* x, int n);
// out = in * a + b, then SiLU when silu.
void affine_silu_ref(float* out, const float* in, int64_t n, float a, float b, bool silu);
void affine_silu_avx2(float* out, const float* in, int64_t n, float a, float b, bool silu);
// sum of x and, given the mean, sum of (x - mean)^2; in double.
double sum_ref(const float* x, int64_t n);
double sum_avx2(const float* x, int64_t n);
double sumsq_dev_ref(const float* x, int64_t n, double mean);
double sumsq_dev_avx2(const float* x, int64_t n, double mean);
float sqdist_ref(const float* a, const float* b, int n);
// Attention inner loops over L cached keys/values (rows of D floats):
// scores[j] = scale * q . k[j];  acc[0:D] = sum_j p[j] v[j].
void attn_scores_ref(float* scores, const float* q, const float* k, int L, int D, float scale);
void attn_scores_avx2(float* scores, const float* q, const float* k, int L, int D, float scale);
void attn_weighted_sum_ref(float* acc, const float* p, const float* v, int L, int D);
void attn_weighted_sum_avx2(float* acc, const float* p, const float* v, int L, int D);
float sqdist_avx2(const float* a, const float* b, int n);

inline float dot(const float* a, const float* b, int n) {
  return has_avx2() ? dot_avx2(a, b, n) : dot_ref(a, b, n);
}
inline void axpy(float* y, float a, const float* x, int n) {
  if (has_avx2()) axpy_avx2(y, a, x, n);
  else axpy_ref(y, a, x, n);
}
inline void affine_silu(float* out, const float* in, int64_t n, float a, float b, bool silu) {
  if (has_avx2()) affine_silu_avx2(out, in, n, a, b, silu);
  else affine_silu_ref(out, in, n, a, b, silu);
}
inline double sum(const float* x, int64_t n) { return has_avx2() ? sum_avx2(x, n) : sum_ref(x, n); }
inline double sumsq_dev(const float* x, int64_t n, double mean) {
  return has_avx2() ? sumsq_dev_avx2(x, n, mean) : sumsq_dev_ref(x, n, mean);
}
inline void attn_scores(float* scores, const float* q, const float* k, int L, int D, float scale) {
  if (has_avx2()) attn_scores_avx2(scores, q, k, L, D, scale);
  else attn_scores_ref(scores, q, k, L, D, scale);
}
inline void attn_weighted_sum(float* acc, const float* p, const float* v, int L, int D) {
  if (has_avx2()) attn_weighted_sum_avx2(acc, p, v, L, D);
  else attn_weighted_sum_ref(acc, p, v, L, D);
}
inline float sqdist(const float* a, const float* b, int n) {
  return has_avx2() ? sqdist_avx2(a, b, n) : sqdist_ref(a, b, n);
}

}  // namespace cpu
}  // namespace rargen
