// The op table. Model code (src/model/) is written once against this interface;
// the CPU backend (src/cpu/) is the readable reference, the CUDA backend (cuda/)
// the fast one. Like ggml's backend interface: the model never knows which one runs.
//
// Conventions (llm.c style):
// - Arguments: outputs first, then saved statistics, then inputs, then weights, then dims.
// - Activations are float32, row-major, in backend memory (alloc()). On the CPU
//   backend backend memory is host memory.
// - Linear weights are (out, in) as PyTorch stores them, in F32, F16 or BF16
//   (a `Weight`); every accumulation is float32.
// - Dims: B batch, T sequence length, C channels, H heads, D head dim, V vocab.
//   Row counts and element counts are int64_t; channel-like dims are int.
// - All calls are asynchronous with respect to the host on a GPU backend (one
//   stream); download() and synchronize() wait.
// - Errors (bad dims, out of memory) throw rargen::Error with a message naming the
//   op and the argument.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace rargen {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };

inline size_t dtype_size(DType t) { return t == DType::F32 || t == DType::I32 ? 4 : 2; }

// A weight matrix or vector in backend memory.
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::F32;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;  // "cpu", "cuda:0"
  virtual bool is_gpu() const { return false; }

  // ---- memory ----
  // Throws rargen::Error("out of memory ...: asked for N bytes ...") on failure.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within the backend
  virtual void fill(float* dst, float value, int64_t n) = 0;
  virtual void synchronize() = 0;
  // Bytes of memory free for allocation (GPU: cudaMemGetInfo; CPU: a large number).
  virtual size_t free_memory() const = 0;
  // Stores host float32 weights as `dtype` in backend memory (conversion done here).
  virtual Weight upload_weight(const float* host, int64_t n, DType dtype) = 0;

  // ---- dense ----
  // out (M,N) = inp (M,K) @ W^T + bias;  W (N,K), bias (N) or null.
  // accumulate: out += (inp @ W^T + bias) instead of overwrite.
  virtual void linear(float* out, const float* inp, Weight w, const float* bias,
                      int64_t M, int N, int K, bool accumulate = false) = 0;

  // ---- elementwise / normalisation ----
  // LayerNorm over C with optional affine (weight/bias null = no affine).
  virtual void layernorm(float* out, const float* inp, const float* weight, const float* bias,
                         int64_t rows, int C, float eps) = 0;
  // adaLN: out[r] = LN(inp[r]) * (1 + scale[m]) + shift[m], m = row_map[r], where
  // shift/scale rows live in a modulation table at `shift + m*mod_stride`,
  // `scale + m*mod_stride`. LN affine optional (ln_weight/ln_bias may be null).
  // row_map is backend memory (int32, rows); null means m = r.
  virtual void layernorm_modulate(float* out, const float* inp, const float* ln_weight,
                                  const float* ln_bias, const float* shift, const float* scale,
                                  int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                  float eps) = 0;
  // x[r] += gate[m] * y[r], m = row_map[r] (null: m = r), gate rows at gate + m*mod_stride.
  virtual void gated_residual(float* x, const float* y, const float* gate, int64_t mod_stride,
                              const int32_t* row_map, int64_t rows, int C) = 0;
  virtual void gelu(float* out, const float* inp, int64_t n) = 0;  // exact, erf
  virtual void silu(float* out, const float* inp, int64_t n) = 0;
  virtual void add(float* out, const float* a, const float* b, int64_t n) = 0;

  // ---- gathers ----
  // out[r] = table[ids[r]] (+= when accumulate). table (rows_in_table, C) float32;
  // ids int32 backend memory; an id < 0 writes zeros (or adds nothing).
  virtual void embedding(float* out, const float* table, const int32_t* ids, int64_t rows, int C,
                         bool accumulate = false) = 0;

  // ---- attention ----
  // Causal self-attention with q/k LayerNorm over the head dim (affine, eps), for
  // training (pos0 = 0, Tn = T = Tcache), prefill and the KV-cached decode step alike.
  // qkv (B, Tn, 3C) is the qkv linear output for the Tn new positions pos0..pos0+Tn-1.
  // The op normalises k, writes k and v into kcache/vcache (B, H, Tcache, D) at those
  // positions, normalises q, and writes out (B, Tn, C) = softmax(q k^T / sqrt(D) +
  // causal) v over cache positions 0..pos0+i for query i. C = H * D, D in 16..128.
  virtual void attention(float* out, float* kcache, float* vcache, const float* qkv,
                         const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                         const float* k_norm_b, int B, int Tn, int pos0, int Tcache, int H, int D,
                         float eps) = 0;

  // ---- sampling (only token ids leave the device) ----
  // logits (R, V). With cfg, R = 2B: rows 0..B-1 conditional, B..2B-1 unconditional,
  // combined as u + (c - u) * cfg_scale; else R = B. Then / temperature, optional
  // top-k (0 = off) and top-p (1 = off) filtering, then greedy argmax or inverse-CDF
  // multinomial with uniforms[b] in [0,1) (host memory, drawn by the caller's seeded
  // RNG so every backend samples the same token from the same logits).
  // tokens_out: host int32 (B).
  virtual void sample(int32_t* tokens_out, const float* logits, int B, int V, bool cfg,
                      float cfg_scale, float temperature, int top_k, float top_p, bool greedy,
                      const float* uniforms) = 0;

  // ---- convolution (NCHW) ----
  // out (B, Cout, Ho, Wo) = conv(inp (B, Cin, H, W), w (Cout, Cin, kh, kw)) + bias.
  virtual void conv2d(float* out, const float* inp, Weight w, const float* bias, int B, int Cin,
                      int H, int W, int Cout, int kh, int kw, int stride_h, int stride_w, int pad_h,
                      int pad_w) = 0;
  // GroupNorm over (C/G channels x HW) per group, affine; optionally SiLU after.
  virtual void groupnorm(float* out, const float* inp, const float* weight, const float* bias,
                         int B, int C, int64_t HW, int G, float eps, bool silu_after) = 0;
  virtual void upsample_nearest2x(float* out, const float* inp, int B, int C, int H, int W) = 0;
  virtual void avgpool2x2(float* out, const float* inp, int B, int C, int H, int W) = 0;
  // tokens (B*HW) = argmin_k ||z[b,:,p] - codebook[k]||^2 for z (B, Cz, HW) NCHW;
  // ties -> the lowest index. codebook (K, Cz). tokens in backend memory (int32).
  virtual void codebook_nearest(int32_t* tokens, const float* z, const float* codebook, int B,
                                int Cz, int64_t HW, int K) = 0;
  // out (B, Cz, HW) NCHW from codebook rows: out[b,:,p] = codebook[tokens[b*HW+p]].
  virtual void codebook_lookup(float* out, const int32_t* tokens, const float* codebook, int B,
                               int Cz, int64_t HW) = 0;

  // ---- optional: CUDA graphs for the decode step (added with the CUDA backend) ----
  // Defaults are "not supported" (false / no-op), so model code may always try them and
  // fall back to plain calls. On the CUDA backend:
  // - graph_capture_begin() starts recording: ops issued until graph_capture_end() are
  //   recorded, not run (so their outputs are not computed by the capture itself).
  //   Only device-side ops may be issued meanwhile: upload, download, synchronize and
  //   sample throw. graph_capture_end() returns false (and leaves no graph) when the
  //   recording failed; call it also after an op threw during a capture.
  // - graph_replay() runs the recording again, asynchronously, on the backend's stream.
  // - Kernel arguments are frozen at capture, so everything that changes per step must
  //   live in backend memory that the caller updates (upload) before each replay:
  //   embedding ids and row maps already do; for the cache position use attention_ext().
  // - Memory freed while capturing stays reserved for the graph; buffers the graph uses
  //   must stay allocated until graph_reset() (which frees the graph).
  virtual bool graph_capture_begin() { return false; }
  virtual bool graph_capture_end() { return false; }
  virtual bool graph_replay() { return false; }
  virtual void graph_reset() {}

  // attention() generalised, for backends that can do more (the CUDA backend does both):
  // - pos0_device non-null: the first new position is read from backend memory (int32)
  //   when the op runs, so one captured decode step serves every position (pos0 is then
  //   ignored; null: pos0 is used).
  // - cache_dtype F16/BF16 (where supports_kv_cache(dtype)): kcache/vcache hold 2-byte
  //   values, (B, H, Tcache, D) as always: half the cache memory and half the decode
  //   step's reads; k is rounded after its LayerNorm, v as it comes. F32: as attention().
  // Defaults: F32 only; a device-side position is downloaded first.
  virtual bool supports_kv_cache(DType dtype) const { return dtype == DType::F32; }
  virtual void attention_ext(float* out, void* kcache, void* vcache, DType cache_dtype,
                             const float* qkv, const float* q_norm_w, const float* q_norm_b,
                             const float* k_norm_w, const float* k_norm_b, int B, int Tn, int pos0,
                             const int32_t* pos0_device, int Tcache, int H, int D, float eps) {
    if (cache_dtype != DType::F32)
      throw Error(std::string(name()) + " attention_ext: KV cache dtype must be F32 on this backend");
    if (pos0_device) download(&pos0, pos0_device, sizeof pos0);
    attention(out, static_cast<float*>(kcache), static_cast<float*>(vcache), qkv, q_norm_w, q_norm_b,
              k_norm_w, k_norm_b, B, Tn, pos0, Tcache, H, D, eps);
  }
};

// The CPU backend; threads = 0 means all hardware threads.
Backend* cpu_backend(int threads = 0);

}  // namespace rargen
