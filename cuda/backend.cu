// The CUDA backend: class CudaBackend implements src/backend.h on one device with one
// non-blocking stream. The public ops of src/backend.cc have checked the arguments
// (the same checks and messages as on the CPU); each <op>_impl here checks only this
// backend's own limits (fail_arg, the same wording), then calls the launchers of cuda/*.cu.
//
// Memory: a caching allocator. Sizes are rounded (512 B under 1 MiB, 2 MiB above) and
// freed blocks wait in per-size free lists for the next request of that size; the
// model's allocation pattern repeats every batch, so after the first batch nothing
// reaches cudaMalloc. Reuse is safe without events because everything runs on the one
// stream (a block freed after a kernel is handed out only to later work on the same
// stream). When cudaMalloc fails the cache is returned to the driver and the request
// retried once; then the error says how much was asked and how much is free.
//
// CUDA graphs (the optional block at the end of Backend): the stream is captured in
// relaxed mode (cudaMalloc stays legal); blocks freed during a capture, and scratch
// buffers replaced while a graph exists, are held until graph_reset(), so a replay
// never writes into memory that was handed out again. A capture must find its scratch
// buffers and cuBLASLt plans already made (the caller runs the step directly once
// first): one that has to grow a scratch buffer or create a plan is discarded
// (graph_capture_end returns false; the recorded pointers would be first-use state).
// RARGEN_CUDA_GRAPHS (read at every graph_capture_begin): 0 = off (the direct path);
// strict = a capture that fails throws, naming why (the GPU tests use it, so a silent
// fallback cannot pass for the graph path); default: fall back (reason printed with
// RARGEN_CUDA_VERBOSE=1).
//
// Scratch buffers (converted activations, cuBLASLt workspace, attention partials) are
// per-slot, grow on demand and never shrink (see ScratchProvider in ops.cuh).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_api.h"
#include "ops.cuh"

namespace rargen {

namespace {

using namespace cuda;

constexpr size_t kSmallLimit = 1u << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = 2u << 20;

size_t round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < kSmallLimit) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

class CudaBackend final : public Backend, public ScratchProvider {
 public:
  explicit CudaBackend(int device) : dev_(device), name_("cuda:" + std::to_string(device)) {
    CUDA_CHECK(cudaSetDevice(dev_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, dev_));
    attention_init();
    sampling_init();
    mm_ = new Matmul(*this);
    const char* v = std::getenv("RARGEN_CUDA_VERBOSE");
    if (v && *v && std::strcmp(v, "0") != 0)
      std::fprintf(stderr, "rargen %s: %d SMs, linear() uses %s\n", name_.c_str(), num_sms_, mm_->describe().c_str());
  }

  ~CudaBackend() override {
    // Process-lifetime singletons normally never get here; be tidy if they do.
    cudaSetDevice(dev_);
    if (capturing_) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
    }
    cudaStreamSynchronize(stream_);
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
    delete mm_;
    for (auto& kv : live_) cudaFree(kv.first);
    for (auto& h : held_) cudaFree(h.first);
    for (auto& kv : cache_)
      for (void* p : kv.second) cudaFree(p);
    if (h_uniforms_) cudaFreeHost(h_uniforms_);
    if (h_tokens_) cudaFreeHost(h_tokens_);
    cudaStreamDestroy(stream_);
    cudaGetLastError();
  }

  const char* name() const override { return name_.c_str(); }
  bool is_gpu() const override { return true; }
  // The CPU's set (src/backend.cc: reference_supports) plus F16/BF16 KV caches and CUDA
  // graphs. Argument checks: the public ops (src/backend.cc); the limits of these kernels
  // stay below, worded the same (fail_arg).
  bool supports(Op op, DType dtype) const override {
    if (op == Op::attention) return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
    if (op_kind(op) == OpKind::Graph) return true;
    return reference_supports(op, dtype);
  }

  // ---------------- memory ----------------
  void* alloc_impl(size_t bytes) override {
    use();
    const size_t r = round_size(bytes);
    std::lock_guard<std::mutex> lk(mu_);
    auto it = cache_.find(r);
    if (it != cache_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_bytes_ -= r;
      live_[p] = r;
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, r);
    if (e != cudaSuccess) {
      cudaGetLastError();  // a failed cudaMalloc must not poison later launch checks
      if (!capturing_ && cached_bytes_ > 0) {
        release_cache_locked();
        e = cudaMalloc(&p, r);
        if (e != cudaSuccess) cudaGetLastError();
      }
    }
    if (e != cudaSuccess || !p) {
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      cudaGetLastError();
      throw Error("CUDA out of memory on " + name_ + " allocating " + mib(bytes) + " MiB (free " + mib(fr) +
                  " MiB): try a smaller batch size");
    }
    live_[p] = r;
    return p;
  }

  void free_impl(void* ptr) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return;  // not ours (or freed twice): ignore
    const size_t r = it->second;
    live_.erase(it);
    if (capturing_) {
      held_.emplace_back(ptr, r);  // the graph being recorded may use it
    } else {
      cache_[r].push_back(ptr);
      cached_bytes_ += r;
    }
  }

  void upload_impl(void* dst, const void* host_src, size_t bytes) override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("upload");
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  }

  void download_impl(void* host_dst, const void* src, size_t bytes) override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("download");
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void copy_impl(void* dst, const void* src, size_t bytes) override {
    auto lk = guard();
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  void fill_impl(float* dst, float value, int64_t n) override {
    auto lk = guard();
    fill_forward(dst, value, n, stream_);
  }

  void synchronize_impl() override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("synchronize");
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  size_t free_memory() const override {
    auto lk = guard();
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    std::lock_guard<std::mutex> lk2(mu_);
    return fr + cached_bytes_;
  }

  Weight upload_weight_impl(const float* host, int64_t n, DType dtype) override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("upload_weight");
    Weight w;
    w.dtype = dtype;
    if (dtype == DType::F32) {
      void* p = alloc(static_cast<size_t>(n) * 4);
      upload(p, host, static_cast<size_t>(n) * 4);
      w.data = p;
      return w;
    }
    char* dst = static_cast<char*>(alloc(static_cast<size_t>(n) * 2));
    // fp32 goes up in chunks through a staging buffer and is rounded on the device
    const int64_t chunk = std::min<int64_t>(n, int64_t(16) << 20);
    float* stage = chunk > 0 ? static_cast<float*>(scratch(kScratchConvert, static_cast<size_t>(chunk) * 4)) : nullptr;
    for (int64_t off = 0; off < n; off += chunk) {
      const int64_t cnt = std::min(chunk, n - off);
      CUDA_CHECK(cudaMemcpyAsync(stage, host + off, static_cast<size_t>(cnt) * 4, cudaMemcpyHostToDevice, stream_));
      convert_from_f32(dst + off * 2, dtype, stage, cnt, stream_);
    }
    w.data = dst;
    return w;
  }

  // ---------------- dense ----------------
  void linear_impl(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
              bool accumulate) override {
    auto lk = guard();
    if (M == 0) return;
    mm_->linear(out, inp, w, bias, M, N, K, accumulate, stream_);
  }

  // ---------------- elementwise / normalisation ----------------
  void layernorm_impl(float* out, const float* inp, const float* weight, const float* bias, int64_t rows, int C,
                 float eps) override {
    auto lk = guard();
    layernorm_modulate_forward(out, inp, weight, bias, nullptr, nullptr, 0, nullptr, rows, C, eps, stream_);
  }

  void layernorm_modulate_impl(float* out, const float* inp, const float* ln_weight, const float* ln_bias,
                          const float* shift, const float* scale, int64_t mod_stride, const int32_t* row_map,
                          int64_t rows, int C, float eps) override {
    auto lk = guard();
    layernorm_modulate_forward(out, inp, ln_weight, ln_bias, shift, scale, mod_stride, row_map, rows, C, eps, stream_);
  }

  void gated_residual_impl(float* x, const float* y, const float* gate, int64_t mod_stride, const int32_t* row_map,
                      int64_t rows, int C) override {
    auto lk = guard();
    gated_residual_forward(x, y, gate, mod_stride, row_map, rows, C, stream_);
  }

  void gelu_impl(float* out, const float* inp, int64_t n) override {
    auto lk = guard();
    gelu_forward(out, inp, n, stream_);
  }
  void silu_impl(float* out, const float* inp, int64_t n) override {
    auto lk = guard();
    silu_forward(out, inp, n, stream_);
  }
  void add_impl(float* out, const float* a, const float* b, int64_t n) override {
    auto lk = guard();
    add_forward(out, a, b, n, stream_);
  }

  // ---------------- gathers ----------------
  void embedding_impl(float* out, const float* table, const int32_t* ids, int64_t rows, int C, bool accumulate) override {
    auto lk = guard();
    embedding_forward(out, table, ids, rows, C, accumulate, stream_);
  }

  // ---------------- attention ----------------
  void attention_impl(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv, const float* q_norm_w,
                 const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int R, int Tn, const int32_t* pos,
                 const int32_t* slot, int slots, int Tcache, int H, int D, float eps) override {
    auto lk = guard();
    if (R == 0) return;
    // Device-side positions and slots cannot be checked here; the kernels skip cache
    // writes outside the cache rather than corrupt memory.
    attention_forward(out, kcache, vcache, cache_dtype, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, R, Tn, pos, slot,
                      slots, Tcache, H, D, eps, num_sms_, *this, stream_);
  }

  // ---------------- sampling ----------------
  void sample_impl(int32_t* tokens_out, const float* logits, int B, int V, bool cfg, float cfg_scale, float temperature,
              int top_k, float top_p, bool greedy, const float* uniforms) override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("sample");
    if (B == 0) return;
    ensure_pinned(B);
    char* dev = static_cast<char*>(scratch(kScratchSample, static_cast<size_t>(B) * 8));
    float* d_uniforms = reinterpret_cast<float*>(dev);
    int32_t* d_tokens = reinterpret_cast<int32_t*>(dev + static_cast<size_t>(B) * 4);
    if (!greedy) {
      std::memcpy(h_uniforms_, uniforms, static_cast<size_t>(B) * 4);
      CUDA_CHECK(cudaMemcpyAsync(d_uniforms, h_uniforms_, static_cast<size_t>(B) * 4, cudaMemcpyHostToDevice, stream_));
    }
    sample_forward(d_tokens, logits, greedy ? nullptr : d_uniforms, B, V, cfg, cfg_scale, temperature, top_k, top_p,
                   greedy, stream_);
    CUDA_CHECK(cudaMemcpyAsync(h_tokens_, d_tokens, static_cast<size_t>(B) * 4, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::memcpy(tokens_out, h_tokens_, static_cast<size_t>(B) * 4);
  }

  // ---------------- convolution ----------------
  void conv2d_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W, int Cout, int kh,
              int kw, int stride_h, int stride_w, int pad_h, int pad_w) override {
    auto lk = guard();
    const int Ho = (H + 2 * pad_h - kh) / stride_h + 1, Wo = (W + 2 * pad_w - kw) / stride_w + 1;  // >= 1: checked
    conv2d_forward(out, inp, w, bias, B, Cin, H, W, Cout, kh, kw, stride_h, stride_w, pad_h, pad_w, Ho, Wo, num_sms_, *this,
                   stream_);
  }

  void groupnorm_impl(float* out, const float* inp, const float* weight, const float* bias, int B, int C, int64_t HW, int G,
                 float eps, bool silu_after) override {
    auto lk = guard();
    groupnorm_forward(out, inp, weight, bias, B, C, HW, G, eps, silu_after, stream_);
  }

  void upsample_nearest2x_impl(float* out, const float* inp, int B, int C, int H, int W) override {
    auto lk = guard();
    upsample_nearest2x_forward(out, inp, B, C, H, W, stream_);
  }

  // ---------------- pooling, ReLU, channel copies: pooling.cu ----------------
  // (arguments checked by the Backend wrappers, src/backend.cc)
  void avgpool2x2_impl(float* out, const float* inp, int B, int C, int H, int W) override {
    avgpool2d_impl(out, inp, B, C, H, W, 2, 2, 0, true);
  }
  void relu_impl(float* out, const float* inp, int64_t n) override {
    auto lk = guard();
    relu_forward(out, inp, n, stream_);
  }
  void maxpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad) override {
    auto lk = guard();
    maxpool2d_forward(out, inp, B, C, H, W, pool_out(H, k, stride, pad), pool_out(W, k, stride, pad), k, stride, pad,
                      stream_);
  }
  void avgpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad,
                      bool count_include_pad) override {
    auto lk = guard();
    avgpool2d_forward(out, inp, B, C, H, W, pool_out(H, k, stride, pad), pool_out(W, k, stride, pad), k, stride, pad,
                      count_include_pad, stream_);
  }
  void copy_channels_impl(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                          int64_t HW, bool relu) override {
    auto lk = guard();
    copy_channels_forward(dst, Cdst, dst_off, src, Csrc, src_off, B, C, HW, relu, stream_);
  }

  void codebook_nearest_impl(int32_t* tokens, const float* z, const float* codebook, int B, int Cz, int64_t HW,
                        int K) override {
    auto lk = guard();
    codebook_nearest_forward(tokens, z, codebook, B, Cz, HW, K, stream_);
  }

  void codebook_lookup_impl(float* out, const int32_t* tokens, const float* codebook, int B, int Cz, int64_t HW) override {
    auto lk = guard();
    codebook_lookup_forward(out, tokens, codebook, B, Cz, HW, stream_);
  }

  // ---------------- training (backward): kernels beside their forwards (cuda/README.md) ----------------
  void linear_backward_impl(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int64_t M, int N, int K, bool accumulate_dinp) override {
    auto lk = guard();
    const int64_t max_rows = 65535LL * 64;  // GEMM grid rows (64 per block): this kernel's limit
    const std::string limit = "an integer <= " + std::to_string(max_rows) + " on CUDA";
    if (M > max_rows) fail_arg(Op::linear_backward, limit, "M", std::to_string(M));
    if (N > max_rows) fail_arg(Op::linear_backward, limit, "N", std::to_string(N));
    train_linear_backward(dinp, dweight, dbias, dout, inp, weight, M, N, K, accumulate_dinp, stream_);
  }
  void layernorm_modulate_backward_impl(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                   const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                   const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                   float eps) override {
    auto lk = guard();
    if (C > 12000) fail_arg(Op::layernorm_modulate_backward, "an integer <= 12000 on CUDA", "C", std::to_string(C));
    if (rows > 0x7fffffffLL)
      fail_arg(Op::layernorm_modulate_backward, "an integer < 2^31 on CUDA", "rows", std::to_string(rows));
    train_layernorm_modulate_backward(dinp, dln_w, dln_b, dshift, dscale, dout, inp, ln_w, ln_b, scale, mod_stride,
                                      row_map, rows, C, eps, *this, stream_);
  }
  void gated_residual_backward_impl(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                               int64_t mod_stride, const int32_t* row_map, int64_t rows, int C) override {
    auto lk = guard();
    train_gated_residual_backward(dy, dgate, dx, y, gate, mod_stride, row_map, rows, C, stream_);
  }
  void gelu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n) override {
    auto lk = guard();
    train_gelu_backward(dinp, dout, inp, n, stream_);
  }
  void silu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n) override {
    auto lk = guard();
    train_silu_backward(dinp, dout, inp, n, stream_);
  }
  void dropout_impl(float* x, int64_t n, float p, uint64_t seed, uint64_t site) override {
    auto lk = guard();
    train_dropout(x, n, p, seed, site, stream_);
  }
  void attention_train_forward_impl(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                               const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                               float p_drop, uint64_t seed, uint64_t site) override {
    auto lk = guard();
    check_train_attention(Op::attention_train_forward, B, T, H);
    train_attention_forward(out, lse, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed, site,
                            *this, stream_);
  }
  void attention_backward_impl(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                          const float* dout, const float* out, const float* lse, const float* qkv,
                          const float* q_norm_w, const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                          int B, int T, int H, int D, float eps, float p_drop, uint64_t seed, uint64_t site) override {
    auto lk = guard();
    check_train_attention(Op::attention_backward, B, T, H);
    train_attention_backward(dqkv, dq_norm_w, dq_norm_b, dk_norm_w, dk_norm_b, dout, out, lse, qkv, q_norm_w, q_norm_b,
                             k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed, site, *this, stream_);
  }
  void embedding_backward_impl(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C) override {
    auto lk = guard();
    train_embedding_backward(dtable, dout, ids, rows, C, stream_);
  }
  void cross_entropy_impl(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                     int64_t rows, int V, float grad_scale) override {
    auto lk = guard();
    if (rows > 0x7fffffffLL) fail_arg(Op::cross_entropy, "an integer < 2^31 on CUDA", "rows", std::to_string(rows));
    train_cross_entropy(dlogits, losses, correct, logits, targets, rows, V, grad_scale, stream_);
  }
  double sum_squares_impl(const float* x, int64_t n) override {
    auto lk = guard();  // waits for another thread's capture; then capturing_ means this thread's
    no_capture("sum_squares");
    return train_sum_squares(x, n, *this, stream_);
  }
  void adamw_impl(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
             float eps, float weight_decay, float grad_scale, int64_t step) override {
    auto lk = guard();
    train_adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, step, stream_);
  }

  // ---------------- CUDA graphs ----------------
  bool graph_capture_begin_impl() override {
    // op_mu_ is held from here to graph_capture_end (recursive: this thread's ops still
    // run); RAII until the capture has begun, so a throw (use(), graph_reset()) unlocks.
    std::unique_lock<std::recursive_mutex> lk(op_mu_);
    use();
    if (capturing_ || graph_mode() == GraphMode::Off) return false;
    graph_reset();
    capture_miss_.clear();
    cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return graph_failed(std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(e));
    }
    {
      std::lock_guard<std::mutex> lk2(mu_);
      capturing_ = true;
    }
    lk.release();  // graph_capture_end unlocks
    return true;
  }

  bool graph_capture_end_impl() override {
    std::unique_lock<std::recursive_mutex> mine(op_mu_, std::try_to_lock);
    if (!mine.owns_lock()) return false;  // another thread is capturing
    if (!capturing_) return false;
    // adopt the lock graph_capture_begin left held: released when `held` goes out of scope
    std::unique_lock<std::recursive_mutex> held(op_mu_, std::adopt_lock);
    use();
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &g);
    {
      std::lock_guard<std::mutex> lk(mu_);
      capturing_ = false;
    }
    if (e != cudaSuccess || !g) {
      cudaGetLastError();
      if (g) cudaGraphDestroy(g);
      return graph_failed(std::string("cudaStreamEndCapture: ") + cudaGetErrorString(e));
    }
    if (!capture_miss_.empty()) {
      cudaGraphDestroy(g);
      return graph_failed("the captured ops had to create " + capture_miss_ +
                          " during the capture; run the step once directly before capturing it");
    }
    cudaGraphExec_t x = nullptr;
    e = cudaGraphInstantiate(&x, g, 0);
    if (e != cudaSuccess || !x) {
      cudaGetLastError();
      cudaGraphDestroy(g);
      return graph_failed(std::string("cudaGraphInstantiate: ") + cudaGetErrorString(e));
    }
    graph_ = g;
    exec_ = x;
    return true;
  }

  bool graph_replay_impl() override {
    auto lk = guard();
    if (!exec_ || capturing_) return false;
    CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    return true;
  }

  void graph_reset_impl() override {
    auto lk = guard();
    if (capturing_) return;  // graph_capture_end() first
    if (exec_ || graph_) CUDA_CHECK(cudaStreamSynchronize(stream_));  // a replay may still run
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
    exec_ = nullptr;
    graph_ = nullptr;
    std::lock_guard<std::mutex> lk2(mu_);
    for (auto& h : held_) {
      cache_[h.second].push_back(h.first);
      cached_bytes_ += h.second;
    }
    held_.clear();
  }

  // ---------------- streams and events ----------------
  // Event* is a cudaEvent_t (timing off: the cheapest kind to record and wait on).
  Event* event_create_impl() override {
    auto lk = guard();
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return reinterpret_cast<Event*>(e);
  }
  void event_record_impl(Event* e) override {
    auto lk = guard();
    CUDA_CHECK(cudaEventRecord(reinterpret_cast<cudaEvent_t>(e), stream_));
  }
  void event_synchronize_impl(Event* e) override {
    use();
    CUDA_CHECK(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(e)));
  }
  void event_destroy_impl(Event* e) override {
    use();
    CUDA_CHECK(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(e)));
  }
  void* native_stream_impl() override { return stream_; }

  // ---------------- ScratchProvider ----------------
  void first_use(const char* what) override {
    if (capturing_ && capture_miss_.empty()) capture_miss_ = what;
  }
  void* scratch(ScratchSlot slot, size_t bytes) override {
    Scratch& s = scratch_[slot];
    if (s.cap >= bytes && s.p) return s.p;
    first_use("a scratch buffer (slot grew)");
    size_t want = std::max(bytes, s.cap + s.cap / 2);
    void* p = alloc(want);
    void* old = s.p;
    s.p = p;
    s.cap = round_size(want);
    if (old) {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = live_.find(old);
      if (it != live_.end()) {
        size_t r = it->second;
        live_.erase(it);
        if (capturing_ || exec_) {
          held_.emplace_back(old, r);  // a recorded graph may still use it
        } else {
          cache_[r].push_back(old);
          cached_bytes_ += r;
        }
      }
    }
    return p;
  }

 private:
  struct Scratch {
    void* p = nullptr;
    size_t cap = 0;
  };

  void use() const {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != dev_) CUDA_CHECK(cudaSetDevice(dev_));
  }

  // Every op enqueues its kernels under op_mu_: ops of two jobs sharing this backend
  // (and its scratch buffers) from two threads then interleave only between ops, never
  // inside one, so stream order keeps each op's scratch private. A capture holds op_mu_
  // from graph_capture_begin to graph_capture_end, so no other thread's work is recorded.
  std::unique_lock<std::recursive_mutex> guard() const {
    std::unique_lock<std::recursive_mutex> lk(op_mu_);
    use();
    return lk;
  }

  // The training attention kernels' own limit (the contract's checks ran before; the
  // flash forward tiles keys, so T has no shared-memory bound).
  void check_train_attention(Op op, int B, int T, int H) const {
    if (static_cast<int64_t>(B) * H * T > 0x7fffffffLL)
      fail_arg(op, "sizes whose product is < 2^31 on CUDA", "B*H*T",
               std::to_string(B) + "*" + std::to_string(H) + "*" + std::to_string(T));
  }

  enum class GraphMode { Off, Fallback, Strict };
  static GraphMode graph_mode() {
    const char* v = std::getenv("RARGEN_CUDA_GRAPHS");
    if (v && std::strcmp(v, "0") == 0) return GraphMode::Off;
    if (v && std::strcmp(v, "strict") == 0) return GraphMode::Strict;
    return GraphMode::Fallback;
  }
  // A capture that did not produce a graph: false (the caller runs the ops directly), or
  // with RARGEN_CUDA_GRAPHS=strict an error naming why.
  bool graph_failed(const std::string& why) {
    const std::string msg = name_ + ": CUDA graph capture failed: " + why;
    if (graph_mode() == GraphMode::Strict) throw Error(msg + " (RARGEN_CUDA_GRAPHS=strict)");
    const char* v = std::getenv("RARGEN_CUDA_VERBOSE");
    if (v && *v && std::strcmp(v, "0") != 0) std::fprintf(stderr, "rargen %s; running the ops directly\n", msg.c_str());
    return false;
  }

  void no_capture(const char* op) const {
    if (capturing_)
      fail(op, "not allowed while a CUDA graph is being captured (graph_capture_begin .. graph_capture_end)");
  }

  // Requires mu_ held.
  void release_cache_locked() {
    cudaStreamSynchronize(stream_);
    for (auto& kv : cache_)
      for (void* p : kv.second) cudaFree(p);
    cache_.clear();
    cached_bytes_ = 0;
    cudaGetLastError();
  }

  void ensure_pinned(int B) {
    if (pinned_cap_ >= B) return;
    if (h_uniforms_) CUDA_CHECK(cudaFreeHost(h_uniforms_));
    if (h_tokens_) CUDA_CHECK(cudaFreeHost(h_tokens_));
    h_uniforms_ = nullptr;
    h_tokens_ = nullptr;
    pinned_cap_ = 0;
    int cap = std::max(B, 256);
    CUDA_CHECK(cudaMallocHost(&h_uniforms_, static_cast<size_t>(cap) * 4));
    CUDA_CHECK(cudaMallocHost(&h_tokens_, static_cast<size_t>(cap) * 4));
    pinned_cap_ = cap;
  }

  const int dev_;
  const std::string name_;
  cudaStream_t stream_ = nullptr;
  int num_sms_ = 0;
  Matmul* mm_ = nullptr;

  mutable std::recursive_mutex op_mu_;  // see guard()
  mutable std::mutex mu_;               // allocator state
  std::unordered_map<void*, size_t> live_;
  std::map<size_t, std::vector<void*>> cache_;
  size_t cached_bytes_ = 0;
  std::vector<std::pair<void*, size_t>> held_;  // reserved for the current graph

  std::atomic<bool> capturing_{false};  // written under op_mu_ + mu_; read anywhere
  std::string capture_miss_;            // first backend state created during this capture
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;

  Scratch scratch_[kScratchCount];
  float* h_uniforms_ = nullptr;
  int32_t* h_tokens_ = nullptr;
  int pinned_cap_ = 0;
};

}  // namespace

Backend* cuda_backend(int device) {
  static std::mutex mu;
  static std::map<int, CudaBackend*> instances;  // one per device, process lifetime (like cpu_backend)
  std::lock_guard<std::mutex> lk(mu);
  auto it = instances.find(device);
  if (it != instances.end()) return it->second;
  CudaProbe p = cuda_probe();
  if (!p.available) throw Error("CUDA is not usable: " + p.reason);
  if (device < 0 || device >= static_cast<int>(p.devices.size()))
    throw Error("no CUDA device cuda:" + std::to_string(device) + " (found " + std::to_string(p.devices.size()) +
                ": cuda:0..cuda:" + std::to_string(p.devices.size() - 1) + ")");
  const CudaDeviceInfo& d = p.devices[device];
  if (d.cc_major < 8)
    throw Error("CUDA device cuda:" + std::to_string(device) + " (" + d.name + ") has compute capability " +
                std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
                "; rargen's CUDA backend needs 8.0 or newer (Ampere, Ada, Hopper)");
  CudaBackend* b = new CudaBackend(device);
  instances[device] = b;
  return b;
}

}  // namespace rargen
