// Improved precision/recall (Kynkaanniemi et al. 2019) as ADM's ManifoldEstimator
// computes it with nhood_sizes=(k,); see metrics.h.
//
// Squared distances come in tiles: G = A B^T on the Backend (linear: on a GPU this is
// where the 50k x 50k x 2048 work goes), then on the host, in float32 and in ADM's
// order, d = max((|a|^2 - 2 G) + |b|^2, 0), consumed at once: a running k+1 smallest
// per row for the radii, "inside some ball" flags for precision/recall. Nothing of
// size N x N is ever stored. Tile sizes change speed and memory, never the result.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend.h"
#include "eval/metrics.h"
#include "eval/parallel.h"

namespace rargen {

namespace {

// Feature rows in backend memory: the host rows themselves on the CPU backend.
class DeviceRows {
 public:
  DeviceRows(Backend* be, const float* host, int64_t n, int D) : be_(be) {
    if (!be->is_gpu()) {
      ptr_ = host;
      return;
    }
    owned_ = static_cast<float*>(be->alloc(static_cast<size_t>(n) * D * 4));
    be->upload(owned_, host, static_cast<size_t>(n) * D * 4);
    ptr_ = owned_;
  }
  ~DeviceRows() {
    if (owned_) be_->free(owned_);
  }
  const float* row(int64_t i, int D) const { return ptr_ + i * D; }

 private:
  Backend* be_;
  const float* ptr_ = nullptr;
  float* owned_ = nullptr;
};

// |x_i|^2 in float32 (accumulated in float64, rounded once).
std::vector<float> squared_norms(const float* x, int64_t n, int D) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) {
    double s = 0;
    for (int c = 0; c < D; c++) {
      const float v = x[i * D + c];
      if (!std::isfinite(v)) throw Error("precision_recall: non-finite feature at row " + std::to_string(i) + ", column " + std::to_string(c));
      s += static_cast<double>(v) * v;
    }
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return out;
}

inline float sq_dist(float na, float g, float nb) {
  const float d = (na - 2.0f * g) + nb;
  return d > 0.0f ? d : 0.0f;
}

// G tiles (ra, cb) = A_rows B_rows^T on the backend, read back on the host.
class Tiles {
 public:
  Tiles(Backend* be, int64_t rb, int64_t cb) : be_(be) {
    dev_ = static_cast<float*>(be->alloc(static_cast<size_t>(rb) * cb * 4));
    if (be->is_gpu()) host_.resize(static_cast<size_t>(rb) * cb);
  }
  ~Tiles() { be_->free(dev_); }
  const float* gram(const float* a, int64_t ra, const float* b, int64_t cb, int D) {
    Weight w;
    w.data = b;
    w.dtype = DType::F32;
    be_->linear(dev_, a, w, nullptr, ra, static_cast<int>(cb), D);
    if (!be_->is_gpu()) return dev_;
    be_->download(host_.data(), dev_, static_cast<size_t>(ra) * cb * 4);
    return host_.data();
  }

 private:
  Backend* be_;
  float* dev_ = nullptr;
  std::vector<float> host_;
};

struct Progress {
  const PrecisionRecallOptions& opt;
  int64_t done = 0, total = 0;
  void tick() {
    done++;
    if (opt.cancel && opt.cancel->load()) throw Error("cancelled");
    if (opt.progress) opt.progress(done, total);
  }
};

int64_t tiles_for(int64_t rows, int64_t cols, const PrecisionRecallOptions& o) {
  return ((rows + o.row_block - 1) / o.row_block) * ((cols + o.col_block - 1) / o.col_block);
}

void check_args(const PrecisionRecallOptions& o, int D) {
  if (o.k < 1) throw Error("precision_recall: k must be >= 1, got " + std::to_string(o.k));
  if (o.row_block < 1 || o.col_block < 1 || o.col_block > (1 << 30)) throw Error("precision_recall: bad tile sizes");
  if (D < 1) throw Error("precision_recall: D must be >= 1, got " + std::to_string(D));
}

void radii_impl(float* radii, Backend* be, const DeviceRows& dev, const float* feats, int64_t N, int D,
                const PrecisionRecallOptions& o, Progress& prog) {
  if (N <= o.k)
    throw Error("precision_recall: the k-NN radii need more than k=" + std::to_string(o.k) + " feature vectors, got " + std::to_string(N));
  const std::vector<float> norms = squared_norms(feats, N, D);
  const int K1 = o.k + 1;
  const int threads = eval::resolve_threads(o.threads);
  Tiles tiles(be, std::min(o.row_block, N), std::min(o.col_block, N));
  std::vector<float> best;
  for (int64_t i0 = 0; i0 < N; i0 += o.row_block) {
    const int64_t ri = std::min(o.row_block, N - i0);
    best.assign(static_cast<size_t>(ri) * K1, std::numeric_limits<float>::infinity());  // ascending, per row
    for (int64_t j0 = 0; j0 < N; j0 += o.col_block) {
      const int64_t cj = std::min(o.col_block, N - j0);
      const float* G = tiles.gram(dev.row(i0, D), ri, dev.row(j0, D), cj, D);
      eval::run_tasks(threads, ri, [&](int64_t r) {
        float* b = best.data() + r * K1;
        const float na = norms[i0 + r];
        const float* g = G + r * cj;
        for (int64_t c = 0; c < cj; c++) {
          const float d = sq_dist(na, g[c], norms[j0 + c]);
          if (d < b[K1 - 1]) {
            int p = K1 - 1;
            while (p > 0 && b[p - 1] > d) b[p] = b[p - 1], p--;
            b[p] = d;
          }
        }
      });
      prog.tick();
    }
    for (int64_t r = 0; r < ri; r++) radii[i0 + r] = best[r * K1 + o.k];
  }
}

}  // namespace

void manifold_radii(float* radii, Backend* be, const float* feats, int64_t N, int D, const PrecisionRecallOptions& opt) {
  check_args(opt, D);
  Progress prog{opt};
  prog.total = tiles_for(N, N, opt);
  DeviceRows dev(be, feats, N, D);
  radii_impl(radii, be, dev, feats, N, D, opt, prog);
}

PrecisionRecall precision_recall(Backend* be, const float* ref, int64_t n_ref, const float* sample, int64_t n_sample,
                                 int D, const PrecisionRecallOptions& o) {
  check_args(o, D);
  Progress prog{o};
  prog.total = tiles_for(n_ref, n_ref, o) + tiles_for(n_sample, n_sample, o) + tiles_for(n_ref, n_sample, o);
  DeviceRows dref(be, ref, n_ref, D), dsam(be, sample, n_sample, D);
  std::vector<float> r_ref(static_cast<size_t>(n_ref)), r_sam(static_cast<size_t>(n_sample));
  radii_impl(r_ref.data(), be, dref, ref, n_ref, D, o, prog);
  radii_impl(r_sam.data(), be, dsam, sample, n_sample, D, o, prog);
  const std::vector<float> n_r = squared_norms(ref, n_ref, D), n_s = squared_norms(sample, n_sample, D);

  // ref_in[i]: ref i lies in some sample ball (recall); sam_in[j]: sample j in some ref ball (precision).
  std::vector<uint8_t> ref_in(static_cast<size_t>(n_ref), 0), sam_in(static_cast<size_t>(n_sample), 0);
  const int threads = eval::resolve_threads(o.threads);
  Tiles tiles(be, std::min(o.row_block, n_ref), std::min(o.col_block, n_sample));
  for (int64_t i0 = 0; i0 < n_ref; i0 += o.row_block) {
    const int64_t ri = std::min(o.row_block, n_ref - i0);
    for (int64_t j0 = 0; j0 < n_sample; j0 += o.col_block) {
      const int64_t cj = std::min(o.col_block, n_sample - j0);
      const float* G = tiles.gram(dref.row(i0, D), ri, dsam.row(j0, D), cj, D);
      const int64_t chunks = std::min<int64_t>(ri, 2 * threads);
      std::vector<std::vector<uint8_t>> local(static_cast<size_t>(chunks), std::vector<uint8_t>(static_cast<size_t>(cj), 0));
      eval::run_tasks(threads, chunks, [&](int64_t t) {
        uint8_t* sin = local[static_cast<size_t>(t)].data();
        for (int64_t r = ri * t / chunks; r < ri * (t + 1) / chunks; r++) {
          const float na = n_r[i0 + r], rad = r_ref[i0 + r];
          const float* g = G + r * cj;
          uint8_t any = 0;
          for (int64_t c = 0; c < cj; c++) {
            const float d = sq_dist(na, g[c], n_s[j0 + c]);
            any |= d <= r_sam[j0 + c];
            sin[c] |= d <= rad;
          }
          ref_in[i0 + r] |= any;
        }
      });
      for (auto& l : local)
        for (int64_t c = 0; c < cj; c++) sam_in[j0 + c] |= l[c];
      prog.tick();
    }
  }
  PrecisionRecall out;
  int64_t np = 0, nr = 0;
  for (auto v : sam_in) np += v;
  for (auto v : ref_in) nr += v;
  out.precision = static_cast<double>(np) / static_cast<double>(n_sample);
  out.recall = static_cast<double>(nr) / static_cast<double>(n_ref);
  return out;
}

}  // namespace rargen
