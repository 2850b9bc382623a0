// Normal random vectors for the C++ test binaries (rargen_optest, test/gpu/cuda_ext_test.cc),
// drawn from the caller's generator.
#pragma once
#include <random>
#include <vector>

namespace rargen {
namespace test {

inline std::vector<float> randn(std::mt19937_64& rng, size_t n, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace test
}  // namespace rargen
