// The FID feature extractor: TF1-exact InceptionV3 as torch-fidelity's
// FeatureExtractorInceptionV3 computes it (the network behind OpenAI's ADM evaluator),
// loading the `pt_inception-2015-12-05-6726825d.pth` state-dict keys.
//
//   uint8 (B, H, W, 3) -> TF1 bilinear resize to 299x299 (no half-pixel centres)
//   -> (x - 128) / 128 -> stem -> Mixed_5b..5d (A) -> 6a (B) -> 6b..6e (C) -> 7a (D)
//   -> 7b (E, avg pool branch) -> 7c (E, MAX pool branch) -> global average pool
//
// Outputs (host memory, float32):
//   pool3   (B, 2048)  the global average pool: FID features
//   spatial (B, 2023)  Mixed_6d.branch1x1 after BN+ReLU, channels 0..6, 17x17x7 in
//                      channels-last order: the sFID features
//   logits  (B, 1008)  pool3 @ fc.weight^T, no bias: what the Inception Score uses
//
// Every layer runs on the Backend (conv2d, relu, maxpool2d, avgpool2d, copy_channels,
// linear), built from the parameter table (model/inception_params.h); BatchNorm (eps
// 1e-3) is folded into the conv weights and a bias at finalize(), in float64 then
// rounded. Only the TF1 resize of the uint8 input runs on the host, before the upload.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "model/inception_params.h"  // kInceptionPool3, kInceptionLogits

namespace rargen {

constexpr int kInceptionSize = 299;
constexpr int kInceptionSpatial = 17 * 17 * 7;  // 2023

// tf.image.resize_bilinear of TF1 (align_corners=False, half_pixel_centers=False):
// src = dst * (in / out), all in float32 exactly as torch-fidelity's
// interpolate_bilinear_2d_like_tensorflow1x. in: uint8 (B, H, W, 3) channels-last;
// out: float32 (B, 3, oh, ow) NCHW, values in [0, 255]. `scale`/`shift` are applied
// after the interpolation: out = (v - shift) / scale (1 and 0 for the raw resize). Runs on
// the CPU backend's thread pool (cpu/threadpool.h).
void tf1_resize_bilinear(float* out, const uint8_t* in, int B, int H, int W, int oh, int ow,
                         float shift = 0.f, float scale = 1.f);

class InceptionV3 {
 public:
  explicit InceptionV3(Backend* be);
  ~InceptionV3();
  InceptionV3(const InceptionV3&) = delete;
  InceptionV3& operator=(const InceptionV3&) = delete;

  // Copies one tensor of inception_param_table() to host staging. Throws rargen::Error
  // naming the key when it is unknown or its shape differs from the table's.
  void set_weight(const std::string& name, const float* data, const std::vector<int64_t>& shape);
  // Folds BatchNorm and uploads to the backend. Throws listing the table's keys not set.
  void finalize();
  bool finalized() const;

  // pool3 (B, 2048), spatial (B, 2023), logits (B, 1008): host memory, each may be null.
  // images: host uint8 (B, H, W, 3). Reuses a workspace that grows with B.
  void forward(float* pool3, float* spatial, float* logits, const uint8_t* images, int B, int H,
               int W);

  Backend* backend() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rargen
