// Compiled with -mavx2 -mfma -mf16c. Only called after __builtin_cpu_supports says so.
#include <immintrin.h>
namespace rargen { namespace cpu {
// Sum of 8 floats with AVX: lets the binding prove the AVX2 object is linked and runs.
float avx2_sum8(const float* x) {
  __m256 v = _mm256_loadu_ps(x);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}
}}
