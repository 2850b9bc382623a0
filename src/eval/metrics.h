// The ADM evaluator's metrics (openai/guided-diffusion evaluations/evaluator.py), native:
// FID and sFID (Frechet distance of Gaussian fits), Inception Score, and the
// improved precision/recall of Kynkaanniemi et al. as ADM's ManifoldEstimator does it.
//
// What follows the evaluator exactly and what does not:
// - mean / covariance: np.mean and np.cov(rowvar=False) (ddof 1), accumulated in float64
//   by merging per-batch centred scatter matrices (Chan et al.), so features can stream
//   in batches. (numpy's float32 mean of the ADM code differs by ~1e-7 relative.)
// - FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2), with tr sqrtm(S1 S2) =
//   sum sqrt(eig(W^T S2 W)) for S1 = W W^T (W from Eigen's pivoted LDLT: the eigenvalues
//   of sqrt(S1) S2 sqrt(S1), without S1's eigenvectors), by Eigen's symmetric
//   SelfAdjointEigenSolver, negative eigenvalues from round-off clamped to 0. scipy's
//   sqrtm (a Schur method) gives the same trace to ~1e-9 relative on well-conditioned
//   products and a real result on near-singular ones (where ADM adds eps to the diagonal).
// - Inception Score: softmax of the logits, splits of `split_size` rows (the last may be
//   shorter), exp(mean KL(p(y|x) || mean p(y))) per split, mean over splits. Computed in
//   float64 with log-softmax, so a probability that underflows never gives NaN.
// - precision / recall: k-NN radii = the k-th smallest squared distance of each vector to
//   its own set (self included, at index 0, as np.partition(..)[:, k]); squared distances
//   in float32 as max((|u|^2 - 2 u.v) + |v|^2, 0); a sample is "in" when its distance to
//   some reference vector is <= that vector's radius; precision = fraction of samples in
//   the reference manifold, recall = fraction of references in the sample manifold.
//   NOTE: ADM's TensorFlow graph first computes these distances in float16 and uses them
//   when finite; this is the float32 path it falls back to (and what its tests pin).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace rargen {

class Backend;

// Streaming mean and covariance of feature rows.
class FeatureStats {
 public:
  // threads: for the covariance updates (0 = all hardware threads).
  explicit FeatureStats(int dim, int threads = 0);
  ~FeatureStats();
  FeatureStats(const FeatureStats&) = delete;
  FeatureStats& operator=(const FeatureStats&) = delete;

  // x (rows, dim) float32. Throws rargen::Error on a non-finite value.
  void add(const float* x, int64_t rows);
  int dim() const;
  int64_t count() const;
  // mu (dim) and sigma (dim, dim) row-major, as np.mean(axis=0) and np.cov(rowvar=False).
  // Needs count() >= 2.
  void result(double* mu, double* sigma) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Frechet distance of N(mu1, sigma1) and N(mu2, sigma2); sigma row-major (D, D), symmetric.
// Throws rargen::Error on non-finite input.
double frechet_distance(const double* mu1, const double* sigma1, const double* mu2, const double* sigma2, int D,
                        int threads = 0);

// Inception Score of logits (N, C) in splits of split_size rows. split_scores (optional)
// receives one score per split.
double inception_score(const float* logits, int64_t N, int C, int64_t split_size,
                       std::vector<double>* split_scores = nullptr);

struct PrecisionRecallOptions {
  int k = 3;                // neighbourhood size (ADM: nhood_sizes=(3,))
  int64_t row_block = 1024;  // distance tiles (memory/speed only; results do not depend on them)
  int64_t col_block = 4096;
  int threads = 0;          // host threads for the tile scans
  // Called after each tile with (tiles done, tiles total), on the computing thread.
  std::function<void(int64_t, int64_t)> progress;
  const std::atomic<bool>* cancel = nullptr;  // throws rargen::Error("cancelled") when set
};

struct PrecisionRecall {
  double precision = 0, recall = 0;
};

// radii (N): the k-th smallest squared distance of each row of feats (N, D) to all rows.
// The dot products run on `be` (linear); feats are host memory.
void manifold_radii(float* radii, Backend* be, const float* feats, int64_t N, int D,
                    const PrecisionRecallOptions& opt = {});

// ADM's compute_prec_recall(ref, sample).
PrecisionRecall precision_recall(Backend* be, const float* ref, int64_t n_ref, const float* sample,
                                 int64_t n_sample, int D, const PrecisionRecallOptions& opt = {});

}  // namespace rargen
