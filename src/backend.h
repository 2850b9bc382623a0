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
#include <mutex>
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
  // training, prefill and the KV-cached decode step alike, on R rows (sequences) of Tn
  // new positions each. Row r's new positions are pos[r]..pos[r]+Tn-1 and its keys and
  // values live in cache slot slot[r]: kcache/vcache are (slots, H, Tcache, D) of
  // cache_dtype values (F32; F16/BF16 where supports_kv_cache(dtype): k is rounded
  // after its LayerNorm, v as it comes). qkv (R, Tn, 3C) is the qkv linear output. The
  // op normalises k, writes k and v into the row's slot at its positions, normalises q,
  // and writes out (R, Tn, C) = softmax(q k^T / sqrt(D) + causal) v over the slot's
  // cache positions 0..pos[r]+i for query i. C = H * D, D in 1..128.
  // pos and slot are int32 arrays (R each) in backend memory, read when the op runs (so
  // one captured decode step serves every position and row layout); rows of one call
  // must name distinct slots. Training is pos = 0, slot = r, Tn = Tcache.
  virtual bool supports_kv_cache(DType dtype) const { return dtype == DType::F32; }
  virtual void attention(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv,
                         const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                         const float* k_norm_b, int R, int Tn, const int32_t* pos, const int32_t* slot,
                         int slots, int Tcache, int H, int D, float eps) = 0;

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
  // Fused 3x3 convolution (stride 1, pad 1), the VQGAN decoder's pattern:
  //   out (B, Cout, H, W) = conv3x3(up(norm(inp)), w (Cout, Cin, 3, 3)) + bias + residual
  // norm: when gn_weight is non-null, GroupNorm(G groups, eps, affine gn_weight/gn_bias)
  //   then SiLU when silu (as groupnorm()); else the identity.
  // up: nearest-2x upsampling when upsample2x (inp is then (B, Cin, H/2, W/2), H and W
  //   even); else the identity (inp (B, Cin, H, W)).
  // bias and residual (B, Cout, H, W) may be null; residual may alias out; inp may not.
  // Default: the plain ops above, with temporaries; backends override it to skip them.
  virtual void conv3x3_fused(float* out, const float* inp, Weight w, const float* bias, int B, int Cin,
                             int H, int W, int Cout, const float* gn_weight, const float* gn_bias,
                             int G, float eps, bool silu, bool upsample2x, const float* residual) {
    struct Tmp {  // freed on every exit, exceptions included
      Backend* be;
      float* p = nullptr;
      float* get(size_t n) { return p = static_cast<float*>(be->alloc(n * 4)); }
      ~Tmp() { if (p) be->free(p); }
    } t_norm{this}, t_up{this}, t_out{this};
    const int Hi = upsample2x ? H / 2 : H, Wi = upsample2x ? W / 2 : W;
    const float* x = inp;
    if (gn_weight) {
      float* y = t_norm.get(static_cast<size_t>(B) * Cin * Hi * Wi);
      groupnorm(y, x, gn_weight, gn_bias, B, Cin, static_cast<int64_t>(Hi) * Wi, G, eps, silu);
      x = y;
    }
    if (upsample2x) {
      float* y = t_up.get(static_cast<size_t>(B) * Cin * H * W);
      upsample_nearest2x(y, x, B, Cin, Hi, Wi);
      x = y;
    }
    if (!residual) {
      conv2d(out, x, w, bias, B, Cin, H, W, Cout, 3, 3, 1, 1, 1, 1);
      return;
    }
    const int64_t n = static_cast<int64_t>(B) * Cout * H * W;
    float* y = t_out.get(static_cast<size_t>(n));
    conv2d(y, x, w, bias, B, Cin, H, W, Cout, 3, 3, 1, 1, 1, 1);
    add(out, residual, y, n);
  }
  virtual void avgpool2x2(float* out, const float* inp, int B, int C, int H, int W) = 0;
  // ---- pooling, ReLU and channel copies (NCHW; the FID InceptionV3's ops) ----
  // out = max(inp, 0) on n elements (a NaN gives 0); out may alias inp.
  virtual void relu(float* out, const float* inp, int64_t n) = 0;
  // k x k windows at stride `stride`, `pad` on each side: out (B, C, Ho, Wo) with
  // Ho = (H + 2 pad - k) / stride + 1 (floor), the same for Wo. Windows are summed (or
  // compared) in row-major order. maxpool2d: padding never wins (PyTorch pads with
  // -inf). avgpool2d: the sum over the window divided by k*k (count_include_pad, padding
  // as zeros) or by the in-image element count (count_include_pad false: TF's SAME
  // average pool). avgpool2x2 is avgpool2d(k 2, stride 2, pad 0, count_include_pad).
  // Needs k >= 1, stride >= 1, 0 <= pad < k (every window touches the image).
  virtual void maxpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride,
                         int pad) = 0;
  virtual void avgpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride,
                         int pad, bool count_include_pad) = 0;
  // Channel slice copy (the concatenation of branch outputs, and taking channels out):
  // dst (B, Cdst, HW) channels [dst_off, dst_off + C) = src (B, Csrc, HW) channels
  // [src_off, src_off + C), through ReLU when `relu`. dst and src must not overlap.
  virtual void copy_channels(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off,
                             int B, int C, int64_t HW, bool relu) = 0;
  // The argument checks of this block, called by every backend's implementation: the
  // output size (Ho, Wo) of a pool, and a channel slice that fits both tensors; they
  // throw rargen::Error naming the backend, the op and the values.
  void pool_dims(const char* op, int B, int C, int H, int W, int k, int stride, int pad, int* Ho, int* Wo) const {
    auto bad = [&](const std::string& what) { throw Error(std::string(name()) + " " + op + ": " + what); };
    if (B < 0 || C < 0) bad("B and C must be >= 0, got B=" + std::to_string(B) + " C=" + std::to_string(C));
    if (k < 1 || stride < 1 || pad < 0 || pad >= k)
      bad("needs k >= 1, stride >= 1 and 0 <= pad < k, got k=" + std::to_string(k) + " stride=" + std::to_string(stride) +
          " pad=" + std::to_string(pad));
    if (H + 2 * pad < k || W + 2 * pad < k)
      bad("input " + std::to_string(H) + "x" + std::to_string(W) + " (pad " + std::to_string(pad) +
          ") is smaller than the window " + std::to_string(k));
    *Ho = (H + 2 * pad - k) / stride + 1;
    *Wo = (W + 2 * pad - k) / stride + 1;
  }
  void check_channel_slice(int Cdst, int dst_off, int Csrc, int src_off, int B, int C, int64_t HW) const {
    if (B < 0 || C < 0 || HW < 0 || dst_off < 0 || src_off < 0 || dst_off + C > Cdst || src_off + C > Csrc)
      throw Error(std::string(name()) + " copy_channels: channels [" + std::to_string(src_off) + ", " +
                  std::to_string(src_off + C) + ") of " + std::to_string(Csrc) + " into [" + std::to_string(dst_off) +
                  ", " + std::to_string(dst_off + C) + ") of " + std::to_string(Cdst) + " (B=" + std::to_string(B) +
                  ", HW=" + std::to_string(HW) + ") do not fit");
  }
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
  //   embedding ids, row maps and attention's positions and slots already do.
  // - Memory freed while capturing stays reserved for the graph; buffers the graph uses
  //   must stay allocated until graph_reset() (which frees the graph).
  virtual bool graph_capture_begin() { return false; }
  virtual bool graph_capture_end() { return false; }
  virtual bool graph_replay() { return false; }
  virtual void graph_reset() {}
  // The one graph slot is used by one decoder at a time: graph_claim(user) is true when
  // the slot was free (it is then user's) or is already user's; graph_release(user)
  // resets the graph and frees the slot (a no-op for another user).
  bool graph_claim(const void* user) {
    std::lock_guard<std::mutex> lk(graph_mu_);
    if (graph_user_ && graph_user_ != user) return false;
    graph_user_ = user;
    return true;
  }
  void graph_release(const void* user) {
    std::lock_guard<std::mutex> lk(graph_mu_);
    if (graph_user_ != user) return;
    graph_user_ = nullptr;
    graph_reset();
  }

  // ---- training (backward) ----
  // Used by src/model/rar_train.cc. All float32, backend memory. Unless stated, a
  // gradient output for a parameter ACCUMULATES (+=), so several uses of one table
  // or one modulation row add up; activation gradients are written (=) unless
  // `accumulate` says otherwise. A backend that lacks them throws (the defaults).
  // Dropout masks come from dropout_bits(seed, site, index) below, so every backend
  // drops the same elements for the same (seed, site).
  //
  // dinp (M,K) (+= when accumulate_dinp) = dout (M,N) @ W (N,K); dweight (N,K) +=
  // dout^T inp; dbias (N) += column sums of dout. dinp/dweight/dbias may be null.
  virtual void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int64_t M, int N, int K,
                               bool accumulate_dinp) {
    unsupported("linear_backward");
  }
  // Backward of layernorm_modulate (out = LN(inp)*(1+scale[m]) + shift[m]): dinp +=,
  // dln_w/dln_b += (null without affine), dshift/dscale rows m += (same mod_stride
  // layout as the forward; null to skip).
  virtual void layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift,
                                           float* dscale, const float* dout, const float* inp,
                                           const float* ln_w, const float* ln_b, const float* scale,
                                           int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                           int C, float eps) {
    unsupported("layernorm_modulate_backward");
  }
  // Backward of gated_residual (x += gate[m] * y): dy = gate[m] * dx (written),
  // dgate rows m += dx * y. (The identity path of x is the caller's.)
  virtual void gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y,
                                       const float* gate, int64_t mod_stride,
                                       const int32_t* row_map, int64_t rows, int C) {
    unsupported("gated_residual_backward");
  }
  // dinp = dout * f'(inp) for the exact (erf) GELU and SiLU; dinp may alias dout.
  virtual void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
    unsupported("gelu_backward");
  }
  virtual void silu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
    unsupported("silu_backward");
  }
  // In place: x[i] = keep ? x[i] / (1 - p) : 0, keep = dropout_bits(seed, site, i) >=
  // dropout_threshold(p). The same call on a gradient is the backward. p = 0: no-op.
  virtual void dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site) {
    unsupported("dropout");
  }
  // Training attention over T positions (pos0 = 0, no cache): the forward of
  // attention() plus dropout p_drop on the probabilities (element (b,h,i,j) has index
  // ((b*H + h)*T + i)*T + j), saving lse (B,H,T) = log sum_j exp(s_ij) for backward.
  virtual void attention_train_forward(float* out, float* lse, const float* qkv,
                                       const float* q_norm_w, const float* q_norm_b,
                                       const float* k_norm_w, const float* k_norm_b, int B, int T,
                                       int H, int D, float eps, float p_drop, uint64_t seed,
                                       uint64_t site) {
    unsupported("attention_train_forward");
  }
  // dqkv (B,T,3C) written; d{q,k}_norm_{w,b} (D) +=. Recomputes the probabilities
  // from qkv and lse (flash-attention style) and the masks from (seed, site).
  virtual void attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b,
                                  float* dk_norm_w, float* dk_norm_b, const float* dout,
                                  const float* out, const float* lse, const float* qkv,
                                  const float* q_norm_w, const float* q_norm_b,
                                  const float* k_norm_w, const float* k_norm_b, int B, int T, int H,
                                  int D, float eps, float p_drop, uint64_t seed, uint64_t site) {
    unsupported("attention_backward");
  }
  // dtable[ids[r]] += dout[r] (ids < 0 skipped); deterministic.
  virtual void embedding_backward(float* dtable, const float* dout, const int32_t* ids,
                                  int64_t rows, int C) {
    unsupported("embedding_backward");
  }
  // Per row r with targets[r] >= 0: losses[r] = logsumexp(logits[r]) - logits[r][t],
  // correct[r] = (argmax == t), dlogits[r] = (softmax - onehot(t)) * grad_scale; rows
  // with targets[r] < 0 get loss 0 and zero gradient. dlogits may alias logits.
  virtual void cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits,
                             const int32_t* targets, int64_t rows, int V, float grad_scale) {
    unsupported("cross_entropy");
  }
  // sum x[i]^2 in double, returned to the host (synchronizes).
  virtual double sum_squares(const float* x, int64_t n) {
    unsupported("sum_squares");
  }
  // PyTorch AdamW on n elements, gradient first multiplied by grad_scale (the clip):
  // p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).
  virtual void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                     int64_t step) {
    unsupported("adamw");
  }

 private:
  std::mutex graph_mu_;
  const void* graph_user_ = nullptr;
  [[noreturn]] void unsupported(const char* op) const {
    throw Error(std::string(name()) + " backend: " + op + " (training) is not implemented");
  }
};

// Counter-based dropout randomness: 32 bits per (seed, site, index), a splitmix64
// finaliser of seed ^ (site * golden) + index * odd constant. Backends compute the same
// mask bits with this formula (device code copies it verbatim).
inline uint32_t dropout_bits(uint64_t seed, uint64_t site, uint64_t index) {
  uint64_t z = (seed ^ (site * 0x9E3779B97F4A7C15ull)) + index * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}
// Elements with dropout_bits < threshold are dropped: threshold = round(p * 2^32).
inline uint32_t dropout_threshold(float p) {
  if (p <= 0.f) return 0;
  double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t + 0.5);
}

// The CPU backend; threads = 0 means all hardware threads.
Backend* cpu_backend(int threads = 0);

}  // namespace rargen
