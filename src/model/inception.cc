// TF1-exact InceptionV3 for FID/sFID/IS (see inception.h for what and why).
//
// Built like the rest of src/model/: the convolutions and the fc layer are Backend ops;
// the few ops the op table lacks (ReLU, 3x3 max/avg pooling, channel concat, global
// average pool, the TF1 resize) are host functions here. A CUDA port needs kernels for:
//   - relu (in place) and relu_into_channels (ReLU fused with the strided concat copy),
//   - maxpool3x3 (stride 1 pad 1 with -inf padding, stride 2 no pad),
//   - avgpool3x3_exclude_pad (stride 1, pad 1, count_include_pad=False),
//   - global_avgpool (B, C, HW) -> (B, C),
//   - the TF1 bilinear resize from uint8 HWC (or keep it on the host: it is cheap and
//     only the resized batch is uploaded).
// Until then a GPU backend runs them through host copies (HostView below).
//
// Memory: two ping-pong buffers hold block inputs/outputs (the largest activation,
// Conv2d_2b's 64x147x147 per image), and a stack arena the branch temporaries. The
// arena size comes from a dry run of forward() that allocates without computing.
#include "model/inception.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <thread>

namespace rargen {

namespace {

constexpr double kBnEps = 1e-3;
constexpr int64_t kMaxActivation = 64LL * 147 * 147;  // per image, Conv2d_2b_3x3's output

[[noreturn]] void fail(const std::string& what) { throw Error("inception: " + what); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

// Splits [0, n) into up to `threads` ranges of at least `grain` items, one std::thread
// each (the calling thread takes the first). The host ops here are a few per block and
// memory-bound, so a thread spawn per op costs nothing measurable next to the convs.
void parallel_for(int threads, int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> ts;
  ts.reserve(chunks - 1);
  for (int64_t c = 1; c < chunks; c++) ts.emplace_back([&, c] { fn(n * c / chunks, n * (c + 1) / chunks); });
  fn(0, n / chunks);
  for (auto& t : ts) t.join();
}

// Backend memory seen from the host: the memory itself on the CPU backend; on a GPU
// backend a host copy (downloaded when `read`, uploaded by commit() when written).
class HostView {
 public:
  HostView(Backend* be, const float* dev, int64_t n, bool read) : be_(be), dev_(const_cast<float*>(dev)), n_(n) {
    if (!be->is_gpu()) {
      ptr_ = dev_;
      return;
    }
    copy_.resize(static_cast<size_t>(n));
    if (read) be->download(copy_.data(), dev, static_cast<size_t>(n) * 4);
    ptr_ = copy_.data();
  }
  float* data() { return ptr_; }
  void commit() {
    if (be_->is_gpu()) be_->upload(dev_, copy_.data(), static_cast<size_t>(n_) * 4);
  }

 private:
  Backend* be_;
  float* dev_;
  int64_t n_;
  float* ptr_ = nullptr;
  std::vector<float> copy_;
};

// ---- host ops (NCHW, float32) ----

void relu_inplace(float* x, int64_t n, int threads) {
  parallel_for(threads, n, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; i++) x[i] = x[i] > 0.f ? x[i] : 0.f;
  });
}

// dst (B, Ctot, HW) channels [coff, coff + C) = relu(src (B, C, HW)).
void relu_into_channels(float* dst, int Ctot, int coff, const float* src, int B, int C, int64_t HW, int threads) {
  parallel_for(threads, static_cast<int64_t>(B) * C, 8, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      int64_t b = bc / C, c = bc % C;
      const float* x = src + bc * HW;
      float* y = dst + (b * Ctot + coff + c) * HW;
      for (int64_t i = 0; i < HW; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
    }
  });
}

// 3x3 max pool; padding (if any) never wins (PyTorch pads with -inf).
void maxpool3x3(float* out, const float* in, int B, int C, int H, int W, int stride, int pad, int threads) {
  const int Ho = (H + 2 * pad - 3) / stride + 1, Wo = (W + 2 * pad - 3) / stride + 1;
  parallel_for(threads, static_cast<int64_t>(B) * C, 4, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      const float* x = in + bc * H * W;
      float* y = out + bc * Ho * Wo;
      for (int oy = 0; oy < Ho; oy++) {
        int y0 = oy * stride - pad, y1 = std::min(y0 + 3, H);
        y0 = std::max(y0, 0);
        for (int ox = 0; ox < Wo; ox++) {
          int x0 = ox * stride - pad, x1 = std::min(x0 + 3, W);
          x0 = std::max(x0, 0);
          float m = -std::numeric_limits<float>::infinity();
          for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) m = std::max(m, x[iy * W + ix]);
          y[oy * Wo + ox] = m;
        }
      }
    }
  });
}

// 3x3 average pool, stride 1, pad 1, padded zeros not counted (TF's avg pool;
// PyTorch's count_include_pad=False).
void avgpool3x3_exclude_pad(float* out, const float* in, int B, int C, int H, int W, int threads) {
  parallel_for(threads, static_cast<int64_t>(B) * C, 4, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      const float* x = in + bc * H * W;
      float* y = out + bc * H * W;
      for (int oy = 0; oy < H; oy++) {
        int y0 = std::max(oy - 1, 0), y1 = std::min(oy + 2, H);
        for (int ox = 0; ox < W; ox++) {
          int x0 = std::max(ox - 1, 0), x1 = std::min(ox + 2, W);
          float sum = 0.f;
          for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) sum += x[iy * W + ix];
          y[oy * W + ox] = sum / static_cast<float>((y1 - y0) * (x1 - x0));
        }
      }
    }
  });
}

// out (B, C) = mean over HW of in (B, C, HW).
void global_avgpool(float* out, const float* in, int B, int C, int64_t HW, int threads) {
  parallel_for(threads, static_cast<int64_t>(B) * C, 64, [&](int64_t s, int64_t e) {
    for (int64_t bc = s; bc < e; bc++) {
      const float* x = in + bc * HW;
      float sum = 0.f;
      for (int64_t i = 0; i < HW; i++) sum += x[i];
      out[bc] = sum / static_cast<float>(HW);
    }
  });
}

// A stack of backend memory. In a dry run it hands out null pointers and only
// records the peak, which sizes the real one.
struct Arena {
  float* base = nullptr;
  int64_t cap = 0, top = 0, peak = 0;
  bool dry = false;
  float* get(int64_t n) {
    int64_t off = top;
    top += (n + 15) / 16 * 16;
    peak = std::max(peak, top);
    if (dry) return nullptr;
    if (top > cap) fail("workspace overflow (internal error: the dry run undercounted)");
    return base + off;
  }
  int64_t mark() const { return top; }
  void release(int64_t m) { top = m; }
};

struct Act {  // one activation (B, C, H, W) in backend memory
  float* p;
  int C, H, W;
  int64_t plane() const { return static_cast<int64_t>(H) * W; }
  int64_t per_image() const { return C * plane(); }
};

struct ConvLayer {  // conv (no bias) + BatchNorm(eps 1e-3) + ReLU, as BasicConv2d
  std::string name;
  int cin, cout, kh, kw, sh, sw, ph, pw;
  // staging, by state-dict suffix: conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var
  std::vector<float> host[5];
  Weight w;              // folded weight (cout, cin, kh, kw)
  float* bias = nullptr;  // folded bias (cout)
};

const char* const kParamSuffix[5] = {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"};

}  // namespace

void tf1_resize_bilinear(float* out, const uint8_t* in, int B, int H, int W, int oh, int ow, float shift,
                         float scale, int threads) {
  if (B < 1 || H < 1 || W < 1 || oh < 1 || ow < 1)
    fail("resize: bad dims B=" + std::to_string(B) + " H=" + std::to_string(H) + " W=" + std::to_string(W));
  // grid = float32(i) * float32(in/out); lo = trunc; hi = min(lo+1, in-1); d = grid - lo
  auto grid = [](int n_in, int n_out, std::vector<int>& lo, std::vector<int>& hi, std::vector<float>& d) {
    const float sc = static_cast<float>(static_cast<double>(n_in) / n_out);
    lo.resize(n_out), hi.resize(n_out), d.resize(n_out);
    for (int i = 0; i < n_out; i++) {
      float g = static_cast<float>(i) * sc;
      lo[i] = static_cast<int>(g);
      hi[i] = std::min(lo[i] + 1, n_in - 1);
      d[i] = g - static_cast<float>(lo[i]);
    }
  };
  std::vector<int> ylo, yhi, xlo, xhi;
  std::vector<float> dy, dx;
  grid(H, oh, ylo, yhi, dy);
  grid(W, ow, xlo, xhi, dx);
  const int64_t plane = static_cast<int64_t>(oh) * ow;
  parallel_for(resolve_threads(threads), static_cast<int64_t>(B) * oh, 16, [&](int64_t s, int64_t e) {
    for (int64_t r = s; r < e; r++) {
      const int64_t b = r / oh;
      const int oy = static_cast<int>(r % oh);
      const uint8_t* top = in + ((b * H + ylo[oy]) * W) * 3;
      const uint8_t* bot = in + ((b * H + yhi[oy]) * W) * 3;
      for (int c = 0; c < 3; c++) {
        float* o = out + (b * 3 + c) * plane + static_cast<int64_t>(oy) * ow;
        for (int ox = 0; ox < ow; ox++) {
          const float t00 = top[xlo[ox] * 3 + c], t01 = top[xhi[ox] * 3 + c];
          const float b00 = bot[xlo[ox] * 3 + c], b01 = bot[xhi[ox] * 3 + c];
          const float t = t00 + (t01 - t00) * dx[ox];
          const float bt = b00 + (b01 - b00) * dx[ox];
          const float v = t + (bt - t) * dy[oy];
          o[ox] = (v - shift) / scale;
        }
      }
    }
  });
}

struct InceptionV3::Impl {
  Backend* be;
  int threads;
  std::vector<ConvLayer> layers;
  std::map<std::string, size_t> by_name;
  std::vector<float> fc_w, fc_b;  // staging (1008, 2048), (1008)
  Weight fc;
  bool done = false;

  // workspace
  int ws_batch = 0;
  float* ping = nullptr;
  float* pong = nullptr;
  Arena arena;
  std::vector<float> host_in;  // the resized, normalised batch before upload

  Impl(Backend* b, int t) : be(b), threads(resolve_threads(t)) { build(); }

  ~Impl() {
    auto release = [&](const void* p) {
      if (p) be->free(const_cast<void*>(p));
    };
    for (auto& L : layers) release(L.w.data), release(L.bias);
    release(fc.data);
    release(ping), release(pong), release(arena.base);
  }

  void add(const std::string& name, int cin, int cout, int kh, int kw, int stride = 1, int ph = 0, int pw = 0) {
    ConvLayer L;
    L.name = name;
    L.cin = cin, L.cout = cout, L.kh = kh, L.kw = kw, L.sh = stride, L.sw = stride, L.ph = ph, L.pw = pw;
    by_name[name] = layers.size();
    layers.push_back(std::move(L));
  }

  // The layer table, in the order of the PyTorch module (torch-fidelity's names).
  void build() {
    add("Conv2d_1a_3x3", 3, 32, 3, 3, 2);
    add("Conv2d_2a_3x3", 32, 32, 3, 3);
    add("Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1);
    add("Conv2d_3b_1x1", 64, 80, 1, 1);
    add("Conv2d_4a_3x3", 80, 192, 3, 3);
    auto A = [&](const std::string& p, int cin, int pool) {
      add(p + ".branch1x1", cin, 64, 1, 1);
      add(p + ".branch5x5_1", cin, 48, 1, 1);
      add(p + ".branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
      add(p + ".branch3x3dbl_1", cin, 64, 1, 1);
      add(p + ".branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
      add(p + ".branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
      add(p + ".branch_pool", cin, pool, 1, 1);
    };
    A("Mixed_5b", 192, 32);
    A("Mixed_5c", 256, 64);
    A("Mixed_5d", 288, 64);
    add("Mixed_6a.branch3x3", 288, 384, 3, 3, 2);
    add("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1);
    add("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    add("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3, 2);
    auto C = [&](const std::string& p, int c7) {
      add(p + ".branch1x1", 768, 192, 1, 1);
      add(p + ".branch7x7_1", 768, c7, 1, 1);
      add(p + ".branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
      add(p + ".branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
      add(p + ".branch7x7dbl_1", 768, c7, 1, 1);
      add(p + ".branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
      add(p + ".branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
      add(p + ".branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
      add(p + ".branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
      add(p + ".branch_pool", 768, 192, 1, 1);
    };
    C("Mixed_6b", 128);
    C("Mixed_6c", 160);
    C("Mixed_6d", 160);
    C("Mixed_6e", 192);
    add("Mixed_7a.branch3x3_1", 768, 192, 1, 1);
    add("Mixed_7a.branch3x3_2", 192, 320, 3, 3, 2);
    add("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1);
    add("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
    add("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
    add("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3, 2);
    auto E = [&](const std::string& p, int cin) {
      add(p + ".branch1x1", cin, 320, 1, 1);
      add(p + ".branch3x3_1", cin, 384, 1, 1);
      add(p + ".branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
      add(p + ".branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
      add(p + ".branch3x3dbl_1", cin, 448, 1, 1);
      add(p + ".branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
      add(p + ".branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
      add(p + ".branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
      add(p + ".branch_pool", cin, 192, 1, 1);
    };
    E("Mixed_7b", 1280);
    E("Mixed_7c", 2048);
  }

  const ConvLayer& layer(const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail("internal error: no layer " + name);
    return layers[it->second];
  }

  // ---------------- weights ----------------

  void set_weight(const std::string& name, const float* data, const std::vector<int64_t>& shape) {
    if (done) fail("set_weight(" + name + ") after finalize()");
    if (name.size() > 20 && name.compare(name.size() - 20, 20, ".num_batches_tracked") == 0) return;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    auto check = [&](const std::vector<int64_t>& want) {
      if (shape != want)
        fail("weight " + name + ": expected shape " + shape_str(want) + " but received " + shape_str(shape));
    };
    if (name == "fc.weight") {
      check({kInceptionLogits, kInceptionPool3});
      fc_w.assign(data, data + n);
      return;
    }
    if (name == "fc.bias") {
      check({kInceptionLogits});
      fc_b.assign(data, data + n);
      return;
    }
    for (int s = 0; s < 5; s++) {
      const std::string suf = std::string(".") + kParamSuffix[s];
      if (name.size() <= suf.size() || name.compare(name.size() - suf.size(), suf.size(), suf) != 0) continue;
      auto it = by_name.find(name.substr(0, name.size() - suf.size()));
      if (it == by_name.end()) break;
      ConvLayer& L = layers[it->second];
      check(s == 0 ? std::vector<int64_t>{L.cout, L.cin, L.kh, L.kw} : std::vector<int64_t>{L.cout});
      L.host[s].assign(data, data + n);
      return;
    }
    fail("unexpected weight " + name + " (not a key of pt_inception-2015-12-05-6726825d.pth)");
  }

  void finalize() {
    if (done) return;
    std::vector<std::string> missing;
    for (auto& L : layers)
      for (int s = 0; s < 5; s++)
        if (L.host[s].empty()) missing.push_back(L.name + "." + kParamSuffix[s]);
    if (fc_w.empty()) missing.push_back("fc.weight");
    if (!missing.empty()) {
      std::string msg = std::to_string(missing.size()) + " missing weight" + (missing.size() > 1 ? "s" : "") + ": ";
      for (size_t i = 0; i < missing.size() && i < 8; i++) msg += (i ? ", " : "") + missing[i];
      if (missing.size() > 8) msg += ", ...";
      fail(msg);
    }
    // Fold BN: w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps), in float64.
    for (auto& L : layers) {
      const int64_t per = static_cast<int64_t>(L.cin) * L.kh * L.kw;
      std::vector<float> w(L.host[0].size()), b(L.cout);
      for (int o = 0; o < L.cout; o++) {
        double s = static_cast<double>(L.host[1][o]) / std::sqrt(static_cast<double>(L.host[4][o]) + kBnEps);
        for (int64_t i = 0; i < per; i++) w[o * per + i] = static_cast<float>(static_cast<double>(L.host[0][o * per + i]) * s);
        b[o] = static_cast<float>(static_cast<double>(L.host[2][o]) - static_cast<double>(L.host[3][o]) * s);
      }
      L.w = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F32);
      L.bias = static_cast<float*>(be->alloc(b.size() * 4));
      be->upload(L.bias, b.data(), b.size() * 4);
      for (auto& h : L.host) std::vector<float>().swap(h);
    }
    fc = be->upload_weight(fc_w.data(), static_cast<int64_t>(fc_w.size()), DType::F32);
    std::vector<float>().swap(fc_w);
    done = true;
  }

  // ---------------- forward ----------------

  struct Pass {
    Impl& m;
    int B;
    bool dry;
    Arena& ar;

    Backend* be() const { return m.be; }

    // Conv + folded BN (as conv bias); ReLU is applied by the caller's choice of op.
    Act conv_raw(const std::string& name, const Act& x, float* out) {
      const ConvLayer& L = m.layer(name);
      if (x.C != L.cin) fail("internal error: " + name + " takes " + std::to_string(L.cin) + " channels, got " + std::to_string(x.C));
      Act y{out, L.cout, (x.H + 2 * L.ph - L.kh) / L.sh + 1, (x.W + 2 * L.pw - L.kw) / L.sw + 1};
      if (!y.p) y.p = ar.get(B * y.per_image());
      if (!dry)
        be()->conv2d(y.p, x.p, L.w, L.bias, B, L.cin, x.H, x.W, L.cout, L.kh, L.kw, L.sh, L.sw, L.ph, L.pw);
      return y;
    }

    // BasicConv2d: conv + BN + ReLU into `out` (null: the arena).
    Act conv(const std::string& name, const Act& x, float* out = nullptr) {
      Act y = conv_raw(name, x, out);
      if (!dry) {
        HostView v(be(), y.p, B * y.per_image(), true);
        relu_inplace(v.data(), B * y.per_image(), m.threads);
        v.commit();
      }
      return y;
    }

    // Copies t (B, C, H, W) into channels [coff, coff + C) of dst, applying ReLU when
    // `relu`: fused in one pass on the CPU; on a GPU, ReLU through the host and one
    // device copy per image (never the whole concat buffer through the host).
    void into_channels(const Act& dst, int coff, const Act& t, bool relu) {
      if (t.H != dst.H || t.W != dst.W || coff + t.C > dst.C) fail("internal error: concat shapes");
      if (dry) return;
      if (!be()->is_gpu()) {
        relu_into_channels(dst.p, dst.C, coff, t.p, B, t.C, t.plane(), m.threads);  // ReLU is a no-op on pooled ReLU outputs
        return;
      }
      if (relu) {
        HostView v(be(), t.p, B * t.per_image(), true);
        relu_inplace(v.data(), B * t.per_image(), m.threads);
        v.commit();
      }
      for (int b = 0; b < B; b++)
        be()->copy(dst.p + (static_cast<int64_t>(b) * dst.C + coff) * dst.plane(), t.p + b * t.per_image(), static_cast<size_t>(t.per_image()) * 4);
    }

    // BasicConv2d whose output is channels [coff, coff + Cout) of `dst`.
    void conv_into(const Act& dst, int coff, const std::string& name, const Act& x) {
      int64_t mk = ar.mark();
      Act t = conv_raw(name, x, nullptr);
      into_channels(dst, coff, t, true);
      ar.release(mk);
    }

    Act maxpool(const Act& x, int stride, int pad, float* out) {
      Act y{out, x.C, (x.H + 2 * pad - 3) / stride + 1, (x.W + 2 * pad - 3) / stride + 1};
      if (!y.p) y.p = ar.get(B * y.per_image());
      if (!dry) {
        HostView in(be(), x.p, B * x.per_image(), true), o(be(), y.p, B * y.per_image(), false);
        maxpool3x3(o.data(), in.data(), B, x.C, x.H, x.W, stride, pad, m.threads);
        o.commit();
      }
      return y;
    }

    // Max pool into channels [coff, coff + C) of dst (InceptionB/D's pool branch).
    void maxpool_into(const Act& dst, int coff, const Act& x) {
      int64_t mk = ar.mark();
      into_channels(dst, coff, maxpool(x, 2, 0, nullptr), false);
      ar.release(mk);
    }

    Act avgpool(const Act& x) {
      Act y{ar.get(B * x.per_image()), x.C, x.H, x.W};
      if (!dry) {
        HostView in(be(), x.p, B * x.per_image(), true), o(be(), y.p, B * y.per_image(), false);
        avgpool3x3_exclude_pad(o.data(), in.data(), B, x.C, x.H, x.W, m.threads);
        o.commit();
      }
      return y;
    }

    Act block_a(const std::string& p, const Act& x, int pool, float* out) {
      Act y{out, 224 + pool, x.H, x.W};
      int64_t mk = ar.mark();
      conv_into(y, 0, p + ".branch1x1", x);
      conv_into(y, 64, p + ".branch5x5_2", conv(p + ".branch5x5_1", x));
      conv_into(y, 128, p + ".branch3x3dbl_3", conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x)));
      conv_into(y, 224, p + ".branch_pool", avgpool(x));
      ar.release(mk);
      return y;
    }

    Act block_b(const std::string& p, const Act& x, float* out) {
      Act y{out, 384 + 96 + x.C, (x.H - 3) / 2 + 1, (x.W - 3) / 2 + 1};
      int64_t mk = ar.mark();
      conv_into(y, 0, p + ".branch3x3", x);
      conv_into(y, 384, p + ".branch3x3dbl_3", conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x)));
      maxpool_into(y, 480, x);
      ar.release(mk);
      return y;
    }

    Act block_c(const std::string& p, const Act& x, float* out) {
      Act y{out, 768, x.H, x.W};
      int64_t mk = ar.mark();
      conv_into(y, 0, p + ".branch1x1", x);
      conv_into(y, 192, p + ".branch7x7_3", conv(p + ".branch7x7_2", conv(p + ".branch7x7_1", x)));
      Act d = conv(p + ".branch7x7dbl_1", x);
      d = conv(p + ".branch7x7dbl_2", d);
      d = conv(p + ".branch7x7dbl_3", d);
      conv_into(y, 384, p + ".branch7x7dbl_5", conv(p + ".branch7x7dbl_4", d));
      conv_into(y, 576, p + ".branch_pool", avgpool(x));
      ar.release(mk);
      return y;
    }

    Act block_d(const std::string& p, const Act& x, float* out) {
      Act y{out, 320 + 192 + x.C, (x.H - 3) / 2 + 1, (x.W - 3) / 2 + 1};
      int64_t mk = ar.mark();
      conv_into(y, 0, p + ".branch3x3_2", conv(p + ".branch3x3_1", x));
      Act d = conv(p + ".branch7x7x3_1", x);
      d = conv(p + ".branch7x7x3_2", d);
      conv_into(y, 320, p + ".branch7x7x3_4", conv(p + ".branch7x7x3_3", d));
      maxpool_into(y, 512, x);
      ar.release(mk);
      return y;
    }

    // max_pool_branch: Mixed_7c (the TF graph max-pools there; Mixed_7b averages).
    Act block_e(const std::string& p, const Act& x, bool max_pool_branch, float* out) {
      Act y{out, 2048, x.H, x.W};
      int64_t mk = ar.mark();
      conv_into(y, 0, p + ".branch1x1", x);
      Act t = conv(p + ".branch3x3_1", x);
      conv_into(y, 320, p + ".branch3x3_2a", t);
      conv_into(y, 704, p + ".branch3x3_2b", t);
      Act d = conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x));
      conv_into(y, 1088, p + ".branch3x3dbl_3a", d);
      conv_into(y, 1472, p + ".branch3x3dbl_3b", d);
      conv_into(y, 1856, p + ".branch_pool", max_pool_branch ? maxpool(x, 1, 1, nullptr) : avgpool(x));
      ar.release(mk);
      return y;
    }

    // x: the normalised input (B, 3, 299, 299) in ping. Writes host outputs when not dry.
    void run(float* pool3, float* spatial, float* logits) {
      static float dry_marker[1];  // a dry run must not take the ping-pong outputs from the arena
      float* P = dry ? dry_marker : m.ping;
      float* Q = dry ? dry_marker : m.pong;
      Act x{P, 3, kInceptionSize, kInceptionSize};
      x = conv("Conv2d_1a_3x3", x, Q);  // 32 x 149 x 149
      x = conv("Conv2d_2a_3x3", x, P);  // 32 x 147 x 147
      x = conv("Conv2d_2b_3x3", x, Q);  // 64 x 147 x 147
      x = maxpool(x, 2, 0, P);          // 64 x 73 x 73
      x = conv("Conv2d_3b_1x1", x, Q);  // 80 x 73 x 73
      x = conv("Conv2d_4a_3x3", x, P);  // 192 x 71 x 71
      x = maxpool(x, 2, 0, Q);          // 192 x 35 x 35
      x = block_a("Mixed_5b", x, 32, P);  // 256 x 35 x 35
      x = block_a("Mixed_5c", x, 64, Q);  // 288 x 35 x 35
      x = block_a("Mixed_5d", x, 64, P);  // 288 x 35 x 35
      x = block_b("Mixed_6a", x, Q);      // 768 x 17 x 17
      x = block_c("Mixed_6b", x, P);
      x = block_c("Mixed_6c", x, Q);
      x = block_c("Mixed_6d", x, P);  // channels 0..191 = Mixed_6d.branch1x1 after BN+ReLU
      if (!dry && spatial) {
        HostView v(be(), x.p, B * x.per_image(), true);
        const float* s = v.data();
        for (int b = 0; b < B; b++)
          for (int64_t hw = 0; hw < x.plane(); hw++)
            for (int c = 0; c < 7; c++)
              spatial[(b * x.plane() + hw) * 7 + c] = s[(static_cast<int64_t>(b) * x.C + c) * x.plane() + hw];
      }
      x = block_c("Mixed_6e", x, Q);        // 768 x 17 x 17
      x = block_d("Mixed_7a", x, P);        // 1280 x 8 x 8
      x = block_e("Mixed_7b", x, false, Q);  // 2048 x 8 x 8
      x = block_e("Mixed_7c", x, true, P);   // 2048 x 8 x 8
      float* pooled = ar.get(static_cast<int64_t>(B) * kInceptionPool3);  // (B, 2048)
      float* lg = ar.get(static_cast<int64_t>(B) * kInceptionLogits);     // (B, 1008)
      if (dry) return;
      {
        HostView in(be(), x.p, B * x.per_image(), true), o(be(), pooled, static_cast<int64_t>(B) * kInceptionPool3, false);
        global_avgpool(o.data(), in.data(), B, x.C, x.plane(), m.threads);
        o.commit();
      }
      if (pool3) be()->download(pool3, pooled, static_cast<size_t>(B) * kInceptionPool3 * 4);
      if (logits) {
        be()->linear(lg, pooled, m.fc, nullptr, B, kInceptionLogits, kInceptionPool3);
        be()->download(logits, lg, static_cast<size_t>(B) * kInceptionLogits * 4);
      }
    }
  };

  void ensure_workspace(int B) {
    if (B <= ws_batch) return;
    Arena probe;
    probe.dry = true;
    Pass{*this, B, true, probe}.run(nullptr, nullptr, nullptr);
    auto release = [&](float*& p) {
      if (p) be->free(p);
      p = nullptr;
    };
    release(ping), release(pong), release(arena.base);
    ws_batch = 0;
    const size_t act = static_cast<size_t>(B) * kMaxActivation * 4;
    ping = static_cast<float*>(be->alloc(act));
    pong = static_cast<float*>(be->alloc(act));
    arena.base = static_cast<float*>(be->alloc(static_cast<size_t>(probe.peak) * 4));
    arena.cap = probe.peak;
    ws_batch = B;
  }

  void forward(float* pool3, float* spatial, float* logits, const uint8_t* images, int B, int H, int W) {
    if (!done) fail("forward() before finalize()");
    if (B < 1 || H < 1 || W < 1)
      fail("forward: expected images (B, H, W, 3) with B, H, W >= 1 but received (" + std::to_string(B) + ", " +
           std::to_string(H) + ", " + std::to_string(W) + ", 3)");
    ensure_workspace(B);
    const int64_t n_in = static_cast<int64_t>(B) * 3 * kInceptionSize * kInceptionSize;
    float* dst = ping;
    if (be->is_gpu()) {
      host_in.resize(static_cast<size_t>(n_in));
      dst = host_in.data();
    }
    tf1_resize_bilinear(dst, images, B, H, W, kInceptionSize, kInceptionSize, 128.f, 128.f, threads);
    if (be->is_gpu()) be->upload(ping, host_in.data(), static_cast<size_t>(n_in) * 4);
    arena.top = 0;
    Pass{*this, B, false, arena}.run(pool3, spatial, logits);
    be->synchronize();
  }
};

InceptionV3::InceptionV3(Backend* be, int threads) : impl_(new Impl(be, threads)) {}
InceptionV3::~InceptionV3() = default;

std::vector<std::pair<std::string, std::vector<int64_t>>> InceptionV3::weight_shapes() {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  Impl tmp(nullptr, 1);
  for (auto& L : tmp.layers) {
    out.push_back({L.name + ".conv.weight", {L.cout, L.cin, L.kh, L.kw}});
    for (int s = 1; s < 5; s++) out.push_back({L.name + "." + kParamSuffix[s], {L.cout}});
  }
  out.push_back({"fc.weight", {kInceptionLogits, kInceptionPool3}});
  out.push_back({"fc.bias", {kInceptionLogits}});
  return out;
}

void InceptionV3::set_weight(const std::string& name, const float* data, const std::vector<int64_t>& shape) {
  impl_->set_weight(name, data, shape);
}
void InceptionV3::finalize() { impl_->finalize(); }
bool InceptionV3::finalized() const { return impl_->done; }
void InceptionV3::forward(float* pool3, float* spatial, float* logits, const uint8_t* images, int B, int H, int W) {
  impl_->forward(pool3, spatial, logits, images, B, H, W);
}
Backend* InceptionV3::backend() const { return impl_->be; }

}  // namespace rargen
