#include "model/vqgan.h"

#include <algorithm>
#include <string>
#include <utility>

namespace rargen {

namespace {
constexpr float kEps = 1e-6f;
constexpr int kGroups = 32;
}  // namespace

Vq::Vq(Backend* be, const VqConfig& cfg) : be_(be), cfg_(cfg), params_(be, DType::F32, "MaskGIT-VQGAN") {
  const int L = cfg.levels();
  if (L < 1 || cfg.hidden <= 0 || cfg.z <= 0 || cfg.codebook <= 0 || cfg.num_res_blocks < 1)
    throw Error("rargen: bad VQGAN config");
  if (cfg.resolution % (1 << (L - 1)))
    throw Error("rargen: bad VQGAN config: resolution " + std::to_string(cfg.resolution) + " is not divisible by 2^" +
                std::to_string(L - 1));
  for (int m : cfg.mult)
    if (m <= 0 || (cfg.hidden * m) % kGroups) throw Error("rargen: bad VQGAN config: channels must be multiples of 32");
  // Every tensor of the table, bound to its slot by id (model/vqgan_params.h).
  w_.enc_down.assign(L, std::vector<VqResBlock>(cfg.num_res_blocks));
  w_.enc_mid.resize(cfg.num_res_blocks);
  w_.dec_mid.resize(cfg.num_res_blocks);
  w_.dec_up.assign(L, std::vector<VqResBlock>(cfg.num_res_blocks));
  w_.dec_upsample_conv.resize(L);
  w_.dec_upsample_conv_b.resize(L, nullptr);
  for (const ParamSpec& p : vq_param_table(cfg)) {
    VqResBlock* b = nullptr;
    switch (static_cast<VqPart>(p.part)) {
      case VqPart::EncDown: b = &w_.enc_down[p.level][p.block]; break;
      case VqPart::EncMid: b = &w_.enc_mid[p.block]; break;
      case VqPart::DecMid: b = &w_.dec_mid[p.block]; break;
      case VqPart::DecUp: b = &w_.dec_up[p.level][p.block]; break;
    }
    Weight* m = nullptr;
    const float** v = nullptr;
    switch (static_cast<VqParam>(p.id)) {
      case VqParam::EncConvIn: m = &w_.enc_conv_in; break;
      case VqParam::EncNormOutW: v = &w_.enc_norm_w; break;
      case VqParam::EncNormOutB: v = &w_.enc_norm_b; break;
      case VqParam::EncConvOutW: m = &w_.enc_conv_out; break;
      case VqParam::EncConvOutB: v = &w_.enc_conv_out_b; break;
      case VqParam::DecConvInW: m = &w_.dec_conv_in; break;
      case VqParam::DecConvInB: v = &w_.dec_conv_in_b; break;
      case VqParam::UpsampleW: m = &w_.dec_upsample_conv[p.level]; break;
      case VqParam::UpsampleB: v = &w_.dec_upsample_conv_b[p.level]; break;
      case VqParam::DecNormOutW: v = &w_.dec_norm_w; break;
      case VqParam::DecNormOutB: v = &w_.dec_norm_b; break;
      case VqParam::DecConvOutW: m = &w_.dec_conv_out; break;
      case VqParam::DecConvOutB: v = &w_.dec_conv_out_b; break;
      case VqParam::Codebook: v = &w_.codebook; break;
      case VqParam::ResNorm1W: v = &b->norm1_w; break;
      case VqParam::ResNorm1B: v = &b->norm1_b; break;
      case VqParam::ResConv1:
        m = &b->conv1;
        b->cout = static_cast<int>(p.shape[0]);  // (cout, cin, 3, 3)
        b->cin = static_cast<int>(p.shape[1]);
        break;
      case VqParam::ResNorm2W: v = &b->norm2_w; break;
      case VqParam::ResNorm2B: v = &b->norm2_b; break;
      case VqParam::ResConv2: m = &b->conv2; break;
      case VqParam::ResNin: m = &b->nin; break;
    }
    // Convolution weights go through the matrix path (the model's dtype: F32 here).
    if ((p.kind == ParamKind::Conv) != (m != nullptr))
      throw Error("rargen: internal: VQGAN parameter " + p.name + " has kind " + param_kind_name(p.kind) +
                  " but binds to a " + (m ? "matrix" : "vector") + " slot");
    if (!m && !v) throw Error("rargen: internal: VQGAN parameter " + p.name + " has no slot");
    if (m) params_.matrix(p.name, p.shape, m);
    else params_.vector(p.name, p.shape, v);
  }
}

int64_t Vq::max_activation() const {
  const int L = cfg_.levels();
  int64_t best = static_cast<int64_t>(std::max(3, cfg_.z)) * cfg_.resolution * cfg_.resolution;
  for (int i = 0; i < L; i++) {
    int64_t side = cfg_.resolution >> i;
    int c = cfg_.hidden * std::max({cfg_.mult[std::max(i - 1, 0)], cfg_.mult[i], cfg_.mult[std::min(i + 1, L - 1)]});
    c = std::max(c, cfg_.hidden);
    best = std::max(best, static_cast<int64_t>(c) * side * side);
  }
  return best;
}

void Vq::conv3x3(float* out, const float* inp, Weight w, const float* bias, int cin, int cout, int H, int W) {
  be_->conv2d(out, inp, w, bias, 1, cin, H, W, cout, 3, 3, 1, 1, 1, 1);
}

void Vq::res_block(const VqResBlock& b, float* x, int H, int W, float* t1, float* t2) {
  // norm1+SiLU -> conv1 -> norm2+SiLU -> conv2 (+ x), each conv with its input's
  // GroupNorm (and the residual) fused in (Backend::conv3x3_fused).
  be_->conv3x3_fused(t2, x, b.conv1, nullptr, 1, b.cin, H, W, b.cout, b.norm1_w, b.norm1_b, kGroups, kEps, true, false,
                     nullptr);
  if (b.cin != b.cout) {
    const int64_t HW = static_cast<int64_t>(H) * W;
    be_->conv3x3_fused(t1, t2, b.conv2, nullptr, 1, b.cout, H, W, b.cout, b.norm2_w, b.norm2_b, kGroups, kEps, true,
                       false, nullptr);                                                  // h
    be_->conv2d(t2, t1, b.nin, nullptr, 1, b.cout, H, W, b.cout, 1, 1, 1, 1, 0, 0);  // nin_shortcut(h)
    be_->add(x, t1, t2, b.cout * HW);
  } else {
    be_->conv3x3_fused(x, t2, b.conv2, nullptr, 1, b.cout, H, W, b.cout, b.norm2_w, b.norm2_b, kGroups, kEps, true,
                       false, x);  // x += h
  }
}

std::vector<float> Vq::decode(const int32_t* tokens, int B) {
  const int L = cfg_.levels(), g = cfg_.grid(), R = cfg_.resolution;
  const int64_t cap = max_activation(), HWg = static_cast<int64_t>(g) * g;
  DeviceBuffer<float> x(be_, cap), t1(be_, cap), t2(be_, cap);
  DeviceBuffer<int32_t> tok(be_, HWg);
  std::vector<float> out(static_cast<size_t>(B) * 3 * R * R);
  const int top = cfg_.hidden * cfg_.mult[L - 1];
  for (int b = 0; b < B; b++) {
    be_->upload(tok.get(), tokens + b * HWg, HWg * 4);
    be_->codebook_lookup(t1.get(), tok.get(), w_.codebook, 1, cfg_.z, HWg);  // (z, g, g)
    int H = g, C = top;
    conv3x3(x.get(), t1.get(), w_.dec_conv_in, w_.dec_conv_in_b, cfg_.z, C, H, H);
    for (const auto& rb : w_.dec_mid) res_block(rb, x.get(), H, H, t1.get(), t2.get());
    for (int i = L - 1; i >= 0; i--) {
      for (const auto& rb : w_.dec_up[i]) {
        res_block(rb, x.get(), H, H, t1.get(), t2.get());
        C = rb.cout;
      }
      if (i != 0) {  // nearest-2x upsample fused into upsample_conv; the result lands in t1
        H *= 2;
        be_->conv3x3_fused(t1.get(), x.get(), w_.dec_upsample_conv[i], w_.dec_upsample_conv_b[i], 1, C, H, H, C,
                           nullptr, nullptr, kGroups, kEps, false, true, nullptr);
        std::swap(x, t1);
      }
    }
    be_->conv3x3_fused(t2.get(), x.get(), w_.dec_conv_out, w_.dec_conv_out_b, 1, C, H, H, 3, w_.dec_norm_w,
                       w_.dec_norm_b, kGroups, kEps, true, false, nullptr);
    be_->synchronize();
    be_->download(out.data() + static_cast<size_t>(b) * 3 * R * R, t2.get(), static_cast<size_t>(3) * R * R * 4);
  }
  return out;
}

void Vq::encode(const float* pixels, int B, std::vector<float>& latents, std::vector<int32_t>& tokens) {
  const int L = cfg_.levels(), g = cfg_.grid(), R = cfg_.resolution;
  const int64_t cap = max_activation(), HWg = static_cast<int64_t>(g) * g;
  DeviceBuffer<float> x(be_, cap), t1(be_, cap), t2(be_, cap);
  DeviceBuffer<int32_t> tok(be_, HWg);
  latents.assign(static_cast<size_t>(B) * cfg_.z * HWg, 0.f);
  tokens.assign(static_cast<size_t>(B) * HWg, 0);
  const int top = cfg_.hidden * cfg_.mult[L - 1];
  for (int b = 0; b < B; b++) {
    be_->upload(t1.get(), pixels + static_cast<size_t>(b) * 3 * R * R, static_cast<size_t>(3) * R * R * 4);
    int H = R, C = cfg_.hidden;
    conv3x3(x.get(), t1.get(), w_.enc_conv_in, nullptr, 3, C, H, H);
    for (int i = 0; i < L; i++) {
      for (const auto& rb : w_.enc_down[i]) {
        res_block(rb, x.get(), H, H, t1.get(), t2.get());
        C = rb.cout;
      }
      if (i != L - 1) {
        be_->avgpool2x2(t1.get(), x.get(), 1, C, H, H);
        H /= 2;
        be_->copy(x.get(), t1.get(), static_cast<size_t>(C) * H * H * 4);
      }
    }
    for (const auto& rb : w_.enc_mid) res_block(rb, x.get(), H, H, t1.get(), t2.get());
    be_->groupnorm(t1.get(), x.get(), w_.enc_norm_w, w_.enc_norm_b, 1, top, HWg, kGroups, kEps, true);
    be_->conv2d(t2.get(), t1.get(), w_.enc_conv_out, w_.enc_conv_out_b, 1, top, H, H, cfg_.z, 1, 1, 1, 1, 0, 0);
    be_->codebook_nearest(tok.get(), t2.get(), w_.codebook, 1, cfg_.z, HWg, cfg_.codebook);
    be_->synchronize();
    be_->download(latents.data() + static_cast<size_t>(b) * cfg_.z * HWg, t2.get(), static_cast<size_t>(cfg_.z) * HWg * 4);
    be_->download(tokens.data() + static_cast<size_t>(b) * HWg, tok.get(), HWg * 4);
  }
}

}  // namespace rargen
