#include "model/vqgan_params.h"

#include <string>

namespace rargen {

std::vector<ParamSpec> vq_param_table(const VqConfig& c) {
  const int64_t L = c.levels(), H = c.hidden, Z = c.z;
  const int64_t top = H * c.mult[L - 1], c0 = H * c.mult[0];
  std::vector<ParamSpec> t;
  using K = ParamKind;
  using P = VqParam;
  auto add = [&](std::string name, std::vector<int64_t> shape, K kind, P id, VqPart part = VqPart::EncDown,
                 int level = -1, int block = -1, bool in_block = false) {
    const ParamInit init = kind == K::NormWeight ? ParamInit::Ones
                           : (kind == K::NormBias || kind == K::Bias) ? ParamInit::Zeros
                                                                      : ParamInit::TruncNormal;
    ParamSpec s{std::move(name), std::move(shape), kind, init, false, static_cast<int>(id), block};
    s.decayed = official_weight_decay(s.name, s.shape);
    s.level = level;
    s.part = in_block ? static_cast<int>(part) : -1;
    t.push_back(std::move(s));
  };
  // ResnetBlock(cin, cout); the shortcut maps h (already cout channels), hence (cout, cout).
  auto block = [&](const std::string& p, int64_t cin, int64_t cout, VqPart part, int level, int j) {
    add(p + ".norm1.weight", {cin}, K::NormWeight, P::ResNorm1W, part, level, j, true);
    add(p + ".norm1.bias", {cin}, K::NormBias, P::ResNorm1B, part, level, j, true);
    add(p + ".conv1.weight", {cout, cin, 3, 3}, K::Conv, P::ResConv1, part, level, j, true);
    add(p + ".norm2.weight", {cout}, K::NormWeight, P::ResNorm2W, part, level, j, true);
    add(p + ".norm2.bias", {cout}, K::NormBias, P::ResNorm2B, part, level, j, true);
    add(p + ".conv2.weight", {cout, cout, 3, 3}, K::Conv, P::ResConv2, part, level, j, true);
    if (cin != cout) add(p + ".nin_shortcut.weight", {cout, cout, 1, 1}, K::Conv, P::ResNin, part, level, j, true);
  };
  // Encoder: conv_in without bias; levels 0..L-1 from H*mult[i-1] (H for i = 0) to H*mult[i].
  add("encoder.conv_in.weight", {H, 3, 3, 3}, K::Conv, P::EncConvIn);
  int64_t cin = H;
  for (int i = 0; i < L; i++) {
    const int64_t cout = H * c.mult[i];
    for (int j = 0; j < c.num_res_blocks; j++) {
      block("encoder.down." + std::to_string(i) + ".block." + std::to_string(j), cin, cout, VqPart::EncDown, i, j);
      cin = cout;
    }
  }
  // The middles have num_res_blocks blocks too: maskgit_vqgan.py builds them with the levels' loop.
  for (int j = 0; j < c.num_res_blocks; j++) block("encoder.mid." + std::to_string(j), top, top, VqPart::EncMid, -1, j);
  add("encoder.norm_out.weight", {top}, K::NormWeight, P::EncNormOutW);
  add("encoder.norm_out.bias", {top}, K::NormBias, P::EncNormOutB);
  add("encoder.conv_out.weight", {Z, top, 1, 1}, K::Conv, P::EncConvOutW);
  add("encoder.conv_out.bias", {Z}, K::Bias, P::EncConvOutB);
  // Decoder: conv_in with bias; mid; the levels, each upsampled except level 0.
  add("decoder.conv_in.weight", {top, Z, 3, 3}, K::Conv, P::DecConvInW);
  add("decoder.conv_in.bias", {top}, K::Bias, P::DecConvInB);
  for (int j = 0; j < c.num_res_blocks; j++) block("decoder.mid." + std::to_string(j), top, top, VqPart::DecMid, -1, j);
  // Levels run L-1..0 in the forward pass, but maskgit_vqgan.py inserts each at the front
  // of `up`, so the state dict lists them 0..L-1; level i maps H*mult[i+1] (top for
  // i = L-1) to H*mult[i].
  for (int i = 0; i < L; i++) {
    const int64_t cout = H * c.mult[i];
    int64_t cin_i = i == L - 1 ? top : H * c.mult[i + 1];
    const std::string p = "decoder.up." + std::to_string(i);
    for (int j = 0; j < c.num_res_blocks; j++) {
      block(p + ".block." + std::to_string(j), cin_i, cout, VqPart::DecUp, i, j);
      cin_i = cout;
    }
    if (i != 0) {
      add(p + ".upsample_conv.weight", {cout, cout, 3, 3}, K::Conv, P::UpsampleW, VqPart::EncDown, i);
      add(p + ".upsample_conv.bias", {cout}, K::Bias, P::UpsampleB, VqPart::EncDown, i);
    }
  }
  add("decoder.norm_out.weight", {c0}, K::NormWeight, P::DecNormOutW);
  add("decoder.norm_out.bias", {c0}, K::NormBias, P::DecNormOutB);
  add("decoder.conv_out.weight", {3, c0, 3, 3}, K::Conv, P::DecConvOutW);
  add("decoder.conv_out.bias", {3}, K::Bias, P::DecConvOutB);
  add("quantize.embedding.weight", {c.codebook, Z}, K::Embedding, P::Codebook);
  return t;
}

}  // namespace rargen
