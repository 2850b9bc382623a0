// Inception Score as ADM's evaluator computes it (improved-gan's formula):
//   for each split of split_size rows: p = softmax(logits), pbar = mean_i p_i,
//   score = exp(mean_i sum_y p_iy (log p_iy - log pbar_y)); IS = mean of the scores.
// In float64 with log p from log-softmax, so no 0 * log 0 = NaN when a probability
// underflows (float32 ADM would give NaN there).
#include <cmath>
#include <string>
#include <vector>

#include "backend.h"
#include "eval/metrics.h"

namespace rargen {

double inception_score(const float* logits, int64_t N, int C, int64_t split_size, std::vector<double>* split_scores) {
  if (N < 1) throw Error("inception_score: needs at least one row of logits");
  if (C < 1) throw Error("inception_score: classes must be >= 1, got " + std::to_string(C));
  if (split_size < 1) throw Error("inception_score: split_size must be >= 1, got " + std::to_string(split_size));
  std::vector<double> logp(static_cast<size_t>(C)), pbar(static_cast<size_t>(C));
  std::vector<double> scores;
  for (int64_t s0 = 0; s0 < N; s0 += split_size) {
    const int64_t s1 = std::min(N, s0 + split_size), n = s1 - s0;
    // pass 1: pbar and sum_i sum_y p log p
    std::fill(pbar.begin(), pbar.end(), 0.0);
    double plogp = 0;
    for (int64_t i = s0; i < s1; i++) {
      const float* l = logits + i * C;
      double mx = -INFINITY;
      for (int y = 0; y < C; y++) {
        if (!std::isfinite(l[y])) throw Error("inception_score: non-finite logit at row " + std::to_string(i));
        mx = std::max(mx, static_cast<double>(l[y]));
      }
      double z = 0;
      for (int y = 0; y < C; y++) z += std::exp(static_cast<double>(l[y]) - mx);
      const double lse = mx + std::log(z);
      for (int y = 0; y < C; y++) {
        logp[y] = static_cast<double>(l[y]) - lse;
        const double p = std::exp(logp[y]);
        pbar[y] += p;
        plogp += p * logp[y];
      }
    }
    // mean_i sum_y p_iy (log p_iy - log pbar_y) = (plogp - sum_y n pbar_y log pbar_y) / n
    double cross = 0;
    for (int y = 0; y < C; y++) {
      const double pb = pbar[y] / static_cast<double>(n);
      if (pb > 0) cross += pbar[y] * std::log(pb);
    }
    scores.push_back(std::exp((plogp - cross) / static_cast<double>(n)));
  }
  double mean = 0;
  for (double s : scores) mean += s;
  mean /= static_cast<double>(scores.size());
  if (split_scores) *split_scores = scores;
  return mean;
}

}  // namespace rargen
