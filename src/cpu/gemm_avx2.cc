// AVX2/FMA/F16C kernels. Compiled with -mavx2 -mfma -mf16c; only called after
// has_avx2() (a run-time CPU check), so the rest of the addon runs on any x86-64.
//
// - gemm_kernel_avx2: the 6x16 SGEMM micro-kernel (12 accumulators, 2 B vectors,
//   1 broadcast = 15 of the 16 ymm registers).
// - gemv_avx2: the decode path (M = a few rows): streams each weight row once,
//   converting F16 (vcvtph2ps) or BF16 (shift left 16) in registers, one weight row
//   by up to four input rows per pass; memory-bound by design.
// - vector helpers (dot, axpy, sums, SiLU with a vectorised exp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"

namespace rargen {
namespace cpu {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int DT>
constexpr int kEsize = DT == 0 ? 4 : 2;  // bytes per weight element

template <int DT>
inline __m256 load8(const void* base, int64_t i);
template <>
inline __m256 load8<0>(const void* base, int64_t i) {
  return _mm256_loadu_ps(static_cast<const float*>(base) + i);
}
template <>
inline __m256 load8<1>(const void* base, int64_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
}
template <>
inline __m256 load8<2>(const void* base, int64_t i) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
template <int DT>
inline float load1(const void* base, int64_t i) {
  if (DT == 0) return static_cast<const float*>(base)[i];
  uint16_t h = static_cast<const uint16_t*>(base)[i];
  if (DT == 1) return _cvtsh_ss(h);
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// exp(x) for x in float range: Cephes-style range reduction and a degree-6
// polynomial; about 1 ulp, inputs clamped to avoid overflow.
inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// One weight row at a time, so the weights are read as one sequential stream (two
// interleaved row streams measured 30-40% slower out of cache), k unrolled by 16
// for two independent accumulator sets per input row, and a software prefetch 2 KiB
// ahead (rows are short streams the hardware prefetcher picks up late).
template <int MB, int DT>
void gemv_rows(float* out, const float* inp, const void* W, const float* bias, int64_t n0, int64_t n1, int64_t N,
                int K, bool accumulate) {
  const int K16 = K & ~15;
  const char* base = static_cast<const char*>(W);
  for (int64_t n = n0; n < n1; n++) {
    __m256 a0[MB], a1[MB];
    for (int m = 0; m < MB; m++) a0[m] = a1[m] = _mm256_setzero_ps();
    const int64_t r0 = n * K;
    const char* pf = base + r0 * kEsize<DT> + 2048;
    int k = 0;
    for (; k < K16; k += 16) {
      if ((k * kEsize<DT>) % 64 == 0) _mm_prefetch(pf + k * kEsize<DT>, _MM_HINT_T0);
      __m256 w0 = load8<DT>(W, r0 + k), w1 = load8<DT>(W, r0 + k + 8);
      for (int m = 0; m < MB; m++) {
        a0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(inp + static_cast<int64_t>(m) * K + k), a0[m]);
        a1[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(inp + static_cast<int64_t>(m) * K + k + 8), a1[m]);
      }
    }
    for (int m = 0; m < MB; m++) {
      float s0 = hsum(_mm256_add_ps(a0[m], a1[m]));
      for (int kk = k; kk < K; kk++) s0 += load1<DT>(W, r0 + kk) * inp[static_cast<int64_t>(m) * K + kk];
      if (bias) s0 += bias[n];
      float* o = out + m * N + n;
      *o = accumulate ? *o + s0 : s0;
    }
  }
}

template <int DT>
void gemv_dt(float* out, const float* inp, const void* W, const float* bias, int64_t M, int64_t n0,
             int64_t n1, int64_t N, int K, bool accumulate) {
  // Rows of the input in groups of four; the weight slice [n0, n1) is re-read per
  // group, from cache when it fits (callers keep slices small when M > 4).
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) gemv_rows<4, DT>(out + m * N, inp + m * K, W, bias, n0, n1, N, K, accumulate);
  switch (M - m) {
    case 3: gemv_rows<3, DT>(out + m * N, inp + m * K, W, bias, n0, n1, N, K, accumulate); break;
    case 2: gemv_rows<2, DT>(out + m * N, inp + m * K, W, bias, n0, n1, N, K, accumulate); break;
    case 1: gemv_rows<1, DT>(out + m * N, inp + m * K, W, bias, n0, n1, N, K, accumulate); break;
    default: break;
  }
}

}  // namespace

void gemm_kernel_avx2(int kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr,
                      bool load_c, const float* bias_row, const float* bias_col) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
    __m256 a;
    a = _mm256_broadcast_ss(A + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(A + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(A + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(A + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(A + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(A + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    A += kMR;
    B += kNR;
  }
  __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  __m256 bc0 = _mm256_setzero_ps(), bc1 = bc0;
  if (bias_col) {
    if (nr == kNR) {
      bc0 = _mm256_loadu_ps(bias_col);
      bc1 = _mm256_loadu_ps(bias_col + 8);
    } else {
      alignas(32) float tmp[kNR] = {};
      for (int j = 0; j < nr; j++) tmp[j] = bias_col[j];
      bc0 = _mm256_load_ps(tmp);
      bc1 = _mm256_load_ps(tmp + 8);
    }
  }
  for (int i = 0; i < mr; i++) {
    __m256 v0 = _mm256_add_ps(acc[i][0], bc0), v1 = _mm256_add_ps(acc[i][1], bc1);
    if (bias_row) {
      __m256 br = _mm256_set1_ps(bias_row[i]);
      v0 = _mm256_add_ps(v0, br);
      v1 = _mm256_add_ps(v1, br);
    }
    float* c = C + i * ldc;
    if (nr == kNR) {
      if (load_c) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    } else {
      alignas(32) float tmp[kNR];
      _mm256_store_ps(tmp, v0);
      _mm256_store_ps(tmp + 8, v1);
      for (int j = 0; j < nr; j++) c[j] = load_c ? c[j] + tmp[j] : tmp[j];
    }
  }
}

void gemv_avx2(float* out, const float* inp, const void* W, DType dt, const float* bias, int64_t M,
               int64_t n0, int64_t n1, int64_t N, int K, bool accumulate) {
  switch (dt) {
    case DType::F32: gemv_dt<0>(out, inp, W, bias, M, n0, n1, N, K, accumulate); break;
    case DType::F16: gemv_dt<1>(out, inp, W, bias, M, n0, n1, N, K, accumulate); break;
    case DType::BF16: gemv_dt<2>(out, inp, W, bias, M, n0, n1, N, K, accumulate); break;
    default: throw Error("cpu: gemv: unsupported weight dtype");
  }
}

void convert_to_f32_avx2(float* dst, const void* src, DType dt, int64_t n) {
  int64_t i = 0;
  switch (dt) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<1>(src, i));
      for (; i < n; i++) dst[i] = load1<1>(src, i);
      return;
    case DType::BF16:
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<2>(src, i));
      for (; i < n; i++) dst[i] = load1<2>(src, i);
      return;
    default: throw Error("cpu: convert_to_f32: unsupported dtype");
  }
}

float dot_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy_avx2(float* y, float a, const float* x, int n) {
  __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

void affine_silu_avx2(float* out, const float* in, int64_t n, float a, float b, bool silu) {
  __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), one = _mm256_set1_ps(1.f);
  __m256 sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(in + i), va, vb);
    if (silu) v = _mm256_div_ps(v, _mm256_add_ps(one, exp256(_mm256_xor_ps(v, sign))));
    _mm256_storeu_ps(out + i, v);
  }
  for (; i < n; i++) {
    float v = in[i] * a + b;
    out[i] = silu ? v / (1.f + std::exp(-v)) : v;
  }
}

double sum_avx2(const float* x, int64_t n) {
  // Float partial sums over blocks of 1024, added up in double.
  double total = 0;
  int64_t i = 0;
  while (i + 8 <= n) {
    int64_t end = std::min<int64_t>(n & ~int64_t(7), i + 1024);
    __m256 acc = _mm256_setzero_ps();
    for (; i < end; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    total += hsum(acc);
  }
  for (; i < n; i++) total += x[i];
  return total;
}

double sumsq_dev_avx2(const float* x, int64_t n, double mean) {
  double total = 0;
  const float mf = static_cast<float>(mean);
  __m256 vm = _mm256_set1_ps(mf);
  int64_t i = 0;
  while (i + 8 <= n) {
    int64_t end = std::min<int64_t>(n & ~int64_t(7), i + 1024);
    __m256 acc = _mm256_setzero_ps();
    for (; i < end; i += 8) {
      __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
      acc = _mm256_fmadd_ps(d, d, acc);
    }
    total += hsum(acc);
  }
  for (; i < n; i++) {
    double d = x[i] - mean;
    total += d * d;
  }
  return total;
}

void attn_scores_avx2(float* scores, const float* q, const float* k, int L, int D, float scale) {
  const int D8 = D & ~7;
  int j = 0;
  for (; j + 2 <= L; j += 2) {  // two keys at a time for two independent chains
    const float* k0 = k + static_cast<int64_t>(j) * D;
    const float* k1 = k0 + D;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int d = 0; d < D8; d += 8) {
      __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
    }
    float s0 = hsum(a0), s1 = hsum(a1);
    for (int d = D8; d < D; d++) {
      s0 += q[d] * k0[d];
      s1 += q[d] * k1[d];
    }
    scores[j] = s0 * scale;
    scores[j + 1] = s1 * scale;
  }
  for (; j < L; j++) scores[j] = dot_avx2(q, k + static_cast<int64_t>(j) * D, D) * scale;
}

void attn_weighted_sum_avx2(float* acc, const float* p, const float* v, int L, int D) {
  int d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) {  // 32 output columns in four registers
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float* vp = v + d0;
    for (int j = 0; j < L; j++, vp += D) {
      __m256 w = _mm256_broadcast_ss(p + j);
      a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp), a0);
      a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 16), a2);
      a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 24), a3);
    }
    _mm256_storeu_ps(acc + d0, a0);
    _mm256_storeu_ps(acc + d0 + 8, a1);
    _mm256_storeu_ps(acc + d0 + 16, a2);
    _mm256_storeu_ps(acc + d0 + 24, a3);
  }
  for (; d0 + 8 <= D; d0 += 8) {
    __m256 a0 = _mm256_setzero_ps();
    const float* vp = v + d0;
    for (int j = 0; j < L; j++, vp += D) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(vp), a0);
    _mm256_storeu_ps(acc + d0, a0);
  }
  for (; d0 < D; d0++) {
    float a = 0.f;
    for (int j = 0; j < L; j++) a += p[j] * v[static_cast<int64_t>(j) * D + d0];
    acc[d0] = a;
  }
}

float sqdist_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    acc = _mm256_fmadd_ps(d, d, acc);
  }
  float s = hsum(acc);
  for (; i < n; i++) {
    float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

}  // namespace cpu
}  // namespace rargen
