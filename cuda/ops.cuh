// Launchers of the CUDA backend's op families, one .cu each (kernels first, launchers
// after). Every launcher takes the stream last, checks its launch, and never
// synchronises; backend.cu validates arguments and calls these.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "common.cuh"

namespace rargen {
namespace cuda {

// Scratch memory owned by the backend, grown on demand and stable while a CUDA graph
// that recorded it is alive (see backend.cu). One slot per user.
enum ScratchSlot : int {
  kScratchGemmA = 0,      // activations converted to bf16/f16 for cuBLASLt
  kScratchLtWorkspace,    // cuBLASLt workspace
  kScratchAttnQ,          // normalised queries (B, H, Tn, D)
  kScratchAttnPart,       // flash-decoding partial results
  kScratchSample,         // sampling: uniforms in, tokens out
  kScratchConvert,        // upload_weight staging (fp32 before conversion)
  kScratchSplitK,         // conv2d split-K partial products
  kScratchTrain,          // training ops: LayerNorm row statistics, attention copies, partial sums
  kScratchCount
};
class ScratchProvider {
 public:
  virtual void* scratch(ScratchSlot slot, size_t bytes) = 0;
  // Called by a user that had to create backend state (a cuBLASLt plan) for an op; while
  // a CUDA graph is being captured this marks the capture as incomplete: scratch and
  // plans must exist before graph_capture_begin (run the step once directly first).
  virtual void first_use(const char* what) {}
  virtual ~ScratchProvider() = default;
};

// ---- activations.cu ----
void fill_forward(float* dst, float value, int64_t n, cudaStream_t stream);
void gelu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream);
void silu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream);
void add_forward(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
// dst (n elements of dtype F16 or BF16) = round-to-nearest-even(src).
void convert_from_f32(void* dst, DType dtype, const float* src, int64_t n, cudaStream_t stream);
// training (the contracts are src/backend.h's "training" block, as every train_* below)
void train_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream);
void train_silu_backward(float* dinp, const float* dout, const float* inp, int64_t n, cudaStream_t stream);
void train_dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site, cudaStream_t stream);

// ---- layernorm.cu ----
void layernorm_modulate_forward(float* out, const float* inp, const float* ln_weight,
                                const float* ln_bias, const float* shift, const float* scale,
                                int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                float eps, cudaStream_t stream);
void gated_residual_forward(float* x, const float* y, const float* gate, int64_t mod_stride,
                            const int32_t* row_map, int64_t rows, int C, cudaStream_t stream);
void train_layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                       const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                       const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                       int C, float eps, ScratchProvider& sp, cudaStream_t stream);
void train_gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                                   int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                   cudaStream_t stream);

// ---- embedding.cu ----
void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t rows, int C,
                       bool accumulate, cudaStream_t stream);
void train_embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C,
                              cudaStream_t stream);

// ---- attention.cu ----
void attention_init();  // raises the dynamic shared-memory limits of the kernels
// Backend::attention: kcache/vcache (slots, H, Tcache, D) hold cache_dtype values (F32,
// F16 or BF16); pos/slot (B each) are device int32 arrays, read when the kernels run.
void attention_forward(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv,
                       const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                       const float* k_norm_b, int B, int Tn, const int32_t* pos, const int32_t* slot,
                       int slots, int Tcache, int H, int D, float eps, int num_sms, ScratchProvider& sp,
                       cudaStream_t stream);

// ---- sampling.cu ----
constexpr int kSampleMaxV = 4096;
void sampling_init();  // raises the kernel's dynamic shared-memory limit (V up to kSampleMaxV)
// tokens_dev (B) int32 device memory; uniforms_dev (B) device memory or null when greedy.
void sample_forward(int32_t* tokens_dev, const float* logits, const float* uniforms_dev, int B,
                    int V, bool cfg, float cfg_scale, float temperature, int top_k, float top_p,
                    bool greedy, cudaStream_t stream);

// ---- conv.cu ----
void conv2d_forward(float* out, const float* inp, Weight w, const float* bias, int B, int Cin,
                    int H, int W, int Cout, int kh, int kw, int sh, int sw, int ph, int pw, int Ho,
                    int Wo, int num_sms, ScratchProvider& sp, cudaStream_t stream);

// ---- groupnorm.cu ----
void groupnorm_forward(float* out, const float* inp, const float* weight, const float* bias,
                       int B, int C, int64_t HW, int G, float eps, bool silu_after,
                       cudaStream_t stream);

// ---- resample.cu ----
void upsample_nearest2x_forward(float* out, const float* inp, int B, int C, int H, int W,
                                cudaStream_t stream);

// ---- pooling.cu (Ho, Wo from Backend::pool_out; avgpool2x2 is avgpool2d(2, 2, 0, true)) ----
void relu_forward(float* out, const float* inp, int64_t n, cudaStream_t stream);
void maxpool2d_forward(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k,
                       int stride, int pad, cudaStream_t stream);
void avgpool2d_forward(float* out, const float* inp, int B, int C, int H, int W, int Ho, int Wo, int k,
                       int stride, int pad, bool count_include_pad, cudaStream_t stream);
void copy_channels_forward(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B,
                           int C, int64_t HW, bool relu, cudaStream_t stream);

// ---- codebook.cu ----
void codebook_nearest_forward(int32_t* tokens, const float* z, const float* codebook, int B,
                              int Cz, int64_t HW, int K, cudaStream_t stream);
void codebook_lookup_forward(float* out, const int32_t* tokens, const float* codebook, int B,
                             int Cz, int64_t HW, cudaStream_t stream);

// ---- matmul.cu ----
// linear(): cuBLASLt (dlopen'ed at run time) when it loads and has an algorithm for the
// shape, else the project's kernels: a GEMV for M <= 8, tensor cores (WMMA) for F16/BF16
// weights, exact SIMT fp32 for F32 weights. RARGEN_CUBLASLT=0 disables cuBLASLt;
// RARGEN_CUBLASLT=/path/libcublasLt.so.N names the library to load.
class Matmul {
 public:
  explicit Matmul(ScratchProvider& sp);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;
  void linear(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
              bool accumulate, cudaStream_t stream);
  // "cuBLASLt 13.x (path)" or "built-in kernels (why cuBLASLt is not used)".
  std::string describe() const;
  bool using_cublaslt() const;

 private:
  struct Impl;
  Impl* impl_;
};
// The built-in path alone (also used by Matmul when cuBLASLt declines a shape).
void linear_builtin(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N,
                    int K, bool accumulate, cudaStream_t stream);
// training: dinp (+)= dout W, dW += dout^T inp (the SIMT tile GEMM of gemm_tile.cuh), dbias += column sums
void train_linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* weight, int64_t M, int N, int K, bool accumulate_dinp, cudaStream_t stream);

// ---- attention.cu, training: the same prologue and flash forward as attention_forward ----
// D <= 128; B*H*T < 2^31 (one backward block per (b, h, position)).
void train_attention_forward(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                             const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                             float p_drop, uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream);
void train_attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                              const float* dout, const float* out, const float* lse, const float* qkv,
                              const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                              const float* k_norm_b, int B, int T, int H, int D, float eps, float p_drop,
                              uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream);

// ---- loss.cu ----
void train_cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                         int64_t rows, int V, float grad_scale, cudaStream_t stream);

// ---- optimizer.cu ----
// Synchronises the stream (the result goes to the host).
double train_sum_squares(const float* x, int64_t n, ScratchProvider& sp, cudaStream_t stream);
void train_adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                 float eps, float weight_decay, float grad_scale, int64_t step, cudaStream_t stream);

}  // namespace cuda
}  // namespace rargen
