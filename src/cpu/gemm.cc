// Packed SGEMM driver (BLIS loop order) and the portable kernels.
//
// C (M,N) = A (M,K) B (K,N): the N dimension is cut into NC-wide chunks (and, when
// that leaves threads idle, M into MC-multiples too); each task packs its KC x NC
// block of B once and every MC x KC block of A, then runs the MR x NR micro-kernel
// over the tiles. One driver serves linear layers (B = W^T, W in F32/F16/BF16,
// converted while packing) and convolutions (A = the filter, B = an implicit im2col
// of the input), so the convolution never materialises the im2col matrix.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/half.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {
std::atomic<bool> g_force_portable{false};

bool detect_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

constexpr int kKC = kGemmKC;
constexpr int kMC = 96;    // multiple of kMR
constexpr int kNC = 1024;  // multiple of kNR

// 64-byte aligned scratch owned by the calling thread, grown on demand.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      n = want;
      p = static_cast<float*>(std::aligned_alloc(64, ((want * 4 + 63) / 64) * 64));
      if (!p) throw Error("cpu gemm: out of memory for packing buffers");
    }
    return p;
  }
};
thread_local Scratch t_pack_a, t_pack_b;

}  // namespace

bool has_avx2() {
  static const bool ok = detect_avx2();
  return ok && !g_force_portable.load(std::memory_order_relaxed);
}
void force_portable(bool on) { g_force_portable.store(on); }

namespace {
std::atomic<bool> g_no_winograd{false};
}
bool winograd_disabled() { return g_no_winograd.load(std::memory_order_relaxed); }

namespace {
std::atomic<int64_t> g_gemv_max_rows{40};  // measured crossover 32..64 rows (RAR-B shapes)
}
int64_t gemv_max_rows() { return g_gemv_max_rows.load(std::memory_order_relaxed); }
void set_gemv_max_rows(int64_t rows) { g_gemv_max_rows.store(rows); }
void disable_winograd(bool on) { g_no_winograd.store(on); }

// ---------------- packers ----------------

void convert_to_f32_ref(float* dst, const void* src, DType dt, int64_t n) {
  switch (dt) {
    case DType::F32: std::memcpy(dst, src, n * 4); break;
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
      break;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    default: throw Error("cpu: convert_to_f32: unsupported dtype");
  }
}

static inline const void* elem_ptr(const void* base, DType dt, int64_t i) {
  return static_cast<const char*>(base) + i * static_cast<int64_t>(dtype_size(dt));
}

void PackARowMajor::pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const {
  float row[kKC];
  for (int p = 0; p < mc; p += kMR) {
    float* d = dst + static_cast<int64_t>(p) * kc;
    for (int i = 0; i < kMR; i++) {
      int64_t m = m0 + p + i;
      if (p + i < mc && m < M) {
        const float* src;
        if (dtype == DType::F32) {
          src = static_cast<const float*>(A) + m * lda + k0;
        } else {
          convert_to_f32(row, elem_ptr(A, dtype, m * lda + k0), dtype, kc);
          src = row;
        }
        for (int k = 0; k < kc; k++) d[k * kMR + i] = src[k];
      } else {
        for (int k = 0; k < kc; k++) d[k * kMR + i] = 0.f;
      }
    }
  }
}

void PackBWeight::pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const {
  float row[kKC];
  for (int p = 0; p < nc; p += kNR) {
    float* d = dst + static_cast<int64_t>(p) * kc;
    for (int j = 0; j < kNR; j++) {
      int64_t n = n0 + p + j;
      if (p + j < nc && n < N) {
        const float* src;
        if (dtype == DType::F32) {
          src = static_cast<const float*>(W) + n * K + k0;
        } else {
          convert_to_f32(row, elem_ptr(W, dtype, n * K + k0), dtype, kc);
          src = row;
        }
        for (int k = 0; k < kc; k++) d[k * kNR + j] = src[k];
      } else {
        for (int k = 0; k < kc; k++) d[k * kNR + j] = 0.f;
      }
    }
  }
}

void PackBRowMajor::pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const {
  for (int p = 0; p < nc; p += kNR) {
    float* d = dst + static_cast<int64_t>(p) * kc;
    int64_t nb = n0 + p;
    int w = static_cast<int>(std::min<int64_t>(kNR, N - nb));
    for (int k = 0; k < kc; k++) {
      const float* s = Bm + (k0 + k) * ldb + nb;
      if (w == kNR) {
        std::memcpy(d + k * kNR, s, kNR * 4);
      } else {
        for (int j = 0; j < kNR; j++) d[k * kNR + j] = j < w ? s[j] : 0.f;
      }
    }
  }
}

void PackBConv::pack(float* dst, int64_t k0, int kc, int64_t n0, int nc) const {
  const int64_t Npix = static_cast<int64_t>(Ho) * Wo;
  const int khw = kh * kw;
  for (int p = 0; p < nc; p += kNR) {
    float* d = dst + static_cast<int64_t>(p) * kc;
    int64_t nb = n0 + p;
    int oy = static_cast<int>(nb / Wo), ox = static_cast<int>(nb % Wo);
    // Fast case: the 16 pixels lie on one output row and stride 1 (the 3x3 convs).
    bool one_row = sw == 1 && ox + kNR <= Wo && nb + kNR <= Npix;
    for (int k = 0; k < kc; k++) {
      int64_t kk = k0 + k;
      int ci = static_cast<int>(kk / khw);
      int r = static_cast<int>(kk % khw);
      int ky = r / kw, kx = r % kw;
      float* dk = d + k * kNR;
      if (one_row) {
        int iy = oy * sh + ky - ph;
        if (iy < 0 || iy >= H) {
          for (int j = 0; j < kNR; j++) dk[j] = 0.f;
          continue;
        }
        const float* src = inp + (static_cast<int64_t>(ci) * H + iy) * W;
        int ix0 = ox + kx - pw;
        if (ix0 >= 0 && ix0 + kNR <= W) {
          std::memcpy(dk, src + ix0, kNR * 4);
        } else {
          for (int j = 0; j < kNR; j++) {
            int ix = ix0 + j;
            dk[j] = (ix >= 0 && ix < W) ? src[ix] : 0.f;
          }
        }
      } else {
        for (int j = 0; j < kNR; j++) {
          int64_t n = nb + j;
          if (n >= Npix) {
            dk[j] = 0.f;
            continue;
          }
          int y = static_cast<int>(n / Wo), x = static_cast<int>(n % Wo);
          int iy = y * sh + ky - ph, ix = x * sw + kx - pw;
          dk[j] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                      ? inp[(static_cast<int64_t>(ci) * H + iy) * W + ix]
                      : 0.f;
        }
      }
    }
  }
}

// ---------------- portable micro-kernel ----------------

void gemm_kernel_ref(int kc, const float* A, const float* B, float* C, int64_t ldc, int mr, int nr,
                     bool load_c, const float* bias_row, const float* bias_col) {
  float acc[kMR][kNR] = {};
  for (int k = 0; k < kc; k++) {
    const float* a = A + k * kMR;
    const float* b = B + k * kNR;
    for (int i = 0; i < kMR; i++)
      for (int j = 0; j < kNR; j++) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < mr; i++) {
    float* c = C + i * ldc;
    for (int j = 0; j < nr; j++) {
      float v = acc[i][j];
      if (load_c) v += c[j];
      if (bias_row) v += bias_row[i];
      if (bias_col) v += bias_col[j];
      c[j] = v;
    }
  }
}

// ---------------- driver ----------------

void gemm(float* C, int64_t ldc, int64_t M, int64_t N, int64_t K, const PackA& pa, const PackB& pb,
          const float* bias_row, const float* bias_col, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  auto kernel = has_avx2() ? gemm_kernel_avx2 : gemm_kernel_ref;
  ThreadPool& pool = global_pool();
  const int T = pool.size();
  if (K <= 0) {  // C = bias (or unchanged plus bias)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        float v = accumulate ? C[m * ldc + n] : 0.f;
        if (bias_row) v += bias_row[m];
        if (bias_col) v += bias_col[n];
        C[m * ldc + n] = v;
      }
    return;
  }

  // Work split: N chunks of nc columns; M chunks of mcs rows when N alone is too few.
  int64_t nc = kNC;
  if ((N + nc - 1) / nc < 2 * T) nc = std::max<int64_t>(kNR, ((N + 2 * T - 1) / (2 * T) + kNR - 1) / kNR * kNR);
  nc = std::min<int64_t>(nc, kNC);
  int64_t n_chunks = (N + nc - 1) / nc;
  int64_t m_chunks = 1;
  if (n_chunks < 2 * T) m_chunks = std::max<int64_t>(1, std::min<int64_t>((2 * T + n_chunks - 1) / n_chunks, M / kMC));
  int64_t mcs = ((M + m_chunks - 1) / m_chunks + kMR - 1) / kMR * kMR;
  m_chunks = (M + mcs - 1) / mcs;

  auto task = [&](int64_t t, int) {
    int64_t jc = (t % n_chunks) * nc;
    int64_t mlo = (t / n_chunks) * mcs, mhi = std::min(M, mlo + mcs);
    int ncur = static_cast<int>(std::min(nc, N - jc));
    int ncur_pad = (ncur + kNR - 1) / kNR * kNR;
    float* bbuf = t_pack_b.get(static_cast<size_t>(kKC) * ncur_pad);
    float* abuf = t_pack_a.get(static_cast<size_t>(kKC) * kMC);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      int kc = static_cast<int>(std::min<int64_t>(kKC, K - pc));
      bool first = pc == 0, last = pc + kc >= K;
      pb.pack(bbuf, pc, kc, jc, ncur);
      for (int64_t ic = mlo; ic < mhi; ic += kMC) {
        int mc = static_cast<int>(std::min<int64_t>(kMC, mhi - ic));
        const float* ap = pa.direct(ic, mc, pc, kc);
        if (!ap) {
          pa.pack(abuf, ic, mc, pc, kc);
          ap = abuf;
        }
        for (int jr = 0; jr < ncur; jr += kNR) {
          int nr = std::min(kNR, ncur - jr);
          const float* bp = bbuf + static_cast<int64_t>(jr) * kc;
          for (int ir = 0; ir < mc; ir += kMR) {
            int mr = std::min(kMR, mc - ir);
            float* c = C + (ic + ir) * ldc + jc + jr;
            kernel(kc, ap + static_cast<int64_t>(ir) * kc, bp, c, ldc, mr, nr, accumulate || !first,
                   last && bias_row ? bias_row + ic + ir : nullptr,
                   last && bias_col ? bias_col + jc + jr : nullptr);
          }
        }
      }
    }
  };
  pool.run(n_chunks * m_chunks, task);
}

// ---------------- portable GEMV and vector math ----------------

void gemv_ref(float* out, const float* inp, const void* W, DType dt, const float* bias, int64_t M,
              int64_t n0, int64_t n1, int64_t N, int K, bool accumulate) {
  std::vector<float> w(K);
  for (int64_t n = n0; n < n1; n++) {
    convert_to_f32_ref(w.data(), elem_ptr(W, dt, n * K), dt, K);
    for (int64_t m = 0; m < M; m++) {
      float s = dot_ref(inp + m * K, w.data(), K);
      if (bias) s += bias[n];
      float* o = out + m * N + n;
      *o = accumulate ? *o + s : s;
    }
  }
}

// Eight partial sums in the same order as the AVX2 lanes, so the compiler can
// vectorise it and both paths round alike.
float dot_ref(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy_ref(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void affine_silu_ref(float* out, const float* in, int64_t n, float a, float b, bool silu) {
  for (int64_t i = 0; i < n; i++) {
    float v = in[i] * a + b;
    out[i] = silu ? v / (1.f + std::exp(-v)) : v;
  }
}

double sum_ref(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  return s;
}

double sumsq_dev_ref(const float* x, int64_t n, double mean) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = x[i] - mean;
    s += d * d;
  }
  return s;
}

void attn_scores_ref(float* scores, const float* q, const float* k, int L, int D, float scale) {
  for (int j = 0; j < L; j++) scores[j] = dot_ref(q, k + static_cast<int64_t>(j) * D, D) * scale;
}

void attn_weighted_sum_ref(float* acc, const float* p, const float* v, int L, int D) {
  for (int d = 0; d < D; d++) acc[d] = 0.f;
  for (int j = 0; j < L; j++) axpy_ref(acc, p[j], v + static_cast<int64_t>(j) * D, D);
}

float sqdist_ref(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) {
      float d = a[i + l] - b[i + l];
      acc[l] += d * d;
    }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; i++) {
    float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

}  // namespace cpu
}  // namespace rargen
