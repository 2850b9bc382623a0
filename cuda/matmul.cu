// linear(): out (M,N) = inp (M,K) @ W^T + bias, W (N,K) in F32/F16/BF16, fp32 out.
//
// Fast path: cuBLASLt, loaded with dlopen at run time (libcublasLt.so.13, .so.12, .so)
// so that the addon links against nothing but the driver. No cuBLAS headers are
// needed: the few types, enum values and prototypes used are declared below, matching
// the public cublasLt.h API (those values are ABI and have not changed since CUDA 11).
// For F16/BF16 weights the fp32 activations are first rounded to the weight type
// (cuBLASLt has no fp32 x bf16 mixed GEMM); the product accumulates in fp32 and
// writes fp32, with the bias as an epilogue and beta = 1 for accumulate. F32 weights
// use CUBLAS_COMPUTE_32F (no TF32): the exact mode.
//
// Built-in path (no library, or a shape cuBLASLt declines, or RARGEN_CUBLASLT=0):
// - M <= 8 (the decode step of a small batch): a GEMV, one warp per output feature,
//   streaming the weight row once with 16-byte loads;
// - F16/BF16: the WMMA tensor-core tile kernel of gemm_tile.cuh;
// - F32: the exact SIMT tile kernel.
// Training: linear_backward's dinp and dW products run on the same SIMT tile kernel
// (strided fp32 operands), the bias gradient as one thread per column.
//
// The column-major cuBLASLt view of our row-major problem: out^T (N x M, ld N) =
// W (stored K x N col-major, ld K, op T) * inp^T (K x M col-major, ld K, op N).
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "gemm_tile.cuh"
#include "ops.cuh"

namespace rargen {
namespace cuda {

// ---------------------------------------------------------------------------------
// Built-in kernels

namespace {

template <typename TW>
struct LinearProb : WeightRowsProb<TW> {
  using Base = WeightRowsProb<TW>;
  using Base::bias, Base::inp, Base::K, Base::M, Base::N, Base::out;
  bool accumulate, vecA;
  static constexpr bool kAMFast = false, kOutMFast = false;

  __device__ __forceinline__ void load_a8(int64_t m, int k0, float v[8]) const { load8_rowmajor(inp, m, M, k0, K, vecA, v); }
  __device__ __forceinline__ void store(int64_t m, int n, float acc) const {
    float r = acc + (bias ? bias[n] : 0.f);
    float* o = out + m * N + n;
    *o = accumulate ? *o + r : r;
  }
};

constexpr int kGemvMaxM = 8;
constexpr int kGemvThreads = 256;

template <typename TW>
__global__ void __launch_bounds__(kGemvThreads)
    gemv_kernel(float* out, const float* inp, const TW* __restrict__ w, const float* __restrict__ bias, int M, int N,
                int K, bool accumulate, bool vec) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (kGemvThreads / 32) + (threadIdx.x >> 5);
  if (n >= N) return;  // warp-uniform
  const TW* wr = w + static_cast<int64_t>(n) * K;
  float s[kGemvMaxM];
#pragma unroll
  for (int r = 0; r < kGemvMaxM; r++) s[r] = 0.f;
  if (vec) {  // K % 8 == 0, 16-byte aligned rows
    for (int k0 = lane * 8; k0 < K; k0 += 32 * 8) {
      float wv[8];
      load8_aligned(wr + k0, wv);
#pragma unroll
      for (int r = 0; r < kGemvMaxM; r++) {
        if (r < M) {
          float xv[8];
          load8_aligned(inp + static_cast<int64_t>(r) * K + k0, xv);
#pragma unroll
          for (int e = 0; e < 8; e++) s[r] = fmaf(wv[e], xv[e], s[r]);
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      float wv = to_float(wr[k]);
#pragma unroll
      for (int r = 0; r < kGemvMaxM; r++)
        if (r < M) s[r] = fmaf(wv, inp[static_cast<int64_t>(r) * K + k], s[r]);
    }
  }
  const float b = bias ? bias[n] : 0.f;
#pragma unroll
  for (int r = 0; r < kGemvMaxM; r++) {
    if (r < M) {  // M is uniform: every lane joins the shuffles
      float t = warp_sum(s[r]);
      if (lane == 0) {
        float* o = out + static_cast<int64_t>(r) * N + n;
        *o = accumulate ? *o + (t + b) : t + b;
      }
    }
  }
}

template <typename TW>
void launch_builtin(float* out, const float* inp, const void* w, const float* bias, int64_t M, int N, int K,
                    bool accumulate, cudaStream_t stream) {
  const TW* wt = static_cast<const TW*>(w);
  if (M <= kGemvMaxM) {
    bool vec = K % 8 == 0 && aligned16(w) && aligned16(inp);
    gemv_kernel<TW><<<static_cast<unsigned>(ceil_div(N, kGemvThreads / 32)), kGemvThreads, 0, stream>>>(
        out, inp, wt, bias, static_cast<int>(M), N, K, accumulate, vec);
    CUDA_LAUNCH_CHECK();
    return;
  }
  LinearProb<TW> p;
  p.inp = inp;
  p.w = wt;
  p.bias = bias;
  p.out = out;
  p.M = M;
  p.N = N;
  p.K = K;
  p.accumulate = accumulate;
  p.vecA = K % 8 == 0 && aligned16(inp);
  p.vecB = K % 8 == 0 && aligned16(w);
  if constexpr (std::is_same<TW, float>::value) {
    if (ceil_div(M, kSimtBM) > 0x7fffffffLL) fail("linear", "M too large");
    dim3 grid(static_cast<unsigned>(ceil_div(M, kSimtBM)), static_cast<unsigned>(ceil_div(N, kSimtBN)));
    simt_gemm_kernel<<<grid, kSimtThreads, 0, stream>>>(p);
  } else {
    if (ceil_div(M, kTcBM) > 0x7fffffffLL) fail("linear", "M too large");
    dim3 grid(static_cast<unsigned>(ceil_div(M, kTcBM)), static_cast<unsigned>(ceil_div(N, kTcBN)));
    tc_gemm_kernel<TW><<<grid, kTcThreads, 0, stream>>>(p);
  }
  CUDA_LAUNCH_CHECK();
}

// ---- training: linear_backward ----
//
// The two products of linear_backward on simt_gemm_kernel (the exact fp32 path of
// linear): C (M,N) (+)= A (M,K) B (K,N) with A(m,k) = a[m*sam + k*sak], B(k,n) =
// b[k*sbk + n*sbn], scalar loads; AMFast / BNFast say which index is the contiguous one
// (for coalesced tile loads). Every output is summed by one thread in k order, fp32
// fmaf from zero: the same arithmetic as the CPU-mirroring kernel this replaces.
template <bool AMFast, bool BNFast>
struct StridedProb {
  const float* a;
  const float* b;
  float* c;
  int64_t sam, sak, sbk, sbn, ldc;
  int64_t M;
  int N;
  int64_t K;
  bool accumulate;
  int kps = kNoSplit;
  static constexpr bool kAMFast = AMFast, kBNFast = BNFast, kOutMFast = false;

  __device__ __forceinline__ void load_a8(int64_t m, int k0, float v[8]) const {
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = (m < M && k0 + e < K) ? a[m * sam + (k0 + e) * sak] : 0.f;
  }
  __device__ __forceinline__ void load_b8(int n, int k0, float v[8]) const {
#pragma unroll
    for (int e = 0; e < 8; e++) v[e] = (n < N && k0 + e < K) ? b[(k0 + e) * sbk + n * sbn] : 0.f;
  }
  __device__ __forceinline__ void store(int64_t m, int n, float acc) const {
    float* o = c + m * ldc + n;
    *o = accumulate ? *o + acc : acc;
  }
};

template <bool AMFast, bool BNFast>
void gemm_strided(float* c, int64_t ldc, const float* a, int64_t sam, int64_t sak, const float* b, int64_t sbk,
                  int64_t sbn, int64_t M, int N, int64_t K, bool accumulate, cudaStream_t stream) {
  StridedProb<AMFast, BNFast> p{a, b, c, sam, sak, sbk, sbn, ldc, M, N, K, accumulate};
  if (ceil_div(M, kSimtBM) > 0x7fffffffLL || ceil_div(N, kSimtBN) > 65535) fail("linear_backward", "shape too large");
  if (K > 0x7fffffffLL - kSimtBK) fail("linear_backward", "K too large");
  dim3 grid(static_cast<unsigned>(ceil_div(M, kSimtBM)), static_cast<unsigned>(ceil_div(N, kSimtBN)));
  simt_gemm_kernel<<<grid, kSimtThreads, 0, stream>>>(p);
  CUDA_LAUNCH_CHECK();
}

constexpr int kBiasThreads = 256;

// dbias[n] += sum_m dout[m][n], in double, one thread per column (rows in order).
__global__ void bias_grad_kernel(float* __restrict__ dbias, const float* __restrict__ dout, int64_t M, int N) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  double s = 0;
  for (int64_t m = 0; m < M; m++) s += dout[m * N + n];
  dbias[n] += static_cast<float>(s);
}

}  // namespace

void train_linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* weight, int64_t M, int N, int K, bool accumulate_dinp, cudaStream_t stream) {
  if (M <= 0) return;
  // dinp (M,K) (+)= dout (M,N) @ W (N,K): A(m,n) = dout[m*N + n], B(n,k) = W[n*K + k]
  if (dinp) gemm_strided<false, true>(dinp, K, dout, N, 1, weight, K, 1, M, K, N, accumulate_dinp, stream);
  // dW (N,K) += dout^T (N,M) @ inp (M,K): A(n,m) = dout[m*N + n], B(m,k) = inp[m*K + k]
  if (dweight) gemm_strided<true, true>(dweight, K, dout, 1, N, inp, K, 1, N, K, M, true, stream);
  if (dbias) {
    bias_grad_kernel<<<static_cast<unsigned>(ceil_div(N, kBiasThreads)), kBiasThreads, 0, stream>>>(dbias, dout, M, N);
    CUDA_LAUNCH_CHECK();
  }
}

void linear_builtin(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K, bool accumulate,
                    cudaStream_t stream) {
  switch (w.dtype) {
    case DType::F32: launch_builtin<float>(out, inp, w.data, bias, M, N, K, accumulate, stream); break;
    case DType::F16: launch_builtin<__half>(out, inp, w.data, bias, M, N, K, accumulate, stream); break;
    case DType::BF16: launch_builtin<__nv_bfloat16>(out, inp, w.data, bias, M, N, K, accumulate, stream); break;
    default: fail("linear", "weight dtype must be F32, F16 or BF16");
  }
}

// ---------------------------------------------------------------------------------
// cuBLASLt, declared by hand (public API of cublasLt.h)

namespace lt {

using Status = int;  // cublasStatus_t; CUBLAS_STATUS_SUCCESS = 0
constexpr Status kSuccess = 0;
struct Context;
using Handle = Context*;  // cublasLtHandle_t
struct MatmulDescOpaque;
using MatmulDesc = MatmulDescOpaque*;  // cublasLtMatmulDesc_t
struct MatrixLayoutOpaque;
using MatrixLayout = MatrixLayoutOpaque*;  // cublasLtMatrixLayout_t
struct PreferenceOpaque;
using Preference = PreferenceOpaque*;  // cublasLtMatmulPreference_t
struct Algo {
  uint64_t data[8];
};  // cublasLtMatmulAlgo_t
struct HeuristicResult {
  Algo algo;
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};  // cublasLtMatmulHeuristicResult_t

// cublasComputeType_t
constexpr int kCompute32F = 68;
// cudaDataType_t (library_types.h)
constexpr int kR32F = 0, kR16F = 2, kR16BF = 14;
// cublasOperation_t
constexpr int kOpN = 0, kOpT = 1;
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3, kDescTransB = 4, kDescEpilogue = 7, kDescBiasPointer = 8, kDescBiasDataType = 26;
// cublasLtEpilogue_t
constexpr uint32_t kEpilogueDefault = 1, kEpilogueBias = 4;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspace = 1, kPrefMinAlignA = 5, kPrefMinAlignB = 6, kPrefMinAlignC = 7, kPrefMinAlignD = 8;

struct Api {
  Status (*create)(Handle*) = nullptr;
  Status (*destroy)(Handle) = nullptr;
  size_t (*get_version)() = nullptr;
  Status (*desc_create)(MatmulDesc*, int /*computeType*/, int /*scaleType*/) = nullptr;
  Status (*desc_destroy)(MatmulDesc) = nullptr;
  Status (*desc_set)(MatmulDesc, int, const void*, size_t) = nullptr;
  Status (*layout_create)(MatrixLayout*, int /*type*/, uint64_t rows, uint64_t cols, int64_t ld) = nullptr;
  Status (*layout_destroy)(MatrixLayout) = nullptr;
  Status (*pref_create)(Preference*) = nullptr;
  Status (*pref_destroy)(Preference) = nullptr;
  Status (*pref_set)(Preference, int, const void*, size_t) = nullptr;
  Status (*heuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout, MatrixLayout, Preference, int,
                      HeuristicResult*, int*) = nullptr;
  Status (*matmul)(Handle, MatmulDesc, const void* alpha, const void* A, MatrixLayout, const void* B, MatrixLayout,
                   const void* beta, const void* C, MatrixLayout, void* D, MatrixLayout, const Algo*, void* workspace,
                   size_t workspaceSize, cudaStream_t) = nullptr;
};

}  // namespace lt

struct Matmul::Impl {
  ScratchProvider& sp;
  void* lib = nullptr;
  lt::Api api;
  lt::Handle handle = nullptr;
  std::string status;  // describe()
  static constexpr size_t kWorkspace = 32u << 20;

  struct Plan {
    bool ok = false;
    lt::MatmulDesc desc = nullptr;
    lt::MatrixLayout a = nullptr, b = nullptr, c = nullptr;
    lt::Algo algo{};
  };
  // (M, N, K, dtype, has bias, alignments of W, A, out, bias)
  using Key = std::tuple<int64_t, int, int, int, bool, int, int, int, int>;
  std::map<Key, Plan> plans;
  std::mutex mu;

  explicit Impl(ScratchProvider& s) : sp(s) { load(); }

  ~Impl() {
    if (lib) {
      for (auto& kv : plans) release(kv.second);
      if (handle) api.destroy(handle);
      // the library stays loaded: unloading a CUDA library at exit is a known source of crashes
    }
  }

  void release(Plan& p) {
    if (p.a) api.layout_destroy(p.a);
    if (p.b) api.layout_destroy(p.b);
    if (p.c) api.layout_destroy(p.c);
    if (p.desc) api.desc_destroy(p.desc);
    p = Plan();
  }

  template <typename F>
  bool sym(F& fn, const char* name) {
    fn = reinterpret_cast<F>(dlsym(lib, name));
    if (!fn) status = std::string("built-in kernels (") + name + " missing from cuBLASLt)";
    return fn != nullptr;
  }

  void load() {
    const char* env = std::getenv("RARGEN_CUBLASLT");
    if (env && (std::strcmp(env, "0") == 0 || std::strcmp(env, "off") == 0)) {
      status = "built-in kernels (cuBLASLt disabled by RARGEN_CUBLASLT=0)";
      return;
    }
    std::string tried;
    const char* names[] = {env, "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
    std::string path;
    for (const char* n : names) {
      if (!n || !*n) continue;
      lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
      if (lib) {
        path = n;
        break;
      }
      tried += tried.empty() ? n : std::string(", ") + n;
    }
    if (!lib) {
      status = "built-in kernels (cuBLASLt not found: tried " + tried + "; add its folder to LD_LIBRARY_PATH)";
      return;
    }
    bool ok = sym(api.create, "cublasLtCreate") && sym(api.destroy, "cublasLtDestroy") &&
              sym(api.get_version, "cublasLtGetVersion") && sym(api.desc_create, "cublasLtMatmulDescCreate") &&
              sym(api.desc_destroy, "cublasLtMatmulDescDestroy") &&
              sym(api.desc_set, "cublasLtMatmulDescSetAttribute") &&
              sym(api.layout_create, "cublasLtMatrixLayoutCreate") &&
              sym(api.layout_destroy, "cublasLtMatrixLayoutDestroy") &&
              sym(api.pref_create, "cublasLtMatmulPreferenceCreate") &&
              sym(api.pref_destroy, "cublasLtMatmulPreferenceDestroy") &&
              sym(api.pref_set, "cublasLtMatmulPreferenceSetAttribute") &&
              sym(api.heuristic, "cublasLtMatmulAlgoGetHeuristic") && sym(api.matmul, "cublasLtMatmul");
    if (!ok) {
      dlclose(lib);
      lib = nullptr;
      return;
    }
    lt::Status st = api.create(&handle);
    if (st != lt::kSuccess) {
      status = "built-in kernels (cublasLtCreate failed with status " + std::to_string(st) + ")";
      handle = nullptr;
      dlclose(lib);
      lib = nullptr;
      return;
    }
    size_t v = api.get_version();
    status = "cuBLASLt " + std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." +
             std::to_string(v % 100) + " (" + path + ")";
  }

  static int alignment(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (!a) return 256;
    int al = 1;
    while (al < 256 && (a & static_cast<uintptr_t>(al)) == 0) al <<= 1;
    return al;
  }

  // Builds (once per shape and alignment class) the descriptors and picks an algorithm.
  Plan* plan(int64_t M, int N, int K, DType dt, const float* bias, const void* A, const void* W, const float* out) {
    Key key(M, N, K, static_cast<int>(dt), bias != nullptr, alignment(W), alignment(A), alignment(out),
            alignment(bias));
    auto it = plans.find(key);
    if (it != plans.end()) return it->second.ok ? &it->second : nullptr;
    sp.first_use("a cuBLASLt plan (new GEMM shape)");
    Plan& p = plans[key];
    const int ab_type = dt == DType::F32 ? lt::kR32F : dt == DType::F16 ? lt::kR16F : lt::kR16BF;
    bool ok = api.desc_create(&p.desc, lt::kCompute32F, lt::kR32F) == lt::kSuccess;
    const int32_t ta = lt::kOpT, tb = lt::kOpN;
    ok = ok && api.desc_set(p.desc, lt::kDescTransA, &ta, sizeof ta) == lt::kSuccess;
    ok = ok && api.desc_set(p.desc, lt::kDescTransB, &tb, sizeof tb) == lt::kSuccess;
    const uint32_t epi = bias ? lt::kEpilogueBias : lt::kEpilogueDefault;
    ok = ok && api.desc_set(p.desc, lt::kDescEpilogue, &epi, sizeof epi) == lt::kSuccess;
    if (bias) {
      const int32_t bt = lt::kR32F;
      ok = ok && api.desc_set(p.desc, lt::kDescBiasDataType, &bt, sizeof bt) == lt::kSuccess;
      // the pointer itself is set per call; heuristics need a non-null placeholder
      ok = ok && api.desc_set(p.desc, lt::kDescBiasPointer, &bias, sizeof bias) == lt::kSuccess;
    }
    // A = W: K x N col-major (ld K), op T;  B = inp: K x M col-major (ld K);  C = D = out: N x M (ld N)
    ok = ok && api.layout_create(&p.a, ab_type, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K) == lt::kSuccess;
    ok = ok && api.layout_create(&p.b, ab_type, static_cast<uint64_t>(K), static_cast<uint64_t>(M), K) == lt::kSuccess;
    ok = ok && api.layout_create(&p.c, lt::kR32F, static_cast<uint64_t>(N), static_cast<uint64_t>(M), N) == lt::kSuccess;
    lt::Preference pref = nullptr;
    ok = ok && api.pref_create(&pref) == lt::kSuccess;
    if (ok) {
      const uint64_t ws = kWorkspace;
      const uint32_t al_a = alignment(W), al_b = alignment(A), al_c = alignment(out);
      ok = api.pref_set(pref, lt::kPrefMaxWorkspace, &ws, sizeof ws) == lt::kSuccess &&
           api.pref_set(pref, lt::kPrefMinAlignA, &al_a, sizeof al_a) == lt::kSuccess &&
           api.pref_set(pref, lt::kPrefMinAlignB, &al_b, sizeof al_b) == lt::kSuccess &&
           api.pref_set(pref, lt::kPrefMinAlignC, &al_c, sizeof al_c) == lt::kSuccess &&
           api.pref_set(pref, lt::kPrefMinAlignD, &al_c, sizeof al_c) == lt::kSuccess;
      lt::HeuristicResult res[1];
      std::memset(res, 0, sizeof res);
      int found = 0;
      ok = ok && api.heuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, res, &found) == lt::kSuccess && found > 0 &&
           res[0].state == lt::kSuccess && res[0].workspaceSize <= kWorkspace;
      if (ok) p.algo = res[0].algo;
    }
    if (pref) api.pref_destroy(pref);
    if (!ok) {
      release(p);
      return nullptr;
    }
    p.ok = true;
    return &p;
  }

  // True when cuBLASLt ran the product; false to fall back to the built-in kernels.
  bool linear(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K, bool accumulate,
              cudaStream_t stream) {
    if (!lib) return false;
    std::lock_guard<std::mutex> lk(mu);
    const void* A = inp;
    if (w.dtype != DType::F32) {
      void* conv = sp.scratch(kScratchGemmA, static_cast<size_t>(M) * K * 2);
      convert_from_f32(conv, w.dtype, inp, M * K, stream);
      A = conv;
    }
    Plan* p = plan(M, N, K, w.dtype, bias, A, w.data, out);
    if (!p) return false;
    if (bias && api.desc_set(p->desc, lt::kDescBiasPointer, &bias, sizeof bias) != lt::kSuccess) return false;
    void* ws = sp.scratch(kScratchLtWorkspace, kWorkspace);
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    lt::Status st = api.matmul(handle, p->desc, &alpha, w.data, p->a, A, p->b, &beta, out, p->c, out, p->c, &p->algo, ws,
                               kWorkspace, stream);
    if (st != lt::kSuccess) {
      cudaGetLastError();
      p->ok = false;  // never again for this shape
      return false;
    }
    return true;
  }
};

Matmul::Matmul(ScratchProvider& sp) : impl_(new Impl(sp)) {}
Matmul::~Matmul() { delete impl_; }
std::string Matmul::describe() const { return impl_->status; }
bool Matmul::using_cublaslt() const { return impl_->lib != nullptr; }

void Matmul::linear(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
                    bool accumulate, cudaStream_t stream) {
  if (M <= 0) return;
  // Small M: the GEMV streams the weight once and skips the activation conversion.
  if (M > kGemvMaxM && impl_->linear(out, inp, w, bias, M, N, K, accumulate, stream)) return;
  linear_builtin(out, inp, w, bias, M, N, K, accumulate, stream);
}

}  // namespace cuda
}  // namespace rargen
