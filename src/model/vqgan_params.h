// The MaskGIT-VQGAN tokenizer's parameter table, written once (issue 13): every tensor
// of maskgit-vqgan-imagenet-f16-256.bin's state dict (1d-tokenizer
// modeling/modules/maskgit_vqgan.py), in state-dict order, with its shape from the
// config and its kind. Derived from it: the model's ParamTable (model/vqgan.cc,
// bound by VqParam id), the addon export `vqParamTable(config)` from which
// lib/config.ts takes the expected keys/shapes, and the random test weights
// (lib/testing/weights.ts). As for RAR (model/rar_params.h), C++ holds the table and
// TypeScript receives it. The tokenizer is not trained here: `init` and `decayed` only
// follow the kinds and the official rule, nothing uses them.
#pragma once
#include <vector>

#include "model/params.h"

namespace rargen {

struct VqConfig {
  int hidden = 0;             // hidden_channels (128)
  std::vector<int> mult;      // channel_mult ([1, 1, 2, 2, 4])
  int num_res_blocks = 0;     // 2: blocks per level AND in each middle (as maskgit_vqgan.py builds them)
  int z = 0;                  // z_channels (256)
  int codebook = 0;           // codebook size (1024)
  int resolution = 0;         // pixels (256)
  int levels() const { return static_cast<int>(mult.size()); }
  int grid() const { return resolution >> (levels() - 1); }  // token grid side (16)
};

// Which list of res blocks a block tensor belongs to (ParamSpec::part).
enum class VqPart { EncDown, EncMid, DecMid, DecUp };

enum class VqParam {
  EncConvIn, EncNormOutW, EncNormOutB, EncConvOutW, EncConvOutB,
  DecConvInW, DecConvInB, UpsampleW, UpsampleB, DecNormOutW, DecNormOutB, DecConvOutW, DecConvOutB,
  Codebook,
  // res block members (part, level for EncDown/DecUp, block)
  ResNorm1W, ResNorm1B, ResConv1, ResNorm2W, ResNorm2B, ResConv2, ResNin,
};

// Every tokenizer tensor (encoder, decoder, codebook), in state-dict order.
std::vector<ParamSpec> vq_param_table(const VqConfig& c);

}  // namespace rargen
