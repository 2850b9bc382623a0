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
// - Checks once (a non-virtual interface): every op below is a public non-virtual
//   method that validates its arguments for every backend (src/backend.cc, one check
//   function per op, one wording: "rargen: <backend> <op>: Expected <what> for <arg>
//   but received <value>"), asks supports(op, dtype), and then calls the protected
//   virtual <op>_impl that a backend implements. An op the backend does not support
//   throws "rargen: <backend> does not support <op> for <dtype>: ..." from the wrapper.
//   Errors of a backend itself (out of memory, a kernel's own limit, host-side checks
//   of backend data like the CPU's per-row attention positions) use the same wording
//   through fail_arg().
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
// "f32", "f16", "bf16", "i32"; dtype_from_name is its inverse (false: no such dtype).
const char* dtype_name(DType t);
bool dtype_from_name(const std::string& name, DType* out);

// Every op of the Backend, once: X(name, kind). The enum, op_name(), op_kind() and
// op_from_name() are generated from this list; src/test/optest.cc checks that its op
// table lists exactly these. Kinds: Memory (every backend has them), Forward, Training
// (the backward ops and the optimizer), Graph (optional CUDA graphs: an unsupported one
// answers false instead of throwing), Event (streams/events: synchronous defaults).
// The dtype of supports(op, dtype) is the op's storage choice: the weight's for linear,
// conv2d and conv3x3_fused, upload_weight's target, attention's KV cache; F32 for the
// others (activations are float32).
#define RARGEN_BACKEND_OPS(X)                                                              \
  X(alloc, Memory) X(free, Memory) X(upload, Memory) X(download, Memory) X(copy, Memory)   \
  X(fill, Memory) X(synchronize, Memory) X(upload_weight, Memory)                          \
  X(linear, Forward) X(layernorm, Forward) X(layernorm_modulate, Forward)                  \
  X(gated_residual, Forward) X(gelu, Forward) X(silu, Forward) X(add, Forward)             \
  X(embedding, Forward) X(attention, Forward) X(sample, Forward) X(conv2d, Forward)        \
  X(groupnorm, Forward) X(upsample_nearest2x, Forward) X(conv3x3_fused, Forward)           \
  X(avgpool2x2, Forward) X(codebook_nearest, Forward) X(codebook_lookup, Forward)          \
  X(relu, Forward) X(maxpool2d, Forward) X(avgpool2d, Forward) X(copy_channels, Forward)   \
  X(graph_capture_begin, Graph) X(graph_capture_end, Graph) X(graph_replay, Graph)         \
  X(graph_reset, Graph)                                                                    \
  X(event_create, Event) X(event_record, Event) X(event_synchronize, Event)                \
  X(event_destroy, Event) X(native_stream, Event)                                          \
  X(linear_backward, Training) X(layernorm_modulate_backward, Training)                    \
  X(gated_residual_backward, Training) X(gelu_backward, Training)                          \
  X(silu_backward, Training) X(dropout, Training) X(attention_train_forward, Training)      \
  X(attention_backward, Training) X(embedding_backward, Training)                          \
  X(cross_entropy, Training) X(sum_squares, Training) X(adamw, Training)

enum class Op : int {
#define RARGEN_OP_ENUM(name, kind) name,
  RARGEN_BACKEND_OPS(RARGEN_OP_ENUM)
#undef RARGEN_OP_ENUM
};
enum class OpKind : int { Memory, Forward, Training, Graph, Event };
constexpr int kOpCount = 0
#define RARGEN_OP_COUNT(name, kind) +1
    RARGEN_BACKEND_OPS(RARGEN_OP_COUNT)
#undef RARGEN_OP_COUNT
    ;
const char* op_name(Op op);  // "linear", "attention_backward", ...
OpKind op_kind(Op op);
bool op_from_name(const std::string& name, Op* out);  // false: no such op
// What the CPU backend supports (the reference: every Memory, Forward, Event and
// Training op in F32, weights also in F16/BF16, no graphs); other backends start from it.
bool reference_supports(Op op, DType dtype);

// An event on a backend's compute stream (opaque; each backend defines its own).
struct Event;

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
  // Whether this backend runs `op` with `dtype` (see RARGEN_BACKEND_OPS for which dtype
  // an op's is). Every public op asks it before its _impl (Memory ops excepted) and
  // throws unsupported() when it answers false; model code asks it instead of catching.
  virtual bool supports(Op op, DType dtype) const = 0;

  // ---- memory ----
  // Throws rargen::Error("out of memory ...: asked for N bytes ...") on failure.
  void* alloc(size_t bytes) { return alloc_impl(bytes); }
  void free(void* ptr) { free_impl(ptr); }
  void upload(void* dst, const void* host_src, size_t bytes);
  void download(void* host_dst, const void* src, size_t bytes);
  void copy(void* dst, const void* src, size_t bytes);  // within the backend
  void fill(float* dst, float value, int64_t n);
  void synchronize() { synchronize_impl(); }
  // Bytes of memory free for allocation (GPU: cudaMemGetInfo; CPU: a large number).
  virtual size_t free_memory() const = 0;
  // Stores host float32 weights as `dtype` in backend memory (conversion done here).
  Weight upload_weight(const float* host, int64_t n, DType dtype);

  // ---- dense ----
  // out (M,N) = inp (M,K) @ W^T + bias;  W (N,K), bias (N) or null.
  // accumulate: out += (inp @ W^T + bias) instead of overwrite.
  void linear(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
              bool accumulate = false);

  // ---- elementwise / normalisation ----
  // LayerNorm over C with optional affine (weight/bias null = no affine).
  void layernorm(float* out, const float* inp, const float* weight, const float* bias, int64_t rows, int C,
                 float eps);
  // adaLN: out[r] = LN(inp[r]) * (1 + scale[m]) + shift[m], m = row_map[r], where
  // shift/scale rows live in a modulation table at `shift + m*mod_stride`,
  // `scale + m*mod_stride`. LN affine optional (ln_weight/ln_bias may be null).
  // row_map is backend memory (int32, rows); null means m = r.
  void layernorm_modulate(float* out, const float* inp, const float* ln_weight, const float* ln_bias,
                          const float* shift, const float* scale, int64_t mod_stride, const int32_t* row_map,
                          int64_t rows, int C, float eps);
  // x[r] += gate[m] * y[r], m = row_map[r] (null: m = r), gate rows at gate + m*mod_stride.
  void gated_residual(float* x, const float* y, const float* gate, int64_t mod_stride, const int32_t* row_map,
                      int64_t rows, int C);
  void gelu(float* out, const float* inp, int64_t n);  // exact, erf
  void silu(float* out, const float* inp, int64_t n);
  void add(float* out, const float* a, const float* b, int64_t n);

  // ---- gathers ----
  // out[r] = table[ids[r]] (+= when accumulate). table (rows_in_table, C) float32;
  // ids int32 backend memory; an id < 0 writes zeros (or adds nothing).
  void embedding(float* out, const float* table, const int32_t* ids, int64_t rows, int C, bool accumulate = false);

  // ---- attention ----
  // Causal self-attention with q/k LayerNorm over the head dim (affine, eps), for
  // training, prefill and the KV-cached decode step alike, on R rows (sequences) of Tn
  // new positions each. Row r's new positions are pos[r]..pos[r]+Tn-1 and its keys and
  // values live in cache slot slot[r]: kcache/vcache are (slots, H, Tcache, D) of
  // cache_dtype values (F32; F16/BF16 where supports(Op::attention, dtype): k is rounded
  // after its LayerNorm, v as it comes). qkv (R, Tn, 3C) is the qkv linear output. The
  // op normalises k, writes k and v into the row's slot at its positions, normalises q,
  // and writes out (R, Tn, C) = softmax(q k^T / sqrt(D) + causal) v over the slot's
  // cache positions 0..pos[r]+i for query i. C = H * D, D in 1..128.
  // pos and slot are int32 arrays (R each) in backend memory, read when the op runs (so
  // one captured decode step serves every position and row layout); rows of one call
  // must name distinct slots (so R <= slots). Training is pos = 0, slot = r, Tn = Tcache.
  void attention(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv, const float* q_norm_w,
                 const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int R, int Tn,
                 const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D, float eps);

  // ---- sampling (only token ids leave the device) ----
  // logits (R, V). With cfg, R = 2B: rows 0..B-1 conditional, B..2B-1 unconditional,
  // combined as u + (c - u) * cfg_scale; else R = B. Then / temperature, optional
  // top-k (0 = off) and top-p (1 = off) filtering, then greedy argmax or inverse-CDF
  // multinomial with uniforms[b] in [0,1) (host memory, drawn by the caller's seeded
  // RNG so every backend samples the same token from the same logits).
  // tokens_out: host int32 (B).
  void sample(int32_t* tokens_out, const float* logits, int B, int V, bool cfg, float cfg_scale, float temperature,
              int top_k, float top_p, bool greedy, const float* uniforms);

  // ---- convolution (NCHW) ----
  // out (B, Cout, Ho, Wo) = conv(inp (B, Cin, H, W), w (Cout, Cin, kh, kw)) + bias.
  void conv2d(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W, int Cout,
              int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w);
  // GroupNorm over (C/G channels x HW) per group, affine; optionally SiLU after.
  void groupnorm(float* out, const float* inp, const float* weight, const float* bias, int B, int C, int64_t HW,
                 int G, float eps, bool silu_after);
  void upsample_nearest2x(float* out, const float* inp, int B, int C, int H, int W);
  // Fused 3x3 convolution (stride 1, pad 1), the VQGAN decoder's pattern:
  //   out (B, Cout, H, W) = conv3x3(up(norm(inp)), w (Cout, Cin, 3, 3)) + bias + residual
  // norm: when gn_weight is non-null, GroupNorm(G groups, eps, affine gn_weight/gn_bias)
  //   then SiLU when silu (as groupnorm()); else the identity.
  // up: nearest-2x upsampling when upsample2x (inp is then (B, Cin, H/2, W/2), H and W
  //   even); else the identity (inp (B, Cin, H, W)).
  // bias and residual (B, Cout, H, W) may be null; residual may alias out; inp may not.
  // Default (conv3x3_fused_impl): the plain ops above, with temporaries; backends
  // override it to skip them.
  void conv3x3_fused(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
                     int Cout, const float* gn_weight, const float* gn_bias, int G, float eps, bool silu,
                     bool upsample2x, const float* residual);
  void avgpool2x2(float* out, const float* inp, int B, int C, int H, int W);
  // ---- pooling, ReLU and channel copies (NCHW; the FID InceptionV3's ops) ----
  // out = max(inp, 0) on n elements (a NaN gives 0); out may alias inp.
  void relu(float* out, const float* inp, int64_t n);
  // k x k windows at stride `stride`, `pad` on each side: out (B, C, Ho, Wo) with
  // Ho = pool_out(H, k, stride, pad) = (H + 2 pad - k) / stride + 1 (floor), the same for
  // Wo. Windows are summed (or compared) in row-major order. maxpool2d: padding never
  // wins (PyTorch pads with -inf). avgpool2d: the sum over the window divided by k*k
  // (count_include_pad, padding as zeros) or by the in-image element count
  // (count_include_pad false: TF's SAME average pool). avgpool2x2 is avgpool2d(k 2,
  // stride 2, pad 0, count_include_pad). Needs k >= 1, stride >= 1, 0 <= pad < k (every
  // window touches the image) and H + 2 pad >= k, W + 2 pad >= k.
  void maxpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad);
  void avgpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad,
                 bool count_include_pad);
  static int pool_out(int H, int k, int stride, int pad) { return (H + 2 * pad - k) / stride + 1; }
  // Channel slice copy (the concatenation of branch outputs, and taking channels out):
  // dst (B, Cdst, HW) channels [dst_off, dst_off + C) = src (B, Csrc, HW) channels
  // [src_off, src_off + C), through ReLU when `relu`. dst and src must not overlap.
  void copy_channels(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                     int64_t HW, bool relu);
  // tokens (B*HW) = argmin_k ||z[b,:,p] - codebook[k]||^2 for z (B, Cz, HW) NCHW;
  // ties -> the lowest index. codebook (K, Cz). tokens in backend memory (int32).
  void codebook_nearest(int32_t* tokens, const float* z, const float* codebook, int B, int Cz, int64_t HW, int K);
  // out (B, Cz, HW) NCHW from codebook rows: out[b,:,p] = codebook[tokens[b*HW+p]].
  void codebook_lookup(float* out, const int32_t* tokens, const float* codebook, int B, int Cz, int64_t HW);

  // ---- optional: CUDA graphs for the decode step (added with the CUDA backend) ----
  // Where supports(Op::graph_*) is false (the defaults) these answer false / do nothing,
  // so model code may always try them and fall back to plain calls. On the CUDA backend:
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
  bool graph_capture_begin() { return supports(Op::graph_capture_begin, DType::F32) && graph_capture_begin_impl(); }
  bool graph_capture_end() { return supports(Op::graph_capture_end, DType::F32) && graph_capture_end_impl(); }
  bool graph_replay() { return supports(Op::graph_replay, DType::F32) && graph_replay_impl(); }
  void graph_reset() {
    if (supports(Op::graph_reset, DType::F32)) graph_reset_impl();
  }
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

  // ---- streams and events (for collectives that overlap the compute stream) ----
  // An event marks the point of the compute stream where it was recorded. The defaults
  // are those of a synchronous backend (the CPU: an op has finished when it returns),
  // so recording is a no-op and waiting returns at once; native_stream() is null. On
  // the CUDA backend: cudaEvent_t (cudaEventDisableTiming) recorded on the backend's
  // stream, and its cudaStream_t, so another stream (NCCL's) can cudaStreamWaitEvent on
  // the event instead of the host synchronizing the whole device.
  Event* event_create() { return event_create_impl(); }
  void event_record(Event* e);       // on the compute stream, after the work issued so far
  void event_synchronize(Event* e);  // the host waits until the work before the record is done
  void event_destroy(Event* e) {
    if (e) event_destroy_impl(e);
  }
  void* native_stream() { return native_stream_impl(); }  // cudaStream_t on CUDA, null on CPU

  // ---- training (backward) ----
  // Used by src/model/rar_train.cc. All float32, backend memory. Unless stated, a
  // gradient output for a parameter ACCUMULATES (+=), so several uses of one table
  // or one modulation row add up; activation gradients are written (=) unless
  // `accumulate` says otherwise. A backend that lacks them says so in supports()
  // (the wrapper then throws unsupported(); the default _impls throw the same).
  // Dropout masks come from dropout_bits(seed, site, index) below, so every backend
  // drops the same elements for the same (seed, site).
  //
  // dinp (M,K) (+= when accumulate_dinp) = dout (M,N) @ W (N,K); dweight (N,K) +=
  // dout^T inp; dbias (N) += column sums of dout. dinp/dweight/dbias may be null.
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int64_t M, int N, int K, bool accumulate_dinp);
  // Backward of layernorm_modulate (out = LN(inp)*(1+scale[m]) + shift[m]): dinp +=,
  // dln_w/dln_b += (null without affine), dshift/dscale rows m += (same mod_stride
  // layout as the forward; null to skip).
  void layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                   const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                   const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                   int C, float eps);
  // Backward of gated_residual (x += gate[m] * y): dy = gate[m] * dx (written),
  // dgate rows m += dx * y. (The identity path of x is the caller's.)
  void gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                               int64_t mod_stride, const int32_t* row_map, int64_t rows, int C);
  // dinp = dout * f'(inp) for the exact (erf) GELU and SiLU; dinp may alias dout.
  void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n);
  void silu_backward(float* dinp, const float* dout, const float* inp, int64_t n);
  // In place: x[i] = keep ? x[i] / (1 - p) : 0, keep = dropout_bits(seed, site, i) >=
  // dropout_threshold(p). The same call on a gradient is the backward. p = 0: no-op.
  void dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site);
  // Training attention over T positions (pos0 = 0, no cache): the forward of
  // attention() plus dropout p_drop on the probabilities (element (b,h,i,j) has index
  // ((b*H + h)*T + i)*T + j), saving lse (B,H,T) = log sum_j exp(s_ij) for backward.
  void attention_train_forward(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                               const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                               float p_drop, uint64_t seed, uint64_t site);
  // dqkv (B,T,3C) written; d{q,k}_norm_{w,b} (D) +=. Recomputes the probabilities
  // from qkv and lse (flash-attention style) and the masks from (seed, site).
  void attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                          const float* dout, const float* out, const float* lse, const float* qkv,
                          const float* q_norm_w, const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                          int B, int T, int H, int D, float eps, float p_drop, uint64_t seed, uint64_t site);
  // dtable[ids[r]] += dout[r] (ids < 0 skipped); deterministic.
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C);
  // Per row r with targets[r] >= 0: losses[r] = logsumexp(logits[r]) - logits[r][t],
  // correct[r] = (argmax == t), dlogits[r] = (softmax - onehot(t)) * grad_scale; rows
  // with targets[r] < 0 get loss 0 and zero gradient. dlogits may alias logits.
  void cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                     int64_t rows, int V, float grad_scale);
  // sum x[i]^2 in double, returned to the host (synchronizes).
  double sum_squares(const float* x, int64_t n);
  // PyTorch AdamW on n elements, gradient first multiplied by grad_scale (the clip):
  // p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).
  void adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
             float eps, float weight_decay, float grad_scale, int64_t step);

  // The errors of the contract, for the wrappers (src/backend.cc) and for the checks a
  // backend keeps itself (host-side reads of backend data, kernel limits):
  //   "rargen: <name()> <op>: Expected <what> for <arg> but received <value>"
  [[noreturn]] void fail_arg(Op op, const std::string& what, const std::string& arg, const std::string& value) const;
  //   "rargen: <name()> does not support <op> for <dtype>: <how to do without>"
  [[noreturn]] void unsupported(Op op, DType dtype) const;

 protected:
  // What a backend implements: the ops above, arguments already checked (see src/backend.cc).
  virtual void* alloc_impl(size_t bytes) = 0;
  virtual void free_impl(void* ptr) = 0;
  virtual void upload_impl(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download_impl(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy_impl(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_impl(float* dst, float value, int64_t n) = 0;
  virtual void synchronize_impl() = 0;
  virtual Weight upload_weight_impl(const float* host, int64_t n, DType dtype) = 0;
  virtual void linear_impl(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
                           bool accumulate) = 0;
  virtual void layernorm_impl(float* out, const float* inp, const float* weight, const float* bias, int64_t rows,
                              int C, float eps) = 0;
  virtual void layernorm_modulate_impl(float* out, const float* inp, const float* ln_weight, const float* ln_bias,
                                       const float* shift, const float* scale, int64_t mod_stride,
                                       const int32_t* row_map, int64_t rows, int C, float eps) = 0;
  virtual void gated_residual_impl(float* x, const float* y, const float* gate, int64_t mod_stride,
                                   const int32_t* row_map, int64_t rows, int C) = 0;
  virtual void gelu_impl(float* out, const float* inp, int64_t n) = 0;
  virtual void silu_impl(float* out, const float* inp, int64_t n) = 0;
  virtual void add_impl(float* out, const float* a, const float* b, int64_t n) = 0;
  virtual void embedding_impl(float* out, const float* table, const int32_t* ids, int64_t rows, int C,
                              bool accumulate) = 0;
  virtual void attention_impl(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv,
                              const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                              const float* k_norm_b, int R, int Tn, const int32_t* pos, const int32_t* slot, int slots,
                              int Tcache, int H, int D, float eps) = 0;
  virtual void sample_impl(int32_t* tokens_out, const float* logits, int B, int V, bool cfg, float cfg_scale,
                           float temperature, int top_k, float top_p, bool greedy, const float* uniforms) = 0;
  virtual void conv2d_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
                           int Cout, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w) = 0;
  virtual void groupnorm_impl(float* out, const float* inp, const float* weight, const float* bias, int B, int C,
                              int64_t HW, int G, float eps, bool silu_after) = 0;
  virtual void upsample_nearest2x_impl(float* out, const float* inp, int B, int C, int H, int W) = 0;
  // Default: groupnorm, upsample_nearest2x, conv2d and add through the public ops, with
  // temporaries (src/backend.cc).
  virtual void conv3x3_fused_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H,
                                  int W, int Cout, const float* gn_weight, const float* gn_bias, int G, float eps,
                                  bool silu, bool upsample2x, const float* residual);
  virtual void avgpool2x2_impl(float* out, const float* inp, int B, int C, int H, int W) = 0;
  virtual void relu_impl(float* out, const float* inp, int64_t n) = 0;
  virtual void maxpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride,
                              int pad) = 0;
  virtual void avgpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride,
                              int pad, bool count_include_pad) = 0;
  virtual void copy_channels_impl(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off,
                                  int B, int C, int64_t HW, bool relu) = 0;
  virtual void codebook_nearest_impl(int32_t* tokens, const float* z, const float* codebook, int B, int Cz,
                                     int64_t HW, int K) = 0;
  virtual void codebook_lookup_impl(float* out, const int32_t* tokens, const float* codebook, int B, int Cz,
                                    int64_t HW) = 0;
  // Graphs: called only where supports(Op::graph_*) is true.
  virtual bool graph_capture_begin_impl() { return false; }
  virtual bool graph_capture_end_impl() { return false; }
  virtual bool graph_replay_impl() { return false; }
  virtual void graph_reset_impl() {}
  // Events: the synchronous defaults (event_create_impl returns a shared dummy event).
  virtual Event* event_create_impl();
  virtual void event_record_impl(Event*) {}
  virtual void event_synchronize_impl(Event*) {}
  virtual void event_destroy_impl(Event*) {}
  virtual void* native_stream_impl() { return nullptr; }
  // Training: the defaults throw unsupported(op, F32) (a backend that has them says so in
  // supports() and overrides them all).
  virtual void linear_backward_impl(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                    const float* weight, int64_t M, int N, int K, bool accumulate_dinp);
  virtual void layernorm_modulate_backward_impl(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                                const float* dout, const float* inp, const float* ln_w,
                                                const float* ln_b, const float* scale, int64_t mod_stride,
                                                const int32_t* row_map, int64_t rows, int C, float eps);
  virtual void gated_residual_backward_impl(float* dy, float* dgate, const float* dx, const float* y,
                                            const float* gate, int64_t mod_stride, const int32_t* row_map,
                                            int64_t rows, int C);
  virtual void gelu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n);
  virtual void silu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n);
  virtual void dropout_impl(float* x, int64_t n, float p, uint64_t seed, uint64_t site);
  virtual void attention_train_forward_impl(float* out, float* lse, const float* qkv, const float* q_norm_w,
                                            const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                                            int B, int T, int H, int D, float eps, float p_drop, uint64_t seed,
                                            uint64_t site);
  virtual void attention_backward_impl(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w,
                                       float* dk_norm_b, const float* dout, const float* out, const float* lse,
                                       const float* qkv, const float* q_norm_w, const float* q_norm_b,
                                       const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D,
                                       float eps, float p_drop, uint64_t seed, uint64_t site);
  virtual void embedding_backward_impl(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C);
  virtual void cross_entropy_impl(float* dlogits, float* losses, int32_t* correct, const float* logits,
                                  const int32_t* targets, int64_t rows, int V, float grad_scale);
  virtual double sum_squares_impl(const float* x, int64_t n);
  virtual void adamw_impl(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                          float beta2, float eps, float weight_decay, float grad_scale, int64_t step);

 private:
  std::mutex graph_mu_;
  const void* graph_user_ = nullptr;
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
