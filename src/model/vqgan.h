// The MaskGIT-VQGAN tokenizer (MODEL.md "Tokenizer"), written once against the
// Backend op table. Images are processed one at a time, so activation memory is that
// of one image (about 4 x 34 MB at 256 x 256) whatever the batch.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"
#include "model/params.h"
#include "model/vqgan_params.h"

namespace rargen {

// ResnetBlock(in, out): h = conv1(SiLU(GN(x))); h = conv2(SiLU(GN(h)));
// out = h + (in != out ? nin_shortcut(h) : x)   -- the shortcut takes h, not x.
struct VqResBlock {
  int cin = 0, cout = 0;
  const float* norm1_w = nullptr;  // (cin)
  const float* norm1_b = nullptr;
  Weight conv1;                    // (cout, cin, 3, 3), no bias
  const float* norm2_w = nullptr;  // (cout)
  const float* norm2_b = nullptr;
  Weight conv2;                    // (cout, cout, 3, 3), no bias
  Weight nin;                      // (cout, cout, 1, 1), no bias; only when cin != cout
};

struct VqWeights {
  // encoder
  Weight enc_conv_in;                              // (hidden, 3, 3, 3), no bias
  std::vector<std::vector<VqResBlock>> enc_down;   // [level][block]
  std::vector<VqResBlock> enc_mid;                 // num_res_blocks
  const float* enc_norm_w = nullptr;               // (top)
  const float* enc_norm_b = nullptr;
  Weight enc_conv_out;                             // (z, top, 1, 1)
  const float* enc_conv_out_b = nullptr;           // (z)
  // decoder
  Weight dec_conv_in;                              // (top, z, 3, 3)
  const float* dec_conv_in_b = nullptr;            // (top)
  std::vector<VqResBlock> dec_mid;                 // num_res_blocks
  std::vector<std::vector<VqResBlock>> dec_up;     // [level][block]
  std::vector<Weight> dec_upsample_conv;           // [level], level 0 unused: (c, c, 3, 3)
  std::vector<const float*> dec_upsample_conv_b;   // [level]: (c)
  const float* dec_norm_w = nullptr;               // (hidden * mult[0])
  const float* dec_norm_b = nullptr;
  Weight dec_conv_out;                             // (3, hidden * mult[0], 3, 3)
  const float* dec_conv_out_b = nullptr;           // (3)
  const float* codebook = nullptr;                 // (K, z)
};

class Vq {
 public:
  Vq(Backend* be, const VqConfig& cfg);
  const VqConfig& config() const { return cfg_; }
  Backend* backend() const { return be_; }
  ParamTable& params() { return params_; }

  // tokens (B, g*g), each 0..K-1 -> unclamped decoder output (B, 3, R, R).
  std::vector<float> decode(const int32_t* tokens, int B);
  // pixels (B, 3, R, R) in [0,1] -> latents (B, z, g, g) and tokens (B, g*g).
  void encode(const float* pixels, int B, std::vector<float>& latents, std::vector<int32_t>& tokens);

 private:
  // x (cin, H, W) -> x (cout, H, W) in place; t1, t2 scratch of the same capacity.
  void res_block(const VqResBlock& b, float* x, int H, int W, float* t1, float* t2);
  void conv3x3(float* out, const float* inp, Weight w, const float* bias, int cin, int cout, int H, int W);
  int64_t max_activation() const;  // floats of the largest (C, H, W) tensor

  Backend* be_;
  VqConfig cfg_;
  VqWeights w_;
  ParamTable params_;
};

}  // namespace rargen
