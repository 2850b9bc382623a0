// 3x3 stride-1 pad-1 convolution by Winograd (Lavin & Gray, 2015). F(2x2, 3x3): each
// 2x2 output tile costs 16 multiplies per (cin, cout) pair instead of 36 (2.25x fewer
// FLOPs); F(4x4, 3x3): 36 per 4x4 tile instead of 144 (4x), used from 32x32 images up.
// The element-wise products over channels are 16 or 36 small GEMMs on the packed SGEMM
// (kernels.h). Tiles are processed in blocks of nt consecutive tiles sized so that a
// block's transformed input V (a*a, Cin, nt) and products M (a*a, Cout, nt) stay in
// cache; blocks run in parallel, one per thread. F(2x2)'s transforms have coefficients
// 0, +-1, +-1/2, so its rounding is that of a direct convolution; F(4x4)'s (up to 5 in
// B^T, 8 in A^T, 1/6 and 1/24 in G) cost ~3x that error, ~1e-5 of the output scale
// (checked in rargen_optest). The fused variant (WinoFuse) applies a per-channel affine
// + SiLU (GroupNorm) and nearest-2x upsampling while reading input rows, and adds a
// residual in the output transform.
//
// F(2x2, 3x3):
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   (input  d -> B^T d B)
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] (filter g -> G g G^T)
//   A^T = [1 1 1 0; 0 1 -1 -1]                      (output m -> A^T m A)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <cstdlib>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {

// The transforms are plain loops over the tiles of a block; on x86-64 Linux they are
// compiled twice (AVX2 and baseline) and picked at load time (GCC target_clones).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define RARGEN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RARGEN_CLONES
#endif

// One input row: e_c[j] = (d B)_c for the 4-wide window at 2j of the padded row p.
RARGEN_CLONES void row_transform(const float* __restrict__ p, float* __restrict__ e, int n, int nt) {
#pragma GCC ivdep
  for (int j = 0; j < n; j++) {
    float a0 = p[2 * j], a1 = p[2 * j + 1], a2 = p[2 * j + 2], a3 = p[2 * j + 3];
    e[0 * nt + j] = a0 - a2;
    e[1 * nt + j] = a1 + a2;
    e[2 * nt + j] = a2 - a1;
    e[3 * nt + j] = a1 - a3;
  }
}

// Across the 4 rows: V[(r*4+c)] = (B^T e)_r for each column transform c.
RARGEN_CLONES void col_transform(const float* __restrict__ E, float* __restrict__ v, int64_t vs, int n, int nt) {
  for (int c = 0; c < 4; c++) {
    const float* e0 = E + (0 * 4 + c) * nt;
    const float* e1 = E + (1 * 4 + c) * nt;
    const float* e2 = E + (2 * 4 + c) * nt;
    const float* e3 = E + (3 * 4 + c) * nt;
    float* v0 = v + (0 + c) * vs;
    float* v1 = v + (4 + c) * vs;
    float* v2 = v + (8 + c) * vs;
    float* v3 = v + (12 + c) * vs;
#pragma GCC ivdep
    for (int j = 0; j < n; j++) {
      v0[j] = e0[j] - e2[j];
      v1[j] = e1[j] + e2[j];
      v2[j] = e2[j] - e1[j];
      v3[j] = e1[j] - e3[j];
    }
  }
}

// Output tiles of one channel: y rows 2ty, 2ty+1 from the 16 products m[k * ms + j].
RARGEN_CLONES void output_transform(const float* m, int64_t ms, float* s, float* y0, float* y1, float b, int n,
                                    int nt, int full) {
  for (int c = 0; c < 4; c++) {
    const float* m0 = m + (0 + c) * ms;
    const float* m1 = m + (4 + c) * ms;
    const float* m2 = m + (8 + c) * ms;
    const float* m3 = m + (12 + c) * ms;
    float* s0 = s + c * nt;
    float* s1 = s + (4 + c) * nt;
#pragma GCC ivdep
    for (int j = 0; j < n; j++) {
      s0[j] = m0[j] + m1[j] + m2[j];
      s1[j] = m1[j] - m2[j] - m3[j];
    }
  }
  for (int r = 0; r < 2; r++) {
    float* yr = r == 0 ? y0 : y1;
    if (!yr) break;
    const float* q0 = s + (r * 4 + 0) * nt;
    const float* q1 = s + (r * 4 + 1) * nt;
    const float* q2 = s + (r * 4 + 2) * nt;
    const float* q3 = s + (r * 4 + 3) * nt;
#pragma GCC ivdep
    for (int j = 0; j < full; j++) {
      yr[2 * j] = q0[j] + q1[j] + q2[j] + b;
      yr[2 * j + 1] = q1[j] - q2[j] - q3[j] + b;
    }
    if (full < n) yr[2 * full] = q0[full] + q1[full] + q2[full] + b;
  }
}


// ---- F(4x4, 3x3): 6x6 input tiles, 36 products per 16 outputs (vs 16 per 4) ----
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
RARGEN_CLONES void row_transform4(const float* __restrict__ p, float* __restrict__ e, int n, int nt) {
#pragma GCC ivdep
  for (int j = 0; j < n; j++) {
    const float* a = p + 4 * j;
    float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
    e[0 * nt + j] = 4.f * a0 - 5.f * a2 + a4;
    e[1 * nt + j] = -4.f * (a1 + a2) + (a3 + a4);
    e[2 * nt + j] = 4.f * (a1 - a2) + (a4 - a3);
    e[3 * nt + j] = 2.f * (a3 - a1) + (a4 - a2);
    e[4 * nt + j] = 2.f * (a1 - a3) + (a4 - a2);
    e[5 * nt + j] = 4.f * a1 - 5.f * a3 + a5;
  }
}

RARGEN_CLONES void col_transform4(const float* __restrict__ E, float* __restrict__ v, int64_t vs, int n, int nt) {
  for (int c = 0; c < 6; c++) {
    const float* e0 = E + (0 * 6 + c) * nt;
    const float* e1 = E + (1 * 6 + c) * nt;
    const float* e2 = E + (2 * 6 + c) * nt;
    const float* e3 = E + (3 * 6 + c) * nt;
    const float* e4 = E + (4 * 6 + c) * nt;
    const float* e5 = E + (5 * 6 + c) * nt;
    float* v0 = v + (0 + c) * vs;
    float* v1 = v + (6 + c) * vs;
    float* v2 = v + (12 + c) * vs;
    float* v3 = v + (18 + c) * vs;
    float* v4 = v + (24 + c) * vs;
    float* v5 = v + (30 + c) * vs;
#pragma GCC ivdep
    for (int j = 0; j < n; j++) {
      float a0 = e0[j], a1 = e1[j], a2 = e2[j], a3 = e3[j], a4 = e4[j], a5 = e5[j];
      v0[j] = 4.f * a0 - 5.f * a2 + a4;
      v1[j] = -4.f * (a1 + a2) + (a3 + a4);
      v2[j] = 4.f * (a1 - a2) + (a4 - a3);
      v3[j] = 2.f * (a3 - a1) + (a4 - a2);
      v4[j] = 2.f * (a1 - a3) + (a4 - a2);
      v5[j] = 4.f * a1 - 5.f * a3 + a5;
    }
  }
}

// Output tiles of one channel (4 rows y[0..3], null past the image), + bias (+ residual
// rows r[0..3] at the same positions). s: scratch (4 * 6 * nt).
RARGEN_CLONES void output_transform4(const float* m, int64_t ms, float* s, float* const* y, const float* const* res,
                                     float b, int n, int nt, int wlast) {
  for (int c = 0; c < 6; c++) {
    const float* m0 = m + (0 + c) * ms;
    const float* m1 = m + (6 + c) * ms;
    const float* m2 = m + (12 + c) * ms;
    const float* m3 = m + (18 + c) * ms;
    const float* m4 = m + (24 + c) * ms;
    const float* m5 = m + (30 + c) * ms;
    float* s0 = s + (0 * 6 + c) * nt;
    float* s1 = s + (1 * 6 + c) * nt;
    float* s2 = s + (2 * 6 + c) * nt;
    float* s3 = s + (3 * 6 + c) * nt;
#pragma GCC ivdep
    for (int j = 0; j < n; j++) {
      float p12 = m1[j] + m2[j], d12 = m1[j] - m2[j], p34 = m3[j] + m4[j], d34 = m3[j] - m4[j];
      s0[j] = m0[j] + p12 + p34;
      s1[j] = d12 + 2.f * d34;
      s2[j] = p12 + 4.f * p34;
      s3[j] = d12 + 8.f * d34 + m5[j];
    }
  }
  const int full = wlast == 4 ? n : n - 1;
  for (int r = 0; r < 4; r++) {
    float* yr = y[r];
    if (!yr) break;
    const float* rr = res ? res[r] : nullptr;
    const float* q0 = s + (r * 6 + 0) * nt;
    const float* q1 = s + (r * 6 + 1) * nt;
    const float* q2 = s + (r * 6 + 2) * nt;
    const float* q3 = s + (r * 6 + 3) * nt;
    const float* q4 = s + (r * 6 + 4) * nt;
    const float* q5 = s + (r * 6 + 5) * nt;
    if (rr) {
#pragma GCC ivdep
      for (int j = 0; j < full; j++) {
        float p12 = q1[j] + q2[j], d12 = q1[j] - q2[j], p34 = q3[j] + q4[j], d34 = q3[j] - q4[j];
        yr[4 * j] = (q0[j] + p12 + p34 + b) + rr[4 * j];
        yr[4 * j + 1] = (d12 + 2.f * d34 + b) + rr[4 * j + 1];
        yr[4 * j + 2] = (p12 + 4.f * p34 + b) + rr[4 * j + 2];
        yr[4 * j + 3] = (d12 + 8.f * d34 + q5[j] + b) + rr[4 * j + 3];
      }
    } else {
#pragma GCC ivdep
      for (int j = 0; j < full; j++) {
        float p12 = q1[j] + q2[j], d12 = q1[j] - q2[j], p34 = q3[j] + q4[j], d34 = q3[j] - q4[j];
        yr[4 * j] = q0[j] + p12 + p34 + b;
        yr[4 * j + 1] = d12 + 2.f * d34 + b;
        yr[4 * j + 2] = p12 + 4.f * p34 + b;
        yr[4 * j + 3] = d12 + 8.f * d34 + q5[j] + b;
      }
    }
    if (full < n) {
      int j = full;
      float p12 = q1[j] + q2[j], d12 = q1[j] - q2[j], p34 = q3[j] + q4[j], d34 = q3[j] - q4[j];
      float o[4] = {q0[j] + p12 + p34 + b, d12 + 2.f * d34 + b, p12 + 4.f * p34 + b, d12 + 8.f * d34 + q5[j] + b};
      for (int c = 0; c < wlast; c++) yr[4 * j + c] = o[c] + (rr ? rr[4 * j + c] : 0.f);
    }
  }
}


}  // namespace

// U[xi] (Cout, Cin) pre-packed once into the micro-kernel's A-panel layout, so the
// GEMMs of every tile block skip packing A.
struct PackAPrepacked : PackA {
  const float* base;  // for k block k0: panels of rows at base + Mpad * k0 + m0 * kc
  int64_t Mpad;
  PackAPrepacked(const float* b, int64_t mpad) : base(b), Mpad(mpad) {}
  void pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const override {
    std::copy(direct(m0, mc, k0, kc), direct(m0, mc, k0, kc) + static_cast<int64_t>((mc + kMR - 1) / kMR) * kMR * kc, dst);
  }
  const float* direct(int64_t m0, int, int64_t k0, int kc) const override { return base + Mpad * k0 + m0 * kc; }
};

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : 0;
}

// One filter row: U[(r*a + c) * Cin + ci] = (G g_ci G^T)[r][c] for a = m + 2, from gT
// (9, Cin) (the 3x3 taps of every input channel, transposed); vectorised over ci.
RARGEN_CLONES void filter_row_transform(const float* __restrict__ gT, float* __restrict__ U, float* __restrict__ t,
                                        int Cin, int m) {
  static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static const float G4[6][3] = {{0.25f, 0, 0},
                                 {-1.f / 6, -1.f / 6, -1.f / 6},
                                 {-1.f / 6, 1.f / 6, -1.f / 6},
                                 {1.f / 24, 1.f / 12, 1.f / 6},
                                 {1.f / 24, -1.f / 12, 1.f / 6},
                                 {0, 0, 1}};
  const int a = m + 2;
  const float(*G)[3] = m == 2 ? G2 : G4;
  for (int r = 0; r < a; r++) {
    const float gr0 = G[r][0], gr1 = G[r][1], gr2 = G[r][2];
    // t_k[ci] = (G g_ci)[r][k] for the three columns k
    for (int k = 0; k < 3; k++)
#pragma GCC ivdep
      for (int ci = 0; ci < Cin; ci++)
        t[k * Cin + ci] = gr0 * gT[k * Cin + ci] + gr1 * gT[(3 + k) * Cin + ci] + gr2 * gT[(6 + k) * Cin + ci];
    for (int c = 0; c < a; c++) {
      const float gc0 = G[c][0], gc1 = G[c][1], gc2 = G[c][2];
      float* u = U + static_cast<int64_t>(r * a + c) * Cin;
#pragma GCC ivdep
      for (int ci = 0; ci < Cin; ci++) u[ci] = t[ci] * gc0 + t[Cin + ci] * gc1 + t[2 * Cin + ci] * gc2;
    }
  }
}

// Up (a*a, packed Mpad x Cin) = G g G^T for every (co, ci), written straight into the
// A-panel layout of PackAPrepacked (rows past Cout zero). One panel of kMR output
// channels at a time, so each of the a*a planes (a multiple of 1 MiB apart for the big
// layers: cache-set conflicts) is written as one sequential run.
void transform_filters_packed(float* Up, const void* W, DType dt, int Cout, int Cin, int m, int64_t Mpad) {
  const int a = m + 2, a2 = a * a;
  const int64_t xs = Mpad * Cin, us = static_cast<int64_t>(a2) * Cin;
  const int64_t panels = (Cout + kMR - 1) / kMR;
  global_pool().parallel_for(panels, 1, [&](int64_t s, int64_t e) {
    std::vector<float> g(static_cast<size_t>(Cin) * 9), gT(static_cast<size_t>(Cin) * 9), U(kMR * us), t(3 * static_cast<size_t>(Cin));
    for (int64_t p = s; p < e; p++) {
      for (int pi = 0; pi < kMR; pi++) {
        const int64_t co = p * kMR + pi;
        if (co >= Cout) {
          std::fill(U.data() + pi * us, U.data() + (pi + 1) * us, 0.f);
          continue;
        }
        convert_to_f32(g.data(), static_cast<const char*>(W) + co * Cin * 9 * static_cast<int64_t>(dtype_size(dt)), dt,
                       static_cast<int64_t>(Cin) * 9);
        for (int ci = 0; ci < Cin; ci++)
          for (int k = 0; k < 9; k++) gT[k * Cin + ci] = g[ci * 9 + k];
        filter_row_transform(gT.data(), U.data() + pi * us, t.data(), Cin, m);
      }
      for (int xi = 0; xi < a2; xi++) {
        for (int64_t k0 = 0; k0 < Cin; k0 += kGemmKC) {
          const int kc = static_cast<int>(std::min<int64_t>(kGemmKC, Cin - k0));
          float* dst = Up + xi * xs + Mpad * k0 + p * kMR * kc;
          const float* u = U.data() + static_cast<int64_t>(xi) * Cin + k0;
          for (int k = 0; k < kc; k++)
            for (int pi = 0; pi < kMR; pi++) dst[k * kMR + pi] = u[pi * us + k];
        }
      }
    }
  });
}

}  // namespace

void winograd_conv3x3_ex(float* out, const float* inp, const void* W, DType dt, const float* bias, int Cin, int H,
                         int Wd, int Cout, const WinoFuse& f) {
  static const int env_tile = env_int("RARGEN_WINOGRAD_TILE"), env_nt = env_int("RARGEN_WINOGRAD_NT");
  static const bool prof = env_int("RARGEN_WINOGRAD_PROFILE") != 0;  // per-call phase times on stderr
  const double t_start = prof ? now_s() : 0;
  double t_in = 0, t_gemm = 0, t_out = 0;
  std::mutex prof_mu;
  int m = f.tile ? f.tile : env_tile;
  // F(4x4) from 32x32 up: 1.78x fewer GEMM FLOPs than F(2x2), for 2.25x the filter
  // transform (per call) and larger input-transform coefficients (error ~3x F(2x2)'s,
  // still ~1e-5 of the output scale); below that the filter transform dominates.
  if (m != 2 && m != 4) m = (H >= 8 && Wd >= 8 && static_cast<int64_t>(H) * Wd >= 1024) ? 4 : 2;
  const int a = m + 2, a2 = a * a;
  const int Hs = f.up2x ? H / 2 : H, Ws = f.up2x ? Wd / 2 : Wd;  // source (input) size
  const int th = (H + m - 1) / m, tw = (Wd + m - 1) / m;
  const int64_t Mpad = (Cout + kMR - 1) / kMR * kMR;
  // Transformed filters: one process-wide buffer, grown to the largest layer and reused
  // (a fresh 38 MB allocation per 512-channel F(4x4) layer costs ~5 ms in page faults);
  // concurrent convolutions take turns (they share the pool's threads anyway).
  static std::mutex up_mu;
  static std::vector<float> up_buf;
  std::lock_guard<std::mutex> up_lock(up_mu);
  if (up_buf.size() < static_cast<size_t>(a2) * Mpad * Cin) up_buf.resize(static_cast<size_t>(a2) * Mpad * Cin);
  float* const Up = up_buf.data();
  transform_filters_packed(Up, W, dt, Cout, Cin, m, Mpad);
  const double t_filt = prof ? now_s() : 0;

  // Tiles per block: V and M of a block ~1.5 MiB.
  int nt = env_nt ? env_nt : static_cast<int>((3 << 19) / (4 * a2 * (Cin + Cout)));
  nt = std::min(std::max(nt / kNR * kNR, kNR), 256);
  nt = static_cast<int>(std::min<int64_t>(nt, (static_cast<int64_t>(th) * tw + kNR - 1) / kNR * kNR));
  // Blocks: nt consecutive tiles in raster order (a block may span rows of tiles, so
  // small images still fill the GEMMs' N); each block is a few runs ("segments") of
  // tiles within one row of tiles.
  const int64_t ntiles = static_cast<int64_t>(th) * tw;
  const int64_t nblocks = (ntiles + nt - 1) / nt;

  global_pool().run(nblocks, [&](int64_t blk, int) {
    thread_local std::vector<float> V, M, E, P, Q, T;
    V.resize(static_cast<size_t>(a2) * Cin * nt);
    M.resize(static_cast<size_t>(a2) * Cout * nt);
    E.resize(static_cast<size_t>(a2) * nt);
    P.resize(static_cast<size_t>(m) * nt + 2);
    Q.resize(static_cast<size_t>(m) * nt + 2);
    T.resize(2 * static_cast<size_t>(nt) * 2);
    const int64_t t0 = blk * nt;
    const int nb = static_cast<int>(std::min<int64_t>(nt, ntiles - t0));  // tiles in this block
    const int64_t vs = static_cast<int64_t>(Cin) * nt;
    const double p0 = prof ? now_s() : 0;
    for (int j0 = 0; j0 < nb;) {  // input transform, per segment
      const int ty = static_cast<int>((t0 + j0) / tw), tx0 = static_cast<int>((t0 + j0) % tw);
      const int n = std::min(nb - j0, tw - tx0);
      const int np = m * n + 2;  // padded window columns m*tx0-1 .. m*(tx0+n)
      const int xlo = m * tx0 - 1;
      // Columns the window touches (clamped to the image), and their source columns.
      const int clo = std::max(xlo, 0), chi = std::min(xlo + np, Wd);
      const int slo = f.up2x ? clo / 2 : clo, shi = f.up2x ? (chi + 1) / 2 : chi;
      for (int ci = 0; ci < Cin; ci++) {
        const float* x = inp + static_cast<int64_t>(ci) * Hs * Ws;
        const float sc = f.scale ? f.scale[ci] : 1.f, sh = f.scale ? f.shift[ci] : 0.f;
        for (int r = 0; r < a; r++) {
          const int y = m * ty - 1 + r;
          float* e = E.data() + r * a * nt;  // e[c * nt + j]
          if (y < 0 || y >= H) {
            for (int c = 0; c < a; c++) std::fill(e + c * nt, e + c * nt + n, 0.f);
            continue;
          }
          const float* row = x + static_cast<int64_t>(f.up2x ? y / 2 : y) * Ws;
          if (f.scale) {  // GroupNorm affine (+ SiLU) of the source segment, before the zero padding
            affine_silu(Q.data(), row + slo, shi - slo, sc, sh, f.silu);
            row = Q.data() - slo;
          }
          float* p = P.data();
          for (int k = 0; k < clo - xlo; k++) p[k] = 0.f;
          if (f.up2x) {
            for (int xx = clo; xx < chi; xx++) p[xx - xlo] = row[xx >> 1];
          } else {
            std::copy(row + clo, row + chi, p + (clo - xlo));
          }
          for (int k = chi - xlo; k < np; k++) p[k] = 0.f;
          if (m == 2) row_transform(p, e, n, nt);
          else row_transform4(p, e, n, nt);
        }
        float* v = V.data() + static_cast<int64_t>(ci) * nt + j0;
        if (m == 2) col_transform(E.data(), v, vs, n, nt);
        else col_transform4(E.data(), v, vs, n, nt);
      }
      j0 += n;
    }
    const double p1 = prof ? now_s() : 0;
    // a*a GEMMs: M[xi] (Cout, nb) = U[xi] (Cout, Cin) V[xi] (Cin, nb). Inline: we are a pool task.
    for (int xi = 0; xi < a2; xi++) {
      PackAPrepacked pa(Up + xi * Mpad * Cin, Mpad);
      PackBRowMajor pb(V.data() + static_cast<int64_t>(xi) * vs, nb, nt);
      gemm(M.data() + static_cast<int64_t>(xi) * Cout * nt, nt, Cout, nb, Cin, pa, pb, nullptr, nullptr, false);
    }
    const double p2 = prof ? now_s() : 0;
    // Output transform (A^T m A), bias and residual, vectorised over the tiles.
    const int64_t ms = static_cast<int64_t>(Cout) * nt;
    float* s = E.data();
    for (int j0 = 0; j0 < nb;) {
      const int ty = static_cast<int>((t0 + j0) / tw), tx0 = static_cast<int>((t0 + j0) % tw);
      const int n = std::min(nb - j0, tw - tx0);
      const int wlast = std::min(m, Wd - m * (tx0 + n - 1));  // columns of the last tile
      const int width = m * (n - 1) + wlast;
      for (int co = 0; co < Cout; co++) {
        const float b = bias ? bias[co] : 0.f;
        float* y[4];
        const float* rr[4];
        for (int r = 0; r < m; r++) {
          const int64_t off = (static_cast<int64_t>(co) * H + m * ty + r) * Wd + m * tx0;
          y[r] = m * ty + r < H ? out + off : nullptr;
          rr[r] = f.residual && y[r] ? f.residual + off : nullptr;
        }
        const float* mco = M.data() + static_cast<int64_t>(co) * nt + j0;
        if (m == 4) {
          output_transform4(mco, ms, s, y, f.residual ? rr : nullptr, b, n, nt, wlast);
        } else if (!f.residual) {
          output_transform(mco, ms, s, y[0], y[1], b, n, nt, wlast == 2 ? n : n - 1);
        } else {  // via T so that out may alias the residual
          float* o0 = T.data();
          float* o1 = y[1] ? T.data() + 2 * nt : nullptr;
          output_transform(mco, ms, s, o0, o1, b, n, nt, wlast == 2 ? n : n - 1);
          for (int r = 0; r < 2 && y[r]; r++) {
            const float* t = r ? o1 : o0;
            for (int i = 0; i < width; i++) y[r][i] = t[i] + rr[r][i];
          }
        }
      }
      j0 += n;
    }
    if (prof) {
      const double p3 = now_s();
      std::lock_guard<std::mutex> lock(prof_mu);
      t_in += p1 - p0, t_gemm += p2 - p1, t_out += p3 - p2;
    }
  });
  if (prof)
    std::fprintf(stderr, "winograd F(%dx%d) %dx%d %d->%d nt %d: %.2f ms (filters %.2f; thread sums: input %.2f gemm %.2f output %.2f)\n",
                 m, m, H, Wd, Cin, Cout, nt, (now_s() - t_start) * 1e3, (t_filt - t_start) * 1e3, t_in * 1e3, t_gemm * 1e3,
                 t_out * 1e3);
}

void winograd_conv3x3(float* out, const float* inp, const void* W, DType dt, const float* bias, int Cin, int H,
                      int Wd, int Cout) {
  winograd_conv3x3_ex(out, inp, W, dt, bias, Cin, H, Wd, Cout, WinoFuse());
}

}  // namespace cpu
}  // namespace rargen
