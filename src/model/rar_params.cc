#include "model/rar_params.h"

#include <string>

namespace rargen {

std::vector<ParamSpec> rar_param_table(const RarConfig& c) {
  const int64_t C = c.hidden, I = c.mlp, D = c.head_dim(), V = c.codebook;
  std::vector<ParamSpec> t;
  using K = ParamKind;
  using In = ParamInit;
  auto add = [&](std::string name, std::vector<int64_t> shape, K kind, In init, RarParam id, int block = -1) {
    bool decayed = official_weight_decay(name, shape);
    t.push_back({std::move(name), std::move(shape), kind, init, decayed, static_cast<int>(id), block});
  };
  // Linear weights and tables: trunc normal; biases 0; LayerNorm 1 / 0; cls_token 0;
  // adaLN-zero: every modulation weight and bias 0 (blocks start as the identity).
  add("cls_token", {1, 1, C}, K::Embedding, In::Zeros, RarParam::ClsToken);
  add("pos_embed", {1, c.pos_rows, C}, K::Embedding, In::TruncNormal, RarParam::PosEmbed);
  add("target_aware_pos_embed", {1, c.pos_rows, C}, K::Embedding, In::TruncNormal, RarParam::TargetAwarePosEmbed);
  add("timesteps_embeddings", {1, c.ts_rows, C}, K::Embedding, In::TruncNormal, RarParam::TimestepsEmbeddings);
  for (int i = 0; i < c.depth; i++) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    add(b + "norm1.weight", {C}, K::NormWeight, In::Ones, RarParam::Norm1W, i);
    add(b + "norm1.bias", {C}, K::NormBias, In::Zeros, RarParam::Norm1B, i);
    add(b + "attn.qkv.weight", {3 * C, C}, K::Linear, In::TruncNormal, RarParam::QkvW, i);
    add(b + "attn.qkv.bias", {3 * C}, K::Bias, In::Zeros, RarParam::QkvB, i);
    add(b + "attn.q_norm.weight", {D}, K::NormWeight, In::Ones, RarParam::QNormW, i);
    add(b + "attn.q_norm.bias", {D}, K::NormBias, In::Zeros, RarParam::QNormB, i);
    add(b + "attn.k_norm.weight", {D}, K::NormWeight, In::Ones, RarParam::KNormW, i);
    add(b + "attn.k_norm.bias", {D}, K::NormBias, In::Zeros, RarParam::KNormB, i);
    add(b + "attn.proj.weight", {C, C}, K::Linear, In::TruncNormal, RarParam::ProjW, i);
    add(b + "attn.proj.bias", {C}, K::Bias, In::Zeros, RarParam::ProjB, i);
    add(b + "norm2.weight", {C}, K::NormWeight, In::Ones, RarParam::Norm2W, i);
    add(b + "norm2.bias", {C}, K::NormBias, In::Zeros, RarParam::Norm2B, i);
    add(b + "mlp.fc1.weight", {I, C}, K::Linear, In::TruncNormal, RarParam::Fc1W, i);
    add(b + "mlp.fc1.bias", {I}, K::Bias, In::Zeros, RarParam::Fc1B, i);
    add(b + "mlp.fc2.weight", {C, I}, K::Linear, In::TruncNormal, RarParam::Fc2W, i);
    add(b + "mlp.fc2.bias", {C}, K::Bias, In::Zeros, RarParam::Fc2B, i);
    // (6C, C): shift1, scale1, gate1, shift2, scale2, gate2
    add(b + "adaLN_modulation.1.weight", {6 * C, C}, K::Linear, In::Zeros, RarParam::AdaW, i);
    add(b + "adaLN_modulation.1.bias", {6 * C}, K::Bias, In::Zeros, RarParam::AdaB, i);
  }
  add("embeddings.weight", {c.embedding_rows(), C}, K::Embedding, In::TruncNormal, RarParam::Embeddings);
  // (2C, C): scale, shift (scale first)
  add("adaln_before_head.adaLN_modulation.1.weight", {2 * C, C}, K::Linear, In::Zeros, RarParam::HeadAdaW);
  add("adaln_before_head.adaLN_modulation.1.bias", {2 * C}, K::Bias, In::Zeros, RarParam::HeadAdaB);
  add("lm_head.weight", {V, C}, K::Linear, In::TruncNormal, RarParam::LmHeadW);
  add("lm_head.bias", {V}, K::Bias, In::Zeros, RarParam::LmHeadB);
  return t;
}

}  // namespace rargen
