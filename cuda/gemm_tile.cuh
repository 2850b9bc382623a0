// The project's own GEMM kernels, written once and used two ways: by matmul.cu for
// linear() when cuBLASLt cannot be loaded, and by conv.cu as an implicit GEMM (the
// im2col matrix is gathered on the fly, never stored). A "problem" struct supplies
//   M, N, K                            C (M,N) = A (M,K) B (K,N)
//   load_a8(m, k0, v[8])               A(m, k0..k0+7) as floats, zero outside
//   load_b8(n, k0, v[8])               B(k0..k0+7, n) as floats, zero outside
//   store(m, n, acc)                   epilogue (bias, accumulate, NCHW scatter...)
//   kAMFast / kOutMFast                whether consecutive m are contiguous in memory
//                                      for A loads / for output stores (coalescing)
//   kBNFast                            whether consecutive n are contiguous for B loads
//                                      (false: B(k, n) = w[n*K + k], a linear weight)
//   kps                                k-tiles per split (split-K, see k_range)
// Two kernels:
// - tc_gemm_kernel<TC>: tensor cores through WMMA (bf16 or f16 16x16x16 fragments,
//   fp32 accumulation), 128x128x32 block tile, 8 warps of 64x32, the next k-tile
//   loaded into registers while the current one is multiplied. Operands are
//   converted to TC when stored to shared memory, so fp32 activations work as-is.
// - simt_gemm_kernel: exact fp32 (F32 weights; the training linear_backward's dinp
//   and dW products), 64x64x32 tile, 4x4 per thread, each output summed by one thread
//   in k order (deterministic).
// WMMA is chosen over hand-written mma.sync/wgmma for being simple to get right; it
// is the fallback path for linear (cuBLASLt is the fast one) and the conv path.
#pragma once
#include <mma.h>

#include "common.cuh"

namespace rargen {
namespace cuda {

constexpr int kTcBM = 128, kTcBN = 128, kTcBK = 32, kTcThreads = 256;
constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 32, kSimtThreads = 256;
constexpr int kNoSplit = 1 << 30;

// Split-K: a problem with kps ("k-tiles per split") < all its k-tiles is launched with
// gridDim.z splits; block z multiplies k-tiles [z*kps, min((z+1)*kps, all)) and its
// store() puts the partial product where a reduction kernel finds it. Problems that
// do not split set kps = kNoSplit and launch gridDim.z = 1.
template <class Prob>
__device__ __forceinline__ void k_range(const Prob& p, int BK, int& begin, int& end) {
  const int all = static_cast<int>((p.K + BK - 1) / BK);
  begin = static_cast<int>(blockIdx.z) * p.kps;
  end = all - begin > p.kps ? begin + p.kps : all;
}

// Unit u of a tile (one thread loads 8 consecutive k of one row/column) -> (row, k-group).
template <bool kMFast, int ROWS>
__device__ __forceinline__ void unit_coords(int u, int& row, int& kg) {
  if (kMFast) {
    row = u % ROWS;
    kg = u / ROWS;
  } else {
    row = u >> 2;  // BK/8 = 4 k-groups per row
    kg = u & 3;
  }
}

template <typename TC>
__device__ __forceinline__ void store8(TC* dst, const float v[8]) {
  __align__(16) TC t[8];
#pragma unroll
  for (int e = 0; e < 8; e++) t[e] = from_float<TC>(v[e]);
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(t);
}

// The WMMA kernels' shared pieces (128x128 block tile, 8 warps of 64x32, 256 threads):
// tc_load_tile reads the k-tile at k0 into registers (2 units of A and of B per thread);
// tc_store_acc hands a warp's 4x2 accumulator fragments to p.store, staging one 16x16
// fragment at a time in the warp's 256 floats of shared memory so the stores go out
// in coalesced order.
template <class Prob>
__device__ __forceinline__ void tc_load_tile(const Prob& p, int64_t m0, int n0, int k0, float ra[2][8],
                                             float rb[2][8]) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    int row, kg;
    unit_coords<Prob::kAMFast, kTcBM>(tid + i * kTcThreads, row, kg);
    p.load_a8(m0 + row, k0 + kg * 8, ra[i]);
    unit_coords<Prob::kBNFast, kTcBN>(tid + i * kTcThreads, row, kg);
    p.load_b8(n0 + row, k0 + kg * 8, rb[i]);
  }
}

template <class Prob, class Frag>
__device__ __forceinline__ void tc_store_acc(const Prob& p, Frag (&acc)[4][2], float* stage, int64_t m0, int n0,
                                             int wm, int wn, int lane) {
  using namespace nvcuda;
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      wmma::store_matrix_sync(stage, acc[i][j], 16, Prob::kOutMFast ? wmma::mem_col_major : wmma::mem_row_major);
      __syncwarp();
#pragma unroll
      for (int e = 0; e < 8; e++) {
        int idx = lane + 32 * e;
        int mm = Prob::kOutMFast ? (idx & 15) : (idx >> 4);
        int nn = Prob::kOutMFast ? (idx >> 4) : (idx & 15);
        int64_t m = m0 + wm * 64 + i * 16 + mm;
        int n = n0 + wn * 32 + j * 16 + nn;
        if (m < p.M && n < p.N) p.store(m, n, stage[idx]);
      }
      __syncwarp();
    }
  }
}

template <class Frag>
__device__ __forceinline__ void tc_zero_acc(Frag (&acc)[4][2]) {
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) nvcuda::wmma::fill_fragment(acc[i][j], 0.f);
}

// The k loop of the WMMA kernels over this block's k-tiles (k_range): the next tile is
// loaded into registers (load_tile) while the current one in shared memory is
// multiplied (mma_tile), then stored (store_tile) once every warp is done reading.
template <class Prob, class Load, class Store, class Mma>
__device__ __forceinline__ void tc_k_loop(const Prob& p, Load& load_tile, Store& store_tile, Mma mma_tile) {
  int kt_begin, ktiles;
  k_range(p, kTcBK, kt_begin, ktiles);
  load_tile(kt_begin * kTcBK);
  store_tile();
  __syncthreads();
  for (int kt = kt_begin; kt < ktiles; kt++) {
    if (kt + 1 < ktiles) load_tile((kt + 1) * kTcBK);  // global loads in flight during the MMAs
    mma_tile();
    __syncthreads();  // everyone is done reading this tile
    if (kt + 1 < ktiles) {
      store_tile();
      __syncthreads();
    }
  }
}

template <typename TC, class Prob>
__global__ void __launch_bounds__(kTcThreads) tc_gemm_kernel(const Prob p) {
  using namespace nvcuda;
  constexpr int BM = kTcBM, BN = kTcBN, BK = kTcBK, LDS = BK + 8;  // 40 elements = 80 bytes per row
  static_assert(BM * BK / 8 == 2 * kTcThreads && BN * BK / 8 == 2 * kTcThreads, "2 units per thread");
  // As [BM][LDS] holds A(m, k); Bs [BN][LDS] holds B(k, n) at [n][k] (col-major B for WMMA).
  __shared__ __align__(128) unsigned char smem[2 * BM * LDS * sizeof(TC)];
  TC* As = reinterpret_cast<TC*>(smem);
  TC* Bs = As + BM * LDS;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2;  // 2 warps along m, 64 rows each
  const int wn = warp & 3;   // 4 warps along n, 32 columns each
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;

  float ra[2][8], rb[2][8];
  auto load_tile = [&](int k0) { tc_load_tile(p, m0, n0, k0, ra, rb); };
  auto store_tile = [&]() {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      int row, kg;
      unit_coords<Prob::kAMFast, BM>(tid + i * kTcThreads, row, kg);
      store8<TC>(As + row * LDS + kg * 8, ra[i]);
      unit_coords<Prob::kBNFast, BN>(tid + i * kTcThreads, row, kg);
      store8<TC>(Bs + row * LDS + kg * 8, rb[i]);
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
  tc_zero_acc(acc);
  tc_k_loop(p, load_tile, store_tile, [&]() {
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, TC, wmma::row_major> fa[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, TC, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 4; i++) wmma::load_matrix_sync(fa[i], As + (wm * 64 + i * 16) * LDS + kk, LDS);
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], Bs + (wn * 32 + j * 16) * LDS + kk, LDS);
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  });

  // Epilogue: each warp stages its fragments in its own 1 KiB of the (now free) shared memory.
  static_assert(8 * 256 * sizeof(float) <= sizeof(smem), "staging fits");
  tc_store_acc(p, acc, reinterpret_cast<float*>(smem) + warp * 256, m0, n0, wm, wn, lane);
}

// fp32 GEMM on TF32 tensor cores with the 3xTF32 split: x = hi + lo with hi = tf32(x),
// lo = tf32(x - hi), and a*b ~= hi_a*hi_b + hi_a*lo_b + lo_a*hi_b (the lo*lo term,
// ~2^-22 relative, is dropped). Accuracy is that of fp32 (a few ulps per product,
// fp32 accumulation) at tensor-core speed; used for F32-weight convolutions. Same
// tile shape, loaders and epilogue as tc_gemm_kernel; operands stay fp32 in shared
// memory (128 x 36 floats each, 36 KiB).
template <class Prob>
__global__ void __launch_bounds__(kTcThreads) tf32x3_gemm_kernel(const Prob p) {
  using namespace nvcuda;
  constexpr int BM = kTcBM, BN = kTcBN, BK = kTcBK, LDS = BK + 4;  // 36 floats = 144 bytes per row
  __shared__ __align__(128) float smem[2 * BM * LDS];
  float* As = smem;            // [BM][LDS] A(m, k)
  float* Bs = smem + BM * LDS;  // [BN][LDS] B(k, n) at [n][k]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 2, wn = warp & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;

  float ra[2][8], rb[2][8];
  auto load_tile = [&](int k0) { tc_load_tile(p, m0, n0, k0, ra, rb); };
  auto store_tile = [&]() {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      int row, kg;
      unit_coords<Prob::kAMFast, BM>(tid + i * kTcThreads, row, kg);
      float4* da = reinterpret_cast<float4*>(As + row * LDS + kg * 8);
      da[0] = make_float4(ra[i][0], ra[i][1], ra[i][2], ra[i][3]);
      da[1] = make_float4(ra[i][4], ra[i][5], ra[i][6], ra[i][7]);
      unit_coords<Prob::kBNFast, BN>(tid + i * kTcThreads, row, kg);
      float4* db = reinterpret_cast<float4*>(Bs + row * LDS + kg * 8);
      db[0] = make_float4(rb[i][0], rb[i][1], rb[i][2], rb[i][3]);
      db[1] = make_float4(rb[i][4], rb[i][5], rb[i][6], rb[i][7]);
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[4][2];
  tc_zero_acc(acc);
  tc_k_loop(p, load_tile, store_tile, [&]() {
#pragma unroll
    for (int kk = 0; kk < BK; kk += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> ahi[4], alo[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> bhi[2], blo[2];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        wmma::load_matrix_sync(ahi[i], As + (wm * 64 + i * 16) * LDS + kk, LDS);
#pragma unroll
        for (int t = 0; t < ahi[i].num_elements; t++) {
          float x = ahi[i].x[t];
          float h = wmma::__float_to_tf32(x);
          ahi[i].x[t] = h;
          alo[i].x[t] = wmma::__float_to_tf32(x - h);
        }
      }
#pragma unroll
      for (int j = 0; j < 2; j++) {
        wmma::load_matrix_sync(bhi[j], Bs + (wn * 32 + j * 16) * LDS + kk, LDS);
#pragma unroll
        for (int t = 0; t < bhi[j].num_elements; t++) {
          float x = bhi[j].x[t];
          float h = wmma::__float_to_tf32(x);
          bhi[j].x[t] = h;
          blo[j].x[t] = wmma::__float_to_tf32(x - h);
        }
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
          wmma::mma_sync(acc[i][j], alo[i], bhi[j], acc[i][j]);  // small terms first
          wmma::mma_sync(acc[i][j], ahi[i], blo[j], acc[i][j]);
          wmma::mma_sync(acc[i][j], ahi[i], bhi[j], acc[i][j]);
        }
    }
  });

  tc_store_acc(p, acc, smem + warp * 256, m0, n0, wm, wn, lane);
}

template <class Prob>
__global__ void __launch_bounds__(kSimtThreads) simt_gemm_kernel(const Prob p) {
  constexpr int BM = kSimtBM, BN = kSimtBN, BK = kSimtBK;
  static_assert(BM * BK / 8 == kSimtThreads && BN * BK / 8 == kSimtThreads, "1 unit per thread");
  __shared__ float As[BK][BM + 4];  // A(m, k) at [k][m]
  __shared__ float Bs[BK][BN + 4];  // B(k, n) at [k][n]
  const int tid = threadIdx.x;
  const int tx = tid & 15, ty = tid >> 4;
  // Threads adjacent in tx get adjacent output columns of the contiguous output dim.
  const int rm = Prob::kOutMFast ? tx : ty;
  const int rn = Prob::kOutMFast ? ty : tx;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;

  int arow, akg, brow, bkg;
  unit_coords<Prob::kAMFast, BM>(tid, arow, akg);
  unit_coords<Prob::kBNFast, BN>(tid, brow, bkg);
  float ra[8], rb[8];
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

  int kt_begin, ktiles;
  k_range(p, BK, kt_begin, ktiles);
  p.load_a8(m0 + arow, kt_begin * BK + akg * 8, ra);
  p.load_b8(n0 + brow, kt_begin * BK + bkg * 8, rb);
  for (int kt = kt_begin; kt < ktiles; kt++) {
#pragma unroll
    for (int e = 0; e < 8; e++) {
      As[akg * 8 + e][arow] = ra[e];
      Bs[bkg * 8 + e][brow] = rb[e];
    }
    __syncthreads();
    if (kt + 1 < ktiles) {
      p.load_a8(m0 + arow, (kt + 1) * BK + akg * 8, ra);
      p.load_b8(n0 + brow, (kt + 1) * BK + bkg * 8, rb);
    }
#pragma unroll 8
    for (int k = 0; k < BK; k++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[k][rm + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[k][rn + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int64_t m = m0 + rm + 16 * i;
      int n = n0 + rn + 16 * j;
      if (m < p.M && n < p.N) p.store(m, n, acc[i][j]);
    }
  }
}

// Scalar loads of up to 8 elements of a contiguous row (bounds-checked), as floats.
template <typename T>
__device__ __forceinline__ void load8_row(const T* row, int64_t k0, int64_t K, bool vec, float v[8]) {
  if (vec && k0 + 8 <= K) {
    load8_aligned(row + k0, v);
    return;
  }
#pragma unroll
  for (int e = 0; e < 8; e++) v[e] = (k0 + e < K) ? to_float(row[k0 + e]) : 0.f;
}

// Row `row` of a row-major (rows, K) matrix: 8 elements from k0 as floats, zero outside
// (row >= rows or k >= K). The load_a8/load_b8 of a linear weight or activation.
template <typename T>
__device__ __forceinline__ void load8_rowmajor(const T* base, int64_t row, int64_t rows, int64_t k0, int64_t K,
                                               bool vec, float v[8]) {
  if (row >= rows) {
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = 0.f;
    return;
  }
  load8_row(base + row * K, k0, K, vec, v);
}

// The GEMM of a layer with a PyTorch-layout weight (linear, conv as implicit GEMM):
// B(k, n) = w[n*K + k], the weight row n; the derived problem adds load_a8 / store.
template <typename TW>
struct WeightRowsProb {
  const float* inp;
  const TW* w;
  const float* bias;
  float* out;
  int64_t M;
  int N, K;
  bool vecB;  // 16-byte weight loads (K % 8 == 0, aligned rows)
  int kps = kNoSplit;
  static constexpr bool kBNFast = false;
  __device__ __forceinline__ void load_b8(int n, int k0, float v[8]) const { load8_rowmajor(w, n, N, k0, K, vecB, v); }
};

}  // namespace cuda
}  // namespace rargen
