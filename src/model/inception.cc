// TF1-exact InceptionV3 for FID/sFID/IS (see inception.h for what and why).
//
// Built like the rest of src/model/: from its parameter table (model/inception_params.h:
// the layers, the keys and shapes) and on Backend ops only: conv2d (BatchNorm folded into
// weight and bias), relu, maxpool2d, avgpool2d (3x3 branch pools and the global pool),
// copy_channels (the concatenation of the branches, ReLU fused) and linear (fc). Only the
// TF1 bilinear resize of the uint8 input runs on the host, before the one upload.
//
// Memory: two ping-pong buffers hold block inputs/outputs (the largest activation,
// Conv2d_2b's 64x147x147 per image), and a stack arena the branch temporaries. The
// arena size comes from a dry run of forward() that allocates without computing.
#include "model/inception.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "cpu/threadpool.h"
#include "model/inception_params.h"

namespace rargen {

namespace {

constexpr double kBnEps = 1e-3;
constexpr int64_t kMaxActivation = 64LL * 147 * 147;  // per image, Conv2d_2b_3x3's output

[[noreturn]] void fail(const std::string& what) { throw Error("inception: " + what); }

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

// One BasicConv2d of the table, once finalized: the folded weight (cout, cin, kh, kw)
// and bias (cout) in backend memory.
struct ConvLayer {
  const InceptionConv* spec = nullptr;
  size_t entry[kInceptionConvParams] = {};  // table entries by InceptionParam (ConvWeight .. BnRunningVar)
  Weight w;
  float* bias = nullptr;
};

}  // namespace

void tf1_resize_bilinear(float* out, const uint8_t* in, int B, int H, int W, int oh, int ow, float shift,
                         float scale) {
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
  // Host-side by design: it reads the caller's uint8 images and only its float output is
  // uploaded (on the CPU backend's shared thread pool, as the CPU ops).
  cpu::global_pool().parallel_for(static_cast<int64_t>(B) * oh, 16, [&](int64_t s, int64_t e) {
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
  const std::vector<ParamSpec> table = inception_param_table();
  std::unordered_map<std::string, size_t> index;    // table entry by key
  std::vector<std::vector<float>> staging;          // host copies by table entry, until finalize()
  std::vector<ConvLayer> layers;                    // by inception_convs() index
  std::unordered_map<std::string, size_t> by_name;  // conv index by module name
  size_t fc_entry = 0;
  Weight fc;
  bool done = false;

  // workspace
  int ws_batch = 0;
  float* ping = nullptr;
  float* pong = nullptr;
  Arena arena;
  std::vector<float> host_in;  // the resized, normalised batch before upload
  std::vector<float> host_spatial;  // Mixed_6d channels 0..6 (B, 7, 17x17) before the channels-last reorder

  explicit Impl(Backend* b) : be(b), staging(table.size()) {
    const auto& convs = inception_convs();
    layers.resize(convs.size());
    for (size_t i = 0; i < convs.size(); i++) {
      layers[i].spec = &convs[i];
      by_name[convs[i].name] = i;
    }
    for (size_t e = 0; e < table.size(); e++) {
      const ParamSpec& p = table[e];
      index[p.name] = e;
      if (p.block >= 0) layers[p.block].entry[p.id] = e;
      else if (p.id == static_cast<int>(InceptionParam::FcWeight)) fc_entry = e;
    }
  }

  ~Impl() {
    auto release = [&](const void* p) {
      if (p) be->free(const_cast<void*>(p));
    };
    for (auto& L : layers) release(L.w.data), release(L.bias);
    release(fc.data);
    release(ping), release(pong), release(arena.base);
  }

  const ConvLayer& layer(const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail("internal error: no layer " + name);
    return layers[it->second];
  }

  // ---------------- weights ----------------

  void set_weight(const std::string& name, const float* data, const std::vector<int64_t>& shape) {
    if (done) fail("set_weight(" + name + ") after finalize()");
    auto it = index.find(name);
    if (it == index.end()) fail("unexpected weight " + name + " (not a key of pt_inception-2015-12-05-6726825d.pth)");
    const ParamSpec& p = table[it->second];
    if (shape != p.shape)
      fail("weight " + name + ": expected shape " + shape_str(p.shape) + " but received " + shape_str(shape));
    staging[it->second].assign(data, data + p.numel());
  }

  void finalize() {
    if (done) return;
    std::vector<std::string> missing;
    for (size_t e = 0; e < table.size(); e++)
      if (staging[e].empty()) missing.push_back(table[e].name);
    if (!missing.empty()) {
      std::string msg = std::to_string(missing.size()) + " missing weight" + (missing.size() > 1 ? "s" : "") + ": ";
      for (size_t i = 0; i < missing.size() && i < 8; i++) msg += (i ? ", " : "") + missing[i];
      if (missing.size() > 8) msg += ", ...";
      fail(msg);
    }
    // Fold BN: w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps), in float64.
    for (auto& L : layers) {
      const InceptionConv& c = *L.spec;
      auto host = [&](InceptionParam id) -> const std::vector<float>& { return staging[L.entry[static_cast<int>(id)]]; };
      const std::vector<float>& w0 = host(InceptionParam::ConvWeight);
      const std::vector<float>& g = host(InceptionParam::BnWeight);
      const std::vector<float>& beta = host(InceptionParam::BnBias);
      const std::vector<float>& mean = host(InceptionParam::BnRunningMean);
      const std::vector<float>& var = host(InceptionParam::BnRunningVar);
      const int64_t per = static_cast<int64_t>(c.cin) * c.kh * c.kw;
      std::vector<float> w(w0.size()), b(c.cout);
      for (int o = 0; o < c.cout; o++) {
        double s = static_cast<double>(g[o]) / std::sqrt(static_cast<double>(var[o]) + kBnEps);
        for (int64_t i = 0; i < per; i++) w[o * per + i] = static_cast<float>(static_cast<double>(w0[o * per + i]) * s);
        b[o] = static_cast<float>(static_cast<double>(beta[o]) - static_cast<double>(mean[o]) * s);
      }
      L.w = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F32);
      L.bias = static_cast<float*>(be->alloc(b.size() * 4));
      be->upload(L.bias, b.data(), b.size() * 4);
    }
    // fc.bias is checked and loaded but unused: the Inception Score takes pool3 @ fc.weight^T.
    const std::vector<float>& fc_w = staging[fc_entry];
    fc = be->upload_weight(fc_w.data(), static_cast<int64_t>(fc_w.size()), DType::F32);
    std::vector<std::vector<float>>().swap(staging);
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
      const InceptionConv& c = *m.layer(name).spec;
      if (x.C != c.cin) fail("internal error: " + name + " takes " + std::to_string(c.cin) + " channels, got " + std::to_string(x.C));
      Act y{out, c.cout, (x.H + 2 * c.ph - c.kh) / c.stride + 1, (x.W + 2 * c.pw - c.kw) / c.stride + 1};
      if (!y.p) y.p = ar.get(B * y.per_image());
      if (!dry) {
        const ConvLayer& L = m.layer(name);
        be()->conv2d(y.p, x.p, L.w, L.bias, B, c.cin, x.H, x.W, c.cout, c.kh, c.kw, c.stride, c.stride, c.ph, c.pw);
      }
      return y;
    }

    // BasicConv2d: conv + BN + ReLU into `out` (null: the arena).
    Act conv(const std::string& name, const Act& x, float* out = nullptr) {
      Act y = conv_raw(name, x, out);
      if (!dry) be()->relu(y.p, y.p, B * y.per_image());
      return y;
    }

    // Copies t (B, C, H, W) into channels [coff, coff + C) of dst, through ReLU when `relu`.
    void into_channels(const Act& dst, int coff, const Act& t, bool relu) {
      if (t.H != dst.H || t.W != dst.W || coff + t.C > dst.C) fail("internal error: concat shapes");
      if (!dry) be()->copy_channels(dst.p, dst.C, coff, t.p, t.C, 0, B, t.C, t.plane(), relu);
    }

    // BasicConv2d whose output is channels [coff, coff + Cout) of `dst`.
    void conv_into(const Act& dst, int coff, const std::string& name, const Act& x) {
      int64_t mk = ar.mark();
      into_channels(dst, coff, conv_raw(name, x, nullptr), true);
      ar.release(mk);
    }

    Act maxpool(const Act& x, int stride, int pad, float* out) {
      Act y{out, x.C, (x.H + 2 * pad - 3) / stride + 1, (x.W + 2 * pad - 3) / stride + 1};
      if (!y.p) y.p = ar.get(B * y.per_image());
      if (!dry) be()->maxpool2d(y.p, x.p, B, x.C, x.H, x.W, 3, stride, pad);
      return y;
    }

    // Max pool into channels [coff, coff + C) of dst (InceptionB/D's pool branch).
    void maxpool_into(const Act& dst, int coff, const Act& x) {
      int64_t mk = ar.mark();
      into_channels(dst, coff, maxpool(x, 2, 0, nullptr), false);
      ar.release(mk);
    }

    // 3x3, stride 1, pad 1, padded zeros not counted (TF's average pool).
    Act avgpool(const Act& x) {
      Act y{ar.get(B * x.per_image()), x.C, x.H, x.W};
      if (!dry) be()->avgpool2d(y.p, x.p, B, x.C, x.H, x.W, 3, 1, 1, false);
      return y;
    }

    // A Mixed block: `branches(y)` writes the branch outputs into channel ranges of
    // y (C, H, W) at `out`; their temporaries are freed after.
    template <class F>
    Act mixed(float* out, int C, int H, int W, F&& branches) {
      Act y{out, C, H, W};
      int64_t mk = ar.mark();
      branches(y);
      ar.release(mk);
      return y;
    }

    Act block_a(const std::string& p, const Act& x, int pool, float* out) {
      return mixed(out, 224 + pool, x.H, x.W, [&](const Act& y) {
        conv_into(y, 0, p + ".branch1x1", x);
        conv_into(y, 64, p + ".branch5x5_2", conv(p + ".branch5x5_1", x));
        conv_into(y, 128, p + ".branch3x3dbl_3", conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x)));
        conv_into(y, 224, p + ".branch_pool", avgpool(x));
      });
    }

    Act block_b(const std::string& p, const Act& x, float* out) {
      return mixed(out, 384 + 96 + x.C, (x.H - 3) / 2 + 1, (x.W - 3) / 2 + 1, [&](const Act& y) {
        conv_into(y, 0, p + ".branch3x3", x);
        conv_into(y, 384, p + ".branch3x3dbl_3", conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x)));
        maxpool_into(y, 480, x);
      });
    }

    Act block_c(const std::string& p, const Act& x, float* out) {
      return mixed(out, 768, x.H, x.W, [&](const Act& y) {
        conv_into(y, 0, p + ".branch1x1", x);
        conv_into(y, 192, p + ".branch7x7_3", conv(p + ".branch7x7_2", conv(p + ".branch7x7_1", x)));
        Act d = conv(p + ".branch7x7dbl_1", x);
        d = conv(p + ".branch7x7dbl_2", d);
        d = conv(p + ".branch7x7dbl_3", d);
        conv_into(y, 384, p + ".branch7x7dbl_5", conv(p + ".branch7x7dbl_4", d));
        conv_into(y, 576, p + ".branch_pool", avgpool(x));
      });
    }

    Act block_d(const std::string& p, const Act& x, float* out) {
      return mixed(out, 320 + 192 + x.C, (x.H - 3) / 2 + 1, (x.W - 3) / 2 + 1, [&](const Act& y) {
        conv_into(y, 0, p + ".branch3x3_2", conv(p + ".branch3x3_1", x));
        Act d = conv(p + ".branch7x7x3_1", x);
        d = conv(p + ".branch7x7x3_2", d);
        conv_into(y, 320, p + ".branch7x7x3_4", conv(p + ".branch7x7x3_3", d));
        maxpool_into(y, 512, x);
      });
    }

    // max_pool_branch: Mixed_7c (the TF graph max-pools there; Mixed_7b averages).
    Act block_e(const std::string& p, const Act& x, bool max_pool_branch, float* out) {
      return mixed(out, 2048, x.H, x.W, [&](const Act& y) {
        conv_into(y, 0, p + ".branch1x1", x);
        Act t = conv(p + ".branch3x3_1", x);
        conv_into(y, 320, p + ".branch3x3_2a", t);
        conv_into(y, 704, p + ".branch3x3_2b", t);
        Act d = conv(p + ".branch3x3dbl_2", conv(p + ".branch3x3dbl_1", x));
        conv_into(y, 1088, p + ".branch3x3dbl_3a", d);
        conv_into(y, 1472, p + ".branch3x3dbl_3b", d);
        conv_into(y, 1856, p + ".branch_pool", max_pool_branch ? maxpool(x, 1, 1, nullptr) : avgpool(x));
      });
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
      constexpr int kSpatialC = 7;    // sFID: its channels 0..6 (B, 7, 17x17), kept to the end
      float* sp = ar.get(static_cast<int64_t>(B) * kSpatialC * x.plane());
      if (!dry && spatial) be()->copy_channels(sp, kSpatialC, 0, x.p, x.C, 0, B, kSpatialC, x.plane(), false);
      const int64_t plane17 = x.plane();
      x = block_c("Mixed_6e", x, Q);        // 768 x 17 x 17
      x = block_d("Mixed_7a", x, P);        // 1280 x 8 x 8
      x = block_e("Mixed_7b", x, false, Q);  // 2048 x 8 x 8
      x = block_e("Mixed_7c", x, true, P);   // 2048 x 8 x 8
      if (x.H != x.W || x.C != kInceptionPool3) fail("internal error: the last block is not 2048 x n x n");
      float* pooled = ar.get(static_cast<int64_t>(B) * kInceptionPool3);  // (B, 2048)
      float* lg = ar.get(static_cast<int64_t>(B) * kInceptionLogits);     // (B, 1008)
      if (dry) return;
      be()->avgpool2d(pooled, x.p, B, x.C, x.H, x.W, x.H, 1, 0, true);  // the global average pool
      if (logits) be()->linear(lg, pooled, m.fc, nullptr, B, kInceptionLogits, kInceptionPool3);
      if (pool3) be()->download(pool3, pooled, static_cast<size_t>(B) * kInceptionPool3 * 4);
      if (logits) be()->download(logits, lg, static_cast<size_t>(B) * kInceptionLogits * 4);
      if (spatial) {  // (B, 7, HW) -> channels-last (B, HW, 7)
        std::vector<float>& s = m.host_spatial;
        s.resize(static_cast<size_t>(B) * kSpatialC * plane17);
        be()->download(s.data(), sp, s.size() * 4);
        for (int b = 0; b < B; b++)
          for (int64_t hw = 0; hw < plane17; hw++)
            for (int c = 0; c < kSpatialC; c++)
              spatial[(b * plane17 + hw) * kSpatialC + c] = s[(static_cast<int64_t>(b) * kSpatialC + c) * plane17 + hw];
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
    host_in.resize(static_cast<size_t>(n_in));
    tf1_resize_bilinear(host_in.data(), images, B, H, W, kInceptionSize, kInceptionSize, 128.f, 128.f);
    be->upload(ping, host_in.data(), static_cast<size_t>(n_in) * 4);
    arena.top = 0;
    Pass{*this, B, false, arena}.run(pool3, spatial, logits);
    be->synchronize();
  }
};

InceptionV3::InceptionV3(Backend* be) : impl_(new Impl(be)) {}
InceptionV3::~InceptionV3() = default;

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
