// The FID InceptionV3's parameter table, written once (issue 13): every tensor of
// pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FIDInceptionA..E layout, the same
// state dict as torch-fidelity's weights-inception-2015-12-05-6726825d.pth), in
// state-dict order, with its shape. Derived from it: the model's layers and its key and
// shape checks (model/inception.cc, bound by InceptionParam id and conv index), the addon
// export `inceptionParamTable()` (src/binding.cc) from which lib/inception.ts checks
// checkpoints, and the formula weights of the tests and bench/fid.ts. As for RAR
// (model/rar_params.h), C++ holds the table and TypeScript receives it. The network is
// not trained here: `init` and `decayed` only follow the kinds and the official rule.
#pragma once
#include <string>
#include <vector>

#include "model/params.h"

namespace rargen {

constexpr int kInceptionPool3 = 2048;   // fc input: the global average pool's channels
constexpr int kInceptionLogits = 1008;  // fc output: the 2015 graph's 1008 classes

// One BasicConv2d: conv (no bias) + BatchNorm(eps 1e-3) + ReLU; `name` is the module path
// ("Mixed_5b.branch5x5_2") whose conv.weight / bn.* keys the table lists.
struct InceptionConv {
  std::string name;
  int cin, cout, kh, kw, stride, ph, pw;
};

// Which tensor an entry is; per-conv entries carry the conv's index in ParamSpec::block.
enum class InceptionParam { ConvWeight, BnWeight, BnBias, BnRunningMean, BnRunningVar, FcWeight, FcBias };
constexpr int kInceptionConvParams = 5;  // ConvWeight .. BnRunningVar

// The 94 BasicConv2d layers in module (= state-dict) order.
const std::vector<InceptionConv>& inception_convs();

// Every tensor, in state-dict order: per conv i (block = i) conv.weight (cout, cin, kh, kw),
// bn.weight, bn.bias, bn.running_mean, bn.running_var (cout); then fc.weight (1008, 2048)
// and fc.bias (1008). The int64 `<conv>.bn.num_batches_tracked` counters that PyTorch
// >= 0.4.1 saves are not parameters: lib/config.ts (validateInceptionWeights) allows
// them in a file and the loader never passes them on.
std::vector<ParamSpec> inception_param_table();

}  // namespace rargen
