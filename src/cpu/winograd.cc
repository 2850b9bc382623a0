// 3x3 stride-1 pad-1 convolution by Winograd F(2x2, 3x3) (Lavin & Gray, 2015): each
// 2x2 output tile costs 16 multiplies per (cin, cout) pair instead of 36, so the
// VQGAN decoder's convolutions (all 3x3, 32..512 channels) do 2.25x fewer FLOPs.
// The 16 element-wise products over channels are 16 small GEMMs on the packed SGEMM
// (kernels.h). Tiles are processed in blocks sized so that a block's transformed
// input V (16, Cin, nt) and products M (16, Cout, nt) stay in cache; blocks run in
// parallel, one per thread. The transforms have coefficients 0, +-1, +-1/2, so the
// rounding is that of a direct convolution (checked in rargen_optest).
//
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   (input  d -> B^T d B)
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] (filter g -> G g G^T)
//   A^T = [1 1 1 0; 0 1 -1 -1]                      (output m -> A^T m A)
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace cpu {

namespace {

// U (16, Cout, Cin) from W (Cout, Cin, 3, 3).
void transform_filters(float* U, const void* W, DType dt, int Cout, int Cin) {
  global_pool().parallel_for(static_cast<int64_t>(Cout) * Cin, 256, [&](int64_t s, int64_t e) {
    float g[9];
    const int64_t plane = static_cast<int64_t>(Cout) * Cin;
    for (int64_t i = s; i < e; i++) {  // i = co * Cin + ci
      convert_to_f32(g, static_cast<const char*>(W) + i * 9 * static_cast<int64_t>(dtype_size(dt)), dt, 9);
      float t[4][3];  // G g
      for (int c = 0; c < 3; c++) {
        float a = g[c], b = g[3 + c], d = g[6 + c];
        t[0][c] = a;
        t[1][c] = 0.5f * (a + b + d);
        t[2][c] = 0.5f * (a - b + d);
        t[3][c] = d;
      }
      for (int r = 0; r < 4; r++) {  // (G g) G^T
        float a = t[r][0], b = t[r][1], d = t[r][2];
        U[(r * 4 + 0) * plane + i] = a;
        U[(r * 4 + 1) * plane + i] = 0.5f * (a + b + d);
        U[(r * 4 + 2) * plane + i] = 0.5f * (a - b + d);
        U[(r * 4 + 3) * plane + i] = d;
      }
    }
  });
}


// The transforms are plain loops over the tiles of a block; on x86-64 Linux they are
// compiled twice (AVX2 and baseline) and picked at load time (GCC target_clones).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define RARGEN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RARGEN_CLONES
#endif

// One input row: e_c[j] = (d B)_c for the 4-wide window at 2j of the padded row p.
RARGEN_CLONES void row_transform(const float* p, float* e, int n, int nt) {
  for (int j = 0; j < n; j++) {
    float a0 = p[2 * j], a1 = p[2 * j + 1], a2 = p[2 * j + 2], a3 = p[2 * j + 3];
    e[0 * nt + j] = a0 - a2;
    e[1 * nt + j] = a1 + a2;
    e[2 * nt + j] = a2 - a1;
    e[3 * nt + j] = a1 - a3;
  }
}

// Across the 4 rows: V[(r*4+c)] = (B^T e)_r for each column transform c.
RARGEN_CLONES void col_transform(const float* E, float* v, int64_t vs, int n, int nt) {
  for (int c = 0; c < 4; c++) {
    const float* e0 = E + (0 * 4 + c) * nt;
    const float* e1 = E + (1 * 4 + c) * nt;
    const float* e2 = E + (2 * 4 + c) * nt;
    const float* e3 = E + (3 * 4 + c) * nt;
    float* v0 = v + (0 + c) * vs;
    float* v1 = v + (4 + c) * vs;
    float* v2 = v + (8 + c) * vs;
    float* v3 = v + (12 + c) * vs;
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
    for (int j = 0; j < full; j++) {
      yr[2 * j] = q0[j] + q1[j] + q2[j] + b;
      yr[2 * j + 1] = q1[j] - q2[j] - q3[j] + b;
    }
    if (full < n) yr[2 * full] = q0[full] + q1[full] + q2[full] + b;
  }
}

}  // namespace

// U[xi] (Cout, Cin) pre-packed once into the micro-kernel's A-panel layout, so the
// 16 GEMMs of every tile block skip packing A.
struct PackAPrepacked : PackA {
  const float* base;  // for k block k0: panels of rows at base + Mpad * k0 + m0 * kc
  int64_t Mpad;
  PackAPrepacked(const float* b, int64_t mpad) : base(b), Mpad(mpad) {}
  void pack(float* dst, int64_t m0, int mc, int64_t k0, int kc) const override {
    std::copy(direct(m0, mc, k0, kc), direct(m0, mc, k0, kc) + static_cast<int64_t>((mc + kMR - 1) / kMR) * kMR * kc, dst);
  }
  const float* direct(int64_t m0, int, int64_t k0, int kc) const override { return base + Mpad * k0 + m0 * kc; }
};

void winograd_conv3x3(float* out, const float* inp, const void* W, DType dt, const float* bias, int Cin, int H,
                      int Wd, int Cout) {
  const int th = (H + 1) / 2, tw = (Wd + 1) / 2;
  const int64_t plane = static_cast<int64_t>(Cout) * Cin;
  std::vector<float> U(16 * plane);
  transform_filters(U.data(), W, dt, Cout, Cin);
  // Pre-pack each U[xi] as GEMM A panels (all k blocks).
  const int64_t Mpad = (Cout + kMR - 1) / kMR * kMR;
  std::vector<float> Up(16 * Mpad * static_cast<int64_t>(Cin));
  global_pool().run(16, [&](int64_t xi, int) {
    PackARowMajor pa(U.data() + xi * plane, DType::F32, Cin, Cout);
    float* dst = Up.data() + xi * Mpad * Cin;
    for (int64_t k0 = 0; k0 < Cin; k0 += kGemmKC) {
      int kc = static_cast<int>(std::min<int64_t>(kGemmKC, Cin - k0));
      pa.pack(dst + Mpad * k0, 0, static_cast<int>(Mpad), k0, kc);
    }
  });

  // Blocks: a run of nt tiles within one row of tiles; V and M of a block ~1 MiB.
  int nt = static_cast<int>(16384 / (Cin + Cout));
  nt = std::min(std::max(nt / kNR * kNR, kNR), 256);
  nt = std::min(nt, (tw + kNR - 1) / kNR * kNR);
  const int chunks = (tw + nt - 1) / nt;

  global_pool().run(static_cast<int64_t>(th) * chunks, [&](int64_t blk, int) {
    thread_local std::vector<float> V, M, E, P;
    V.resize(16 * static_cast<size_t>(Cin) * nt);
    M.resize(16 * static_cast<size_t>(Cout) * nt);
    E.resize(16 * static_cast<size_t>(nt));
    P.resize(2 * static_cast<size_t>(nt) + 2);
    const int ty = static_cast<int>(blk / chunks);
    const int tx0 = static_cast<int>(blk % chunks) * nt;
    const int n = std::min(nt, tw - tx0);
    const int64_t vs = static_cast<int64_t>(Cin) * nt;
    // Input transform. Per input row: e_c = (d B) columns; then across the 4 rows: B^T.
    for (int ci = 0; ci < Cin; ci++) {
      const float* x = inp + static_cast<int64_t>(ci) * H * Wd;
      for (int r = 0; r < 4; r++) {
        const int y = 2 * ty - 1 + r;
        float* e = E.data() + r * 4 * nt;  // e[c * nt + j]
        if (y < 0 || y >= H) {
          std::fill(e, e + 4 * nt, 0.f);
          continue;
        }
        // Padded copy of input columns 2*tx0-1 .. 2*(tx0+n)+1.
        float* p = P.data();
        const float* row = x + static_cast<int64_t>(y) * Wd;
        for (int k = 0; k < 2 * n + 2; k++) {
          int xx = 2 * tx0 - 1 + k;
          p[k] = (xx >= 0 && xx < Wd) ? row[xx] : 0.f;
        }
        row_transform(p, e, n, nt);
      }
      col_transform(E.data(), V.data() + static_cast<int64_t>(ci) * nt, vs, n, nt);
    }
    // 16 GEMMs: M[xi] (Cout, n) = U[xi] (Cout, Cin) V[xi] (Cin, n). Inline: we are a pool task.
    for (int xi = 0; xi < 16; xi++) {
      PackAPrepacked pa(Up.data() + xi * Mpad * Cin, Mpad);
      PackBRowMajor pb(V.data() + static_cast<int64_t>(xi) * vs, n, nt);
      gemm(M.data() + static_cast<int64_t>(xi) * Cout * nt, nt, Cout, n, Cin, pa, pb, nullptr, nullptr, false);
    }
    // Output transform (A^T m A) and bias, vectorised over the tiles.
    const int64_t ms = static_cast<int64_t>(Cout) * nt;
    float* s = E.data();  // s[(r * 4 + c) * nt + j], r < 2
    const int full = (2 * (tx0 + n) <= Wd) ? n : n - 1;  // the last tile may have one column
    for (int co = 0; co < Cout; co++) {
      float* y0 = out + (static_cast<int64_t>(co) * H + 2 * ty) * Wd + 2 * tx0;
      float* y1 = 2 * ty + 1 < H ? y0 + Wd : nullptr;
      output_transform(M.data() + static_cast<int64_t>(co) * nt, ms, s, y0, y1, bias ? bias[co] : 0.f, n, nt, full);
    }
  });
}

}  // namespace cpu
}  // namespace rargen
