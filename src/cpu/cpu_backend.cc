// The CPU backend: every op of src/backend.h on host memory, multi-threaded over the
// shared thread pool, with AVX2/FMA kernels where they matter (GEMM, GEMV, vector
// math; see kernels.h) and portable code everywhere else. This is the readable
// reference the CUDA backend is checked against, so each op is written plainly,
// with float32 accumulation (double for normalisation statistics).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/attention.h"
#include "cpu/backward.h"
#include "cpu/half.h"
#include "cpu/kernels.h"
#include "cpu/pooling.h"
#include "cpu/threadpool.h"

namespace rargen {
namespace {

using cpu::global_pool;

// Rows per parallel task so that each task has at least ~16k elements of work.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

// Row statistics (mean, 1/sqrt(var + eps)) with double accumulation, two passes.
inline void row_stats(const float* x, int C, float eps, float& mean, float& rstd) {
  double m = cpu::sum(x, C) / C;
  double var = cpu::sumsq_dev(x, C, m) / C;
  mean = static_cast<float>(m);
  rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) { global_pool(threads); }
  const char* name() const override { return "cpu"; }
  // The reference: every op but CUDA graphs, activations in F32, weights also F16/BF16
  // (argument checks: the public ops of src/backend.cc).
  bool supports(Op op, DType dtype) const override { return reference_supports(op, dtype); }

  // ---------------- training (backward): src/cpu/backward.cc ----------------
  void linear_backward_impl(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int64_t M, int N, int K, bool accumulate_dinp) override {
    cpu::linear_backward(dinp, dweight, dbias, dout, inp, weight, M, N, K, accumulate_dinp);
  }
  void layernorm_modulate_backward_impl(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                   const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                   const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                   int C, float eps) override {
    cpu::layernorm_modulate_backward(dinp, dln_w, dln_b, dshift, dscale, dout, inp, ln_w, ln_b, scale, mod_stride,
                                     row_map, rows, C, eps);
  }
  void gated_residual_backward_impl(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                               int64_t mod_stride, const int32_t* row_map, int64_t rows, int C) override {
    cpu::gated_residual_backward(dy, dgate, dx, y, gate, mod_stride, row_map, rows, C);
  }
  void gelu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n) override {
    cpu::gelu_backward(dinp, dout, inp, n);
  }
  void silu_backward_impl(float* dinp, const float* dout, const float* inp, int64_t n) override {
    cpu::silu_backward(dinp, dout, inp, n);
  }
  void dropout_impl(float* x, int64_t n, float p, uint64_t seed, uint64_t site) override {
    cpu::dropout(x, n, p, seed, site);
  }
  void attention_train_forward_impl(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                               const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                               float p_drop, uint64_t seed, uint64_t site) override {
    cpu::attention_train_forward(out, lse, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed,
                                 site);
  }
  void attention_backward_impl(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                          const float* dout, const float* out, const float* lse, const float* qkv,
                          const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                          const float* k_norm_b, int B, int T, int H, int D, float eps, float p_drop, uint64_t seed,
                          uint64_t site) override {
    cpu::attention_backward(dqkv, dq_norm_w, dq_norm_b, dk_norm_w, dk_norm_b, dout, out, lse, qkv, q_norm_w, q_norm_b,
                            k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed, site);
  }
  void embedding_backward_impl(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C) override {
    cpu::embedding_backward(dtable, dout, ids, rows, C);
  }
  void cross_entropy_impl(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                     int64_t rows, int V, float grad_scale) override {
    cpu::cross_entropy(dlogits, losses, correct, logits, targets, rows, V, grad_scale);
  }
  double sum_squares_impl(const float* x, int64_t n) override { return cpu::sum_squares(x, n); }
  void adamw_impl(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
             float eps, float weight_decay, float grad_scale, int64_t step) override {
    cpu::adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, step);
  }

  // ---------------- memory ----------------
  void* alloc_impl(size_t bytes) override {
    size_t n = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, n);
    if (!p) throw Error("out of memory on cpu: asked for " + std::to_string(bytes) + " bytes");
    return p;
  }
  void free_impl(void* ptr) override { std::free(ptr); }
  void upload_impl(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void download_impl(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_impl(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void fill_impl(float* dst, float value, int64_t n) override { std::fill(dst, dst + n, value); }
  void synchronize_impl() override {}
  size_t free_memory() const override {
    // MemAvailable (free plus reclaimable page cache) when /proc says it.
    if (FILE* f = std::fopen("/proc/meminfo", "r")) {
      char line[256];
      unsigned long long kb = 0;
      while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
      std::fclose(f);
      if (kb) return static_cast<size_t>(kb) * 1024;
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return size_t(1) << 40;
    return static_cast<size_t>(pages) * static_cast<size_t>(page);
  }
  Weight upload_weight_impl(const float* host, int64_t n, DType dtype) override {
    Weight w;
    w.dtype = dtype;
    if (dtype == DType::F32) {
      void* p = alloc(n * 4);
      std::memcpy(p, host, n * 4);
      w.data = p;
    } else if (dtype == DType::F16 || dtype == DType::BF16) {
      uint16_t* p = static_cast<uint16_t*>(alloc(n * 2));
      global_pool().parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; i++) p[i] = dtype == DType::F16 ? cpu::f32_to_f16(host[i]) : cpu::f32_to_bf16(host[i]);
      });
      w.data = p;
    } else {
      unsupported(Op::upload_weight, dtype);  // supports() said no: not reached
    }
    return w;
  }

  // ---------------- dense ----------------
  void linear_impl(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
              bool accumulate) override {
    if (M == 0) return;
    if (M <= cpu::gemv_max_rows()) {
      // Decode: stream the weight once; tasks of ~128 KiB of weights.
      int64_t rows_per_task = std::max<int64_t>(2, (128 << 10) / (static_cast<int64_t>(K) * dtype_size(w.dtype)));
      rows_per_task = (rows_per_task + 1) & ~int64_t(1);
      int64_t tasks = (N + rows_per_task - 1) / rows_per_task;
      auto fn = cpu::has_avx2() ? cpu::gemv_avx2 : cpu::gemv_ref;
      global_pool().run(tasks, [&](int64_t t, int) {
        int64_t n0 = t * rows_per_task, n1 = std::min<int64_t>(N, n0 + rows_per_task);
        fn(out, inp, w.data, w.dtype, bias, M, n0, n1, N, K, accumulate);
      });
      return;
    }
    cpu::PackARowMajor pa(inp, DType::F32, K, M);
    cpu::PackBWeight pb(w.data, w.dtype, N, K);
    cpu::gemm(out, N, M, N, K, pa, pb, nullptr, bias, accumulate);
  }

  // ---------------- elementwise / normalisation ----------------
  void layernorm_impl(float* out, const float* inp, const float* weight, const float* bias, int64_t rows,
                 int C, float eps) override {
    layernorm_modulate_impl(out, inp, weight, bias, nullptr, nullptr, 0, nullptr, rows, C, eps);
  }

  void layernorm_modulate_impl(float* out, const float* inp, const float* ln_w, const float* ln_b,
                          const float* shift, const float* scale, int64_t mod_stride,
                          const int32_t* row_map, int64_t rows, int C, float eps) override {
    global_pool().parallel_for(rows, row_grain(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const float* x = inp + r * C;
        float* y = out + r * C;
        float mean, rstd;
        row_stats(x, C, eps, mean, rstd);
        int64_t m = row_map ? row_map[r] : r;
        const float* sh = shift ? shift + m * mod_stride : nullptr;
        const float* sc = scale ? scale + m * mod_stride : nullptr;
        for (int c = 0; c < C; c++) {
          float v = (x[c] - mean) * rstd;
          if (ln_w) v *= ln_w[c];
          if (ln_b) v += ln_b[c];
          if (sc) v = v * (1.f + sc[c]);
          if (sh) v += sh[c];
          y[c] = v;
        }
      }
    });
  }

  void gated_residual_impl(float* x, const float* y, const float* gate, int64_t mod_stride,
                      const int32_t* row_map, int64_t rows, int C) override {
    global_pool().parallel_for(rows, row_grain(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        int64_t m = row_map ? row_map[r] : r;
        const float* g = gate + m * mod_stride;
        float* xr = x + r * C;
        const float* yr = y + r * C;
        for (int c = 0; c < C; c++) xr[c] += g[c] * yr[c];
      }
    });
  }

  void gelu_impl(float* out, const float* inp, int64_t n) override {
    global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
      }
    });
  }

  void silu_impl(float* out, const float* inp, int64_t n) override {
    global_pool().parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      cpu::affine_silu(out + b, inp + b, e - b, 1.f, 0.f, true);
    });
  }

  void add_impl(float* out, const float* a, const float* b, int64_t n) override {
    global_pool().parallel_for(n, 1 << 16, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; i++) out[i] = a[i] + b[i];
    });
  }

  // ---------------- gathers ----------------
  void embedding_impl(float* out, const float* table, const int32_t* ids, int64_t rows, int C,
                 bool accumulate) override {
    global_pool().parallel_for(rows, row_grain(C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        float* o = out + r * C;
        int32_t id = ids[r];
        if (id < 0) {
          if (!accumulate) std::fill(o, o + C, 0.f);
          continue;
        }
        const float* t = table + static_cast<int64_t>(id) * C;
        if (accumulate) {
          for (int c = 0; c < C; c++) o[c] += t[c];
        } else {
          std::memcpy(o, t, C * 4);
        }
      }
    });
  }

  // ---------------- attention ----------------
  void attention_impl(float* out, void* kcache_v, void* vcache_v, DType cache_dtype, const float* qkv,
                 const float* q_norm_w, const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int R,
                 int Tn, const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D,
                 float eps) override {
    // Shapes, dtype and pointers: Backend::attention. What only the host can read here
    // (positions and slots are backend memory = host memory), in the contract's wording.
    for (int r = 0; r < R; r++) {
      if (pos[r] < 0 || static_cast<int64_t>(pos[r]) + Tn > Tcache)
        fail_arg(Op::attention, "a first position in 0.." + std::to_string(Tcache - Tn) + " (Tn " + std::to_string(Tn) +
                                    " new positions in a cache of Tcache " + std::to_string(Tcache) + ")",
                 "pos[" + std::to_string(r) + "]", std::to_string(pos[r]));
      if (slot[r] < 0 || slot[r] >= slots)
        fail_arg(Op::attention, "a cache slot in 0.." + std::to_string(slots - 1), "slot[" + std::to_string(r) + "]",
                 std::to_string(slot[r]));
    }
    // src/cpu/attention.cc: the one CPU attention forward (also attention_train_forward's)
    cpu::attention_forward(out, nullptr, static_cast<float*>(kcache_v), static_cast<float*>(vcache_v), qkv, q_norm_w,
                           q_norm_b, k_norm_w, k_norm_b, R, Tn, pos, slot, Tcache, H, D, eps, 0.f, 0, 0);
  }

  // ---------------- sampling ----------------
  void sample_impl(int32_t* tokens_out, const float* logits, int B, int V, bool cfg, float cfg_scale,
              float temperature, int top_k, float top_p, bool greedy, const float* uniforms) override {
    std::vector<float> l(V), p(V);
    std::vector<int> idx(V);
    for (int b = 0; b < B; b++) {
      const float* c = logits + static_cast<int64_t>(b) * V;
      if (cfg) {
        const float* u = logits + static_cast<int64_t>(B + b) * V;
        for (int v = 0; v < V; v++) l[v] = u[v] + (c[v] - u[v]) * cfg_scale;
      } else {
        std::copy(c, c + V, l.begin());
      }
      if (greedy) {  // argmax; ties -> the lowest index
        int best = 0;
        for (int v = 1; v < V; v++)
          if (l[v] > l[best]) best = v;
        tokens_out[b] = best;
        continue;
      }
      for (int v = 0; v < V; v++) l[v] /= temperature;
      // Keep set: by default everything; top-k / top-p cut by rank (value desc, index asc).
      std::vector<char> keep(V, 1);
      if ((top_k > 0 && top_k < V) || top_p < 1.f) {
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int bb) { return l[a] > l[bb]; });
        int kept = (top_k > 0 && top_k < V) ? top_k : V;
        if (top_p < 1.f) {
          float mx = l[idx[0]];
          double tot = 0;
          for (int r = 0; r < kept; r++) tot += std::exp(static_cast<double>(l[idx[r]] - mx));
          double cum = 0;
          int r = 0;
          for (; r < kept; r++) {
            cum += std::exp(static_cast<double>(l[idx[r]] - mx)) / tot;
            if (cum >= top_p) {
              r++;
              break;
            }
          }
          kept = std::max(1, std::min(kept, r));
        }
        std::fill(keep.begin(), keep.end(), 0);
        for (int r = 0; r < kept; r++) keep[idx[r]] = 1;
      }
      float mx = -std::numeric_limits<float>::infinity();
      for (int v = 0; v < V; v++)
        if (keep[v]) mx = std::max(mx, l[v]);
      double total = 0;
      for (int v = 0; v < V; v++) {
        p[v] = keep[v] ? std::exp(l[v] - mx) : 0.f;
        total += p[v];
      }
      // Inverse CDF in index order: the first token whose cumulative mass exceeds u.
      double target = static_cast<double>(uniforms[b]) * total, cum = 0;
      int chosen = -1, last = 0;
      for (int v = 0; v < V; v++) {
        if (p[v] <= 0.f) continue;
        last = v;
        cum += p[v];
        if (cum > target) {
          chosen = v;
          break;
        }
      }
      tokens_out[b] = chosen >= 0 ? chosen : last;
    }
  }

  // ---------------- convolution ----------------
  void conv2d_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
              int Cout, int kh, int kw, int sh, int sw, int ph, int pw) override {
    const int Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;  // >= 1: Backend::conv2d
    const int64_t K = static_cast<int64_t>(Cin) * kh * kw;
    const int64_t HWo = static_cast<int64_t>(Ho) * Wo;
    cpu::PackARowMajor pa(w.data, w.dtype, K, Cout);
    for (int b = 0; b < B; b++) {
      const float* x = inp + static_cast<int64_t>(b) * Cin * H * W;
      float* y = out + static_cast<int64_t>(b) * Cout * HWo;
      if (kh == 3 && kw == 3 && sh == 1 && sw == 1 && ph == 1 && pw == 1 && Cin >= 16 && Cout >= 16 &&
          !cpu::winograd_disabled()) {
        // The VQGAN's 3x3 convolutions: Winograd F(2x2, 3x3), 2.25x fewer FLOPs.
        cpu::winograd_conv3x3(y, x, w.data, w.dtype, bias, Cin, H, W, Cout);
      } else if (kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0) {
        cpu::PackBRowMajor pb(x, HWo, HWo);
        cpu::gemm(y, HWo, Cout, HWo, K, pa, pb, bias, nullptr, false);
      } else {
        cpu::PackBConv pb;
        pb.inp = x;
        pb.Cin = Cin; pb.H = H; pb.W = W; pb.kh = kh; pb.kw = kw;
        pb.sh = sh; pb.sw = sw; pb.ph = ph; pb.pw = pw; pb.Ho = Ho; pb.Wo = Wo;
        cpu::gemm(y, HWo, Cout, HWo, K, pa, pb, bias, nullptr, false);
      }
    }
  }

  void groupnorm_impl(float* out, const float* inp, const float* weight, const float* bias, int B, int C,
                 int64_t HW, int G, float eps, bool silu_after) override {
    const int cpg = C / G;
    std::vector<float> mean(static_cast<size_t>(B) * G), rstd(static_cast<size_t>(B) * G);
    global_pool().run(static_cast<int64_t>(B) * G, [&](int64_t bg, int) {
      const float* x = inp + bg * cpg * HW;
      int64_t n = cpg * HW;
      double m = cpu::sum(x, n) / n;
      double var = cpu::sumsq_dev(x, n, m) / n;
      mean[bg] = static_cast<float>(m);
      rstd[bg] = static_cast<float>(1.0 / std::sqrt(var + eps));
    });
    global_pool().run(static_cast<int64_t>(B) * C, [&](int64_t bc, int) {
      int c = static_cast<int>(bc % C);
      int64_t bg = (bc / C) * G + c / cpg;
      float a = rstd[bg] * weight[c];
      float s = bias[c] - mean[bg] * a;
      cpu::affine_silu(out + bc * HW, inp + bc * HW, HW, a, s, silu_after);
    });
  }

  // GroupNorm(+SiLU) folded into the Winograd input transform as per-channel scale/shift
  // (the same arithmetic as groupnorm(): x * a + s, then SiLU), the upsampling into its
  // row reads, the residual into its output transform: no intermediate tensors.
  void conv3x3_fused_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
                     int Cout, const float* gn_weight, const float* gn_bias, int G, float eps, bool silu,
                     bool upsample2x, const float* residual) override {
    if (Cin < 16 || cpu::winograd_disabled()) {  // small Cout too: conv_out (-> 3 channels)
      Backend::conv3x3_fused_impl(out, inp, w, bias, B, Cin, H, W, Cout, gn_weight, gn_bias, G, eps, silu, upsample2x,
                             residual);
      return;
    }
    const int Hi = upsample2x ? H / 2 : H, Wi = upsample2x ? W / 2 : W;
    const int64_t HWi = static_cast<int64_t>(Hi) * Wi, HW = static_cast<int64_t>(H) * W;
    std::vector<float> scale, shift;
    for (int b = 0; b < B; b++) {
      const float* x = inp + static_cast<int64_t>(b) * Cin * HWi;
      cpu::WinoFuse f;
      if (gn_weight) {
        const int cpg = Cin / G;
        std::vector<float> mean(G), rstd(G);
        global_pool().run(G, [&](int64_t g, int) {  // as groupnorm()
          const float* xg = x + g * cpg * HWi;
          int64_t n = cpg * HWi;
          double m = cpu::sum(xg, n) / n;
          double var = cpu::sumsq_dev(xg, n, m) / n;
          mean[g] = static_cast<float>(m);
          rstd[g] = static_cast<float>(1.0 / std::sqrt(var + eps));
        });
        scale.resize(Cin);
        shift.resize(Cin);
        for (int c = 0; c < Cin; c++) {
          const int g = c / cpg;
          scale[c] = rstd[g] * gn_weight[c];
          shift[c] = gn_bias[c] - mean[g] * scale[c];
        }
        f.scale = scale.data();
        f.shift = shift.data();
        f.silu = silu;
      }
      f.up2x = upsample2x;
      f.residual = residual ? residual + static_cast<int64_t>(b) * Cout * HW : nullptr;
      cpu::winograd_conv3x3_ex(out + static_cast<int64_t>(b) * Cout * HW, x, w.data, w.dtype, bias, Cin, H, W, Cout, f);
    }
  }

  void upsample_nearest2x_impl(float* out, const float* inp, int B, int C, int H, int W) override {
    global_pool().parallel_for(static_cast<int64_t>(B) * C * H, 16, [&](int64_t s, int64_t e) {
      for (int64_t r = s; r < e; r++) {  // r = (b, c, y)
        const float* x = inp + r * W;
        int64_t plane = r / H, y = r % H;
        float* o0 = out + (plane * 2 * H + 2 * y) * 2 * W;
        float* o1 = o0 + 2 * W;
        for (int i = 0; i < W; i++) o0[2 * i] = o0[2 * i + 1] = x[i];
        std::memcpy(o1, o0, 2 * W * 4);
      }
    });
  }

  // ---------------- pooling, ReLU, channel copies: src/cpu/pooling.cc ----------------
  // (arguments checked by the Backend wrappers, src/backend.cc)
  void avgpool2x2_impl(float* out, const float* inp, int B, int C, int H, int W) override {
    avgpool2d_impl(out, inp, B, C, H, W, 2, 2, 0, true);
  }
  void relu_impl(float* out, const float* inp, int64_t n) override { cpu::relu(out, inp, n); }
  void maxpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad) override {
    cpu::maxpool2d(out, inp, B, C, H, W, pool_out(H, k, stride, pad), pool_out(W, k, stride, pad), k, stride, pad);
  }
  void avgpool2d_impl(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad,
                      bool count_include_pad) override {
    cpu::avgpool2d(out, inp, B, C, H, W, pool_out(H, k, stride, pad), pool_out(W, k, stride, pad), k, stride, pad,
                   count_include_pad);
  }
  void copy_channels_impl(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                          int64_t HW, bool relu) override {
    cpu::copy_channels(dst, Cdst, dst_off, src, Csrc, src_off, B, C, HW, relu);
  }

  void codebook_nearest_impl(int32_t* tokens, const float* z, const float* codebook, int B, int Cz,
                        int64_t HW, int K) override {
    // Direct squared differences (not ||z||^2 - 2 z.e + ||e||^2, which cancels badly).
    global_pool().parallel_for(static_cast<int64_t>(B) * HW, 8, [&](int64_t s, int64_t e) {
      std::vector<float> v(Cz);
      for (int64_t i = s; i < e; i++) {
        int64_t b = i / HW, p = i % HW;
        for (int c = 0; c < Cz; c++) v[c] = z[(b * Cz + c) * HW + p];
        int best = 0;
        float bd = std::numeric_limits<float>::infinity();
        for (int k = 0; k < K; k++) {
          float d = cpu::sqdist(v.data(), codebook + static_cast<int64_t>(k) * Cz, Cz);
          if (d < bd) {
            bd = d;
            best = k;
          }
        }
        tokens[i] = best;
      }
    });
  }

  void codebook_lookup_impl(float* out, const int32_t* tokens, const float* codebook, int B, int Cz,
                       int64_t HW) override {
    global_pool().parallel_for(static_cast<int64_t>(B) * Cz, 4, [&](int64_t s, int64_t e) {
      for (int64_t bc = s; bc < e; bc++) {
        int64_t b = bc / Cz, c = bc % Cz;
        float* o = out + bc * HW;
        for (int64_t p = 0; p < HW; p++) o[p] = codebook[static_cast<int64_t>(tokens[b * HW + p]) * Cz + c];
      }
    });
  }
};

}  // namespace

Backend* cpu_backend(int threads) {
  static std::mutex mu;
  static CpuBackend* instance = nullptr;
  std::lock_guard<std::mutex> lk(mu);
  if (!instance) instance = new CpuBackend(threads);  // process lifetime, like the pool
  return instance;
}

}  // namespace rargen
