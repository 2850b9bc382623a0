#include "model/inception_params.h"

namespace rargen {

namespace {

// The layers in the order of the PyTorch modules (torchvision's Inception3 as pytorch-fid
// builds it, torch-fidelity's names): stem, Mixed_5b..5d (A), 6a (B), 6b..6e (C), 7a (D),
// 7b..7c (E).
std::vector<InceptionConv> build_convs() {
  std::vector<InceptionConv> t;
  auto add = [&](const std::string& name, int cin, int cout, int kh, int kw, int stride = 1, int ph = 0, int pw = 0) {
    t.push_back({name, cin, cout, kh, kw, stride, ph, pw});
  };
  add("Conv2d_1a_3x3", 3, 32, 3, 3, 2);
  add("Conv2d_2a_3x3", 32, 32, 3, 3);
  add("Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1);
  add("Conv2d_3b_1x1", 64, 80, 1, 1);
  add("Conv2d_4a_3x3", 80, 192, 3, 3);
  struct Block { const char* name; int c; int c2; };  // A: (cin, pool); C: (c7, -); E: (cin, -)
  for (const Block& k : {Block{"Mixed_5b", 192, 32}, Block{"Mixed_5c", 256, 64}, Block{"Mixed_5d", 288, 64}}) {
    const std::string b = std::string(k.name) + ".";
    const int cin = k.c, pool = k.c2;
    add(b + "branch1x1", cin, 64, 1, 1);
    add(b + "branch5x5_1", cin, 48, 1, 1);
    add(b + "branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    add(b + "branch3x3dbl_1", cin, 64, 1, 1);
    add(b + "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    add(b + "branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    add(b + "branch_pool", cin, pool, 1, 1);
  }
  add("Mixed_6a.branch3x3", 288, 384, 3, 3, 2);
  add("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1);
  add("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
  add("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3, 2);
  for (const Block& k : {Block{"Mixed_6b", 128, 0}, Block{"Mixed_6c", 160, 0}, Block{"Mixed_6d", 160, 0}, Block{"Mixed_6e", 192, 0}}) {
    const std::string b = std::string(k.name) + ".";
    const int c7 = k.c;
    add(b + "branch1x1", 768, 192, 1, 1);
    add(b + "branch7x7_1", 768, c7, 1, 1);
    add(b + "branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    add(b + "branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    add(b + "branch7x7dbl_1", 768, c7, 1, 1);
    add(b + "branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    add(b + "branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    add(b + "branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    add(b + "branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    add(b + "branch_pool", 768, 192, 1, 1);
  }
  add("Mixed_7a.branch3x3_1", 768, 192, 1, 1);
  add("Mixed_7a.branch3x3_2", 192, 320, 3, 3, 2);
  add("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1);
  add("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
  add("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
  add("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3, 2);
  for (const Block& k : {Block{"Mixed_7b", 1280, 0}, Block{"Mixed_7c", 2048, 0}}) {
    const std::string b = std::string(k.name) + ".";
    const int cin = k.c;
    add(b + "branch1x1", cin, 320, 1, 1);
    add(b + "branch3x3_1", cin, 384, 1, 1);
    add(b + "branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    add(b + "branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    add(b + "branch3x3dbl_1", cin, 448, 1, 1);
    add(b + "branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    add(b + "branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    add(b + "branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    add(b + "branch_pool", cin, 192, 1, 1);
  }
  return t;
}

}  // namespace

const std::vector<InceptionConv>& inception_convs() {
  static const std::vector<InceptionConv> convs = build_convs();
  return convs;
}

std::vector<ParamSpec> inception_param_table() {
  std::vector<ParamSpec> t;
  using K = ParamKind;
  using In = ParamInit;
  using P = InceptionParam;
  auto add = [&](std::string name, std::vector<int64_t> shape, K kind, In init, P id, int block = -1) {
    bool decayed = official_weight_decay(name, shape);
    t.push_back({std::move(name), std::move(shape), kind, init, decayed, static_cast<int>(id), block});
  };
  // PyTorch's defaults: BatchNorm weight 1, bias 0, running mean 0, running var 1.
  const auto& convs = inception_convs();
  for (size_t i = 0; i < convs.size(); i++) {
    const InceptionConv& c = convs[i];
    const int b = static_cast<int>(i);
    add(c.name + ".conv.weight", {c.cout, c.cin, c.kh, c.kw}, K::Conv, In::TruncNormal, P::ConvWeight, b);
    add(c.name + ".bn.weight", {c.cout}, K::NormWeight, In::Ones, P::BnWeight, b);
    add(c.name + ".bn.bias", {c.cout}, K::NormBias, In::Zeros, P::BnBias, b);
    add(c.name + ".bn.running_mean", {c.cout}, K::NormStat, In::Zeros, P::BnRunningMean, b);
    add(c.name + ".bn.running_var", {c.cout}, K::NormStat, In::Ones, P::BnRunningVar, b);
  }
  add("fc.weight", {kInceptionLogits, kInceptionPool3}, K::Linear, In::TruncNormal, P::FcWeight);
  add("fc.bias", {kInceptionLogits}, K::Bias, In::Zeros, P::FcBias);
  return t;
}

}  // namespace rargen
