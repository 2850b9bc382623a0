// The RAR generator's parameter table, written once (issue 13): every tensor of the
// official state dict (1d-tokenizer modeling/rar.py), in state-dict order, with its
// shape from the config, kind, official initialisation and weight decay. Derived from
// it: the inference model's ParamTable (model/rar.cc), the trainer's flat layout and
// its binding (by RarParam id, model/rar_train.cc), AdamW's groups, the addon export
// `rarParamTable(config)` (src/binding.cc) from which lib/config.ts takes expected
// keys/shapes and lib/train/init.ts decay and init, and the random test weights
// (lib/testing/weights.ts, src/test/optest.cc).
//
// Direction: C++ holds the table and TypeScript receives it, because the C++ model,
// trainer and optest (no Node) must have it, while every TS consumer already needs
// the addon to do anything with the weights.
#pragma once
#include <vector>

#include "model/params.h"

namespace rargen {

struct RarConfig {
  int hidden = 0;     // C
  int depth = 0;
  int heads = 0;      // H; head dim D = C / H
  int mlp = 0;        // I
  int seq_len = 0;    // N image tokens
  int codebook = 0;   // V
  int classes = 0;    // K
  int pos_rows = 0;   // rows of pos_embed / target_aware_pos_embed (>= N + 2; N + 1024 in the releases)
  int ts_rows = 0;    // rows of timesteps_embeddings (>= N + 2; N + 100 in the releases)
  int head_dim() const { return hidden / heads; }
  int null_condition() const { return codebook + classes + 1; }  // V+K+1
  int class_condition(int k) const { return codebook + 1 + k; }  // V+1+k
  int embedding_rows() const { return codebook + 1 + classes + 1; }  // V tokens, 1 unused, K classes, 1 null
};

// Which tensor an entry is (per-block ones carry the block index in ParamSpec::block).
enum class RarParam {
  ClsToken, PosEmbed, TargetAwarePosEmbed, TimestepsEmbeddings,
  Norm1W, Norm1B, QkvW, QkvB, QNormW, QNormB, KNormW, KNormB, ProjW, ProjB,
  Norm2W, Norm2B, Fc1W, Fc1B, Fc2W, Fc2B, AdaW, AdaB,
  Embeddings, HeadAdaW, HeadAdaB, LmHeadW, LmHeadB,
};

// Every generator tensor, in state-dict order.
std::vector<ParamSpec> rar_param_table(const RarConfig& c);

}  // namespace rargen
