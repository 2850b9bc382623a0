// rargen_optest: every op of src/backend.h (the op table below), forward and backward,
// on random inputs, checked against a naive scalar reference written here (double
// accumulation, no tricks) or the CPU backend: the CPU backend's optimised path (AVX2
// when the CPU has it), its portable path, and, when built with RARGEN_CUDA and a GPU
// is present, the CUDA backend, also against the CPU backend. The backward ops are also
// checked against finite differences of their forwards (group "fd").
// Build: cmake --build build --target rargen_optest; run: build/rargen_optest [filter]
// (no Node needed). Exit status 0 when every check passes.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/half.h"
#include "cpu/kernels.h"
#include "cuda_api.h"
#include "model/rar.h"
#include "test/random.h"

using namespace rargen;
using Vec = std::vector<float>;
using IVec = std::vector<int32_t>;

namespace {

int g_failures = 0, g_checks = 0;
const char* g_filter = nullptr;
std::mt19937_64 g_rng(1234);

Vec randn(size_t n, float scale = 1.f) { return test::randn(g_rng, n, scale); }
Vec randu(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
// Weights as the backend will see them after conversion to dtype.
Vec round_to(const Vec& w, DType dt) {
  Vec r(w.size());
  for (size_t i = 0; i < w.size(); i++)
    r[i] = dt == DType::F16 ? cpu::f16_to_f32(cpu::f32_to_f16(w[i]))
           : dt == DType::BF16 ? cpu::bf16_to_f32(cpu::f32_to_bf16(w[i]))
                               : w[i];
  return r;
}
const char* dtname(DType d) { return d == DType::F32 ? "f32" : d == DType::F16 ? "f16" : "bf16"; }

// ---------------- tolerances: what each path computes ----------------
// check() normalises the max abs error by max(1, max |ref|). Every accumulation is
// fp32 (the references: double), so a path whose operands are exact fp32 differs from
// the reference by summation order and libm rounding only: kTolF32. A path that rounds
// its activations to f16/bf16 before the product (the CUDA backend for F16/BF16 weights:
// cuBLASLt and the WMMA GEMMs for M > 8 rows, the tensor-core convolutions; by design,
// see cuda/README.md) carries, per output y = sum_k x_k w_k, an extra error of at most
//   unit(dtype) * sum_k |x_k w_k|   (rounding to nearest: |round(x) - x| <= unit * |x|)
// which compare_rounded() adds to kTolF32 element by element. The CPU backend converts
// only the weights (the references round them too), so it is held to kTolF32.
struct DtypeTolerance {
  DType dt;
  double act_unit;  // unit roundoff of an activation rounded to dt (0: not rounded)
  const char* why;
};
constexpr DtypeTolerance kTolerances[] = {
    {DType::F32, 0.0, "fp32 operands (SIMT, cuBLASLt 32F without TF32, 3xTF32 convs): summation order only"},
    {DType::F16, 0x1p-11, "f16 has 11 significant bits: half an ulp is 2^-11 = 4.9e-4 relative"},
    {DType::BF16, 0x1p-8, "bf16 has 8 significant bits: half an ulp is 2^-8 = 3.9e-3 relative"},
};
// fp32 paths: measured ~1e-6 (CPU) .. ~3e-6 (3xTF32 convolutions), so 1e-5 is ~3x.
constexpr double kTolF32 = 1e-5;
double act_unit(DType dt) {
  for (const auto& t : kTolerances)
    if (t.dt == dt) return t.act_unit;
  return 0.0;
}
// Finite differences (group "fd", the backward ops' gradients): dL/dx_i of L(x) = sum_j
// g_j f(x)_j (double sums of the backend's float outputs) by the fourth-order central
// difference (-L(x+2h) + 8L(x+h) - 8L(x-h) + L(x-2h)) / 12h, h = kFdStep times the power
// of two at or below max(1, |x_i|), on small problems; normalised as check() does. The
// error is the O(h^4) truncation plus the forward's float rounding over h: measured at
// most 3.6e-5 on the CPU (the training attention; <= 6e-6 for the other ops), so kTolFd
// is ~3x that. A wrong term of a gradient is O(|dL/dx|); the fd group also shows the
// tanh-approximate GELU's derivative (off by up to 7.6e-4 from the erf one there) rejected.
constexpr double kFdStep = 1.0 / 32;
constexpr double kTolFd = 1e-4;

// ---------------- the op table: every op of src/backend.h ----------------
// Each Backend op, forward or backward, with the group of this file that checks it on
// every target (src/backend.h's CPU backend with its optimised and portable kernels,
// and the CUDA backend when built and a GPU is present): against a naive reference
// where one is written here, else against the CPU backend on the same inputs (the CPU
// then only against itself: the "fd" group's finite differences are its check), and
// the GPU also against the CPU. `token` is a word of its checks' names (null: the op's
// name). `every_target` false: a model-level check that runs on the CPU only. `fd`: a
// finite-difference check of the gradient (group "fd", every target). The "op-table"
// group (full runs) fails for an op of this table that no check exercised, and for an
// op of src/backend.h's list (RARGEN_BACKEND_OPS) that this table lacks.
// Queries that compute nothing (name, is_gpu, free_memory, supports) are not listed.
enum class TableKind { Memory, Forward, Backward, Optimizer };
struct OpEntry {
  const char* op;
  TableKind kind;
  const char* group;
  const char* token;
  bool every_target;
  bool fd;
};
constexpr OpEntry kOps[] = {
    // memory: every check allocates, uploads and downloads through Target ("*": any check)
    {"alloc", TableKind::Memory, "every group (Target)", "*", true, false},
    {"free", TableKind::Memory, "every group (Target)", "*", true, false},
    {"upload", TableKind::Memory, "every group (Target)", "*", true, false},
    {"download", TableKind::Memory, "every group (Target)", "*", true, false},
    {"synchronize", TableKind::Memory, "every group (Target)", "*", true, false},
    {"copy", TableKind::Memory, "elementwise", nullptr, true, false},
    {"fill", TableKind::Memory, "elementwise", nullptr, true, false},
    {"upload_weight", TableKind::Memory, "weights", nullptr, true, false},
    // forward
    {"linear", TableKind::Forward, "linear", nullptr, true, false},
    {"layernorm", TableKind::Forward, "norms", nullptr, true, false},
    {"layernorm_modulate", TableKind::Forward, "norms", nullptr, true, false},
    {"gated_residual", TableKind::Forward, "norms", nullptr, true, false},
    {"groupnorm", TableKind::Forward, "norms", nullptr, true, false},
    {"gelu", TableKind::Forward, "elementwise", nullptr, true, false},
    {"silu", TableKind::Forward, "elementwise", nullptr, true, false},
    {"add", TableKind::Forward, "elementwise", nullptr, true, false},
    {"embedding", TableKind::Forward, "elementwise", nullptr, true, false},
    {"conv2d", TableKind::Forward, "conv", nullptr, true, false},
    {"upsample_nearest2x", TableKind::Forward, "conv", nullptr, true, false},
    {"avgpool2x2", TableKind::Forward, "conv", nullptr, true, false},
    {"relu", TableKind::Forward, "pooling", nullptr, true, false},
    {"maxpool2d", TableKind::Forward, "pooling", nullptr, true, false},
    {"avgpool2d", TableKind::Forward, "pooling", nullptr, true, false},
    {"copy_channels", TableKind::Forward, "pooling", nullptr, true, false},
    {"conv3x3_fused", TableKind::Forward, "conv_fused", nullptr, true, false},
    {"codebook_nearest", TableKind::Forward, "codebook", nullptr, true, false},
    {"codebook_lookup", TableKind::Forward, "codebook", nullptr, true, false},
    {"graph_capture_begin", TableKind::Forward, "model-graph", "recorded+replayed", false, false},
    {"graph_capture_end", TableKind::Forward, "model-graph", "recorded+replayed", false, false},
    {"graph_replay", TableKind::Forward, "model-graph", "recorded+replayed", false, false},
    {"graph_reset", TableKind::Forward, "model-graph", "recorded+replayed", false, false},
    // ---- attention / sampling forward (the decode path): one block, re-merged as a whole ----
    {"attention", TableKind::Forward, "attention, attention-cache", nullptr, true, false},
    {"attention_ext", TableKind::Forward, "model-graph (device-side pos0; CUDA caches: test/gpu/cuda_ext_test.cc)",
     "recorded+replayed", false, false},
    {"sample", TableKind::Forward, "sample", nullptr, true, false},
    // ---- end of the attention / sampling forward block ----
    // training
    {"linear_backward", TableKind::Backward, "backward, fd", nullptr, true, true},
    {"layernorm_modulate_backward", TableKind::Backward, "backward (vs cpu), fd", nullptr, true, true},
    {"gated_residual_backward", TableKind::Backward, "backward, fd", nullptr, true, true},
    {"gelu_backward", TableKind::Backward, "backward, fd", nullptr, true, true},
    {"silu_backward", TableKind::Backward, "backward, fd", nullptr, true, true},
    {"dropout", TableKind::Backward, "backward, fd (its own backward)", nullptr, true, true},
    {"attention_train_forward", TableKind::Forward, "backward, fd (the forward attention_backward differentiates)",
     nullptr, true, true},
    {"attention_backward", TableKind::Backward, "backward (vs cpu), fd", nullptr, true, true},
    {"embedding_backward", TableKind::Backward, "backward, fd", nullptr, true, true},
    {"cross_entropy", TableKind::Backward, "backward, fd (dlogits of the loss)", nullptr, true, true},
    {"sum_squares", TableKind::Optimizer, "backward", nullptr, true, false},
    {"adamw", TableKind::Optimizer, "backward", nullptr, true, false},
    // streams and events (the synchronous defaults on the CPU; cudaEvent_t on CUDA)
    {"event_create", TableKind::Memory, "contract", nullptr, true, false},
    {"event_record", TableKind::Memory, "contract", nullptr, true, false},
    {"event_synchronize", TableKind::Memory, "contract", nullptr, true, false},
    {"event_destroy", TableKind::Memory, "contract", nullptr, true, false},
    {"native_stream", TableKind::Memory, "contract", nullptr, true, false},
};
const char* kind_name(TableKind k) {
  return k == TableKind::Memory ? "memory" : k == TableKind::Forward ? "forward" : k == TableKind::Backward ? "backward"
                                                                                                   : "optimizer";
}

// Which ops each target's checks exercised (words of the check names), and which of them
// had a finite-difference check ("fd" names).
std::map<std::string, std::set<std::string>> g_checked, g_fd_checked;  // op -> target labels
std::set<std::string> g_labels_checked;
bool is_target_label(const std::string& s);
void note_checked(const std::string& name) {
  std::string label = "cpu", rest = name;
  size_t colon = name.find(": ");
  if (colon != std::string::npos) {
    std::string pre = name.substr(0, colon);
    size_t vs = pre.find(" vs ");
    if (vs != std::string::npos) pre = pre.substr(0, vs);
    if (is_target_label(pre)) {
      label = pre;
      rest = name.substr(colon + 2);
    }
  }
  g_labels_checked.insert(label);
  bool fd = rest.rfind("fd ", 0) == 0;
  std::string word;
  for (size_t i = 0; i <= rest.size(); i++) {
    char c = i < rest.size() ? rest[i] : ' ';
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '+') {
      word += c;
      continue;
    }
    if (!word.empty()) {
      g_checked[word].insert(label);
      if (fd) g_fd_checked[word].insert(label);
    }
    word.clear();
  }
}

// Max abs error, normalised by max(1, max |ref|).
bool check(const std::string& name, const Vec& got, const Vec& ref, double tol) {
  g_checks++;
  note_checked(name);
  double maxerr = 0, maxref = 0;
  bool bad_size = got.size() != ref.size();
  for (size_t i = 0; i < std::min(got.size(), ref.size()); i++) {
    double e = got[i] == ref[i] ? 0.0 : std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(e == e)) e = std::numeric_limits<double>::infinity();
    maxerr = std::max(maxerr, e);
    if (std::isfinite(ref[i])) maxref = std::max(maxref, std::fabs(static_cast<double>(ref[i])));
  }
  double norm = maxerr / std::max(1.0, maxref);
  bool ok = !bad_size && norm <= tol;
  std::printf("  %-4s %-58s max_abs_err %.3g (normalised %.3g, tol %.1g)\n", ok ? "ok" : "FAIL", name.c_str(),
              maxerr, norm, tol);
  if (!ok) g_failures++;
  return ok;
}
bool check_ints(const std::string& name, const IVec& got, const IVec& ref) {
  g_checks++;
  note_checked(name);
  size_t diff = got.size() == ref.size() ? 0 : std::max(got.size(), ref.size());
  for (size_t i = 0; i < std::min(got.size(), ref.size()); i++) diff += got[i] != ref[i];
  bool ok = diff == 0;
  std::printf("  %-4s %-58s %zu of %zu differ\n", ok ? "ok" : "FAIL", name.c_str(), diff, ref.size());
  if (!ok) g_failures++;
  return ok;
}

// A backend under test plus helpers to move host vectors in and out.
struct Target {
  std::string label;
  Backend* be;
  bool portable;  // CPU with the AVX2 kernels switched off
  bool no_winograd = false;  // CPU with 3x3 convolutions as implicit GEMM
  std::vector<void*> live;
  ~Target() { release(); }
  void release() {
    for (void* p : live) be->free(p);
    live.clear();
  }
  float* up(const Vec& v) {
    float* p = static_cast<float*>(be->alloc(std::max<size_t>(1, v.size()) * 4));
    be->upload(p, v.data(), v.size() * 4);
    live.push_back(p);
    return p;
  }
  int32_t* upi(const IVec& v) {
    int32_t* p = static_cast<int32_t*>(be->alloc(std::max<size_t>(1, v.size()) * 4));
    be->upload(p, v.data(), v.size() * 4);
    live.push_back(p);
    return p;
  }
  float* zeros(size_t n) { return up(Vec(n, 0.f)); }
  Weight weight(const Vec& w, DType dt) {
    Weight x = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), dt);
    live.push_back(const_cast<void*>(x.data));
    return x;
  }
  Vec down(const float* p, size_t n) {
    Vec v(n);
    be->synchronize();
    be->download(v.data(), p, n * 4);
    return v;
  }
  IVec downi(const int32_t* p, size_t n) {
    IVec v(n);
    be->synchronize();
    be->download(v.data(), p, n * 4);
    return v;
  }
};

std::vector<std::unique_ptr<Target>> g_targets;
bool is_target_label(const std::string& s) {
  return std::any_of(g_targets.begin(), g_targets.end(), [&](const std::unique_ptr<Target>& t) { return t->label == s; });
}

// Runs `run` on target t with its CPU kernel settings (portable kernels; Winograd off
// where the target says and `winograd_flag`), then resets them and releases t's scratch.
template <class R>
R run_on(Target& t, const std::function<R(Target&)>& run, bool winograd_flag = true) {
  cpu::force_portable(t.portable);
  if (winograd_flag) cpu::disable_winograd(t.no_winograd);
  R out = run(t);
  cpu::force_portable(false);
  if (winograd_flag) cpu::disable_winograd(false);
  t.release();
  return out;
}

// Runs `run` on every target; checks each against `ref`, and CUDA also against the CPU.
void compare(const std::string& name, const Vec& ref, double tol, const std::function<Vec(Target&)>& run) {
  Vec cpu_out;
  for (auto& t : g_targets) {
    Vec out = run_on(*t, run);
    check(t->label + ": " + name, out, ref, tol);
    if (t->label == "cpu") cpu_out = out;
    else if (t->be->is_gpu() && !cpu_out.empty()) check(t->label + " vs cpu: " + name, out, cpu_out, tol);
  }
}
// For ops whose GPU path rounds activations to `dt` (see the tolerance table): CPU
// targets against kTolF32 as compare(); GPU targets (and GPU vs CPU) element by element
// against kTolF32 * max(1, max |ref|) + act_unit(dt) * bound[i], bound[i] = sum_k
// |x_k w_k| of output i (the references compute it alongside). Prints the fraction of
// that tolerance used, the number the first GPU run records.
// The largest fraction of its tolerance any element uses (> 1: out of tolerance).
double bound_used(const Vec& got, const Vec& ref, const Vec& bound, DType dt, double* maxerr_out = nullptr,
                  double* maxref_out = nullptr) {
  double maxref = 1.0, used = 0.0, maxerr = 0.0;
  for (float r : ref)
    if (std::isfinite(r)) maxref = std::max(maxref, std::fabs(static_cast<double>(r)));
  if (got.size() != ref.size() || bound.size() != ref.size()) return std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < ref.size(); i++) {
    double e = got[i] == ref[i] ? 0.0 : std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(e == e)) e = std::numeric_limits<double>::infinity();
    maxerr = std::max(maxerr, e);
    used = std::max(used, e / (kTolF32 * maxref + act_unit(dt) * bound[i]));
  }
  if (maxerr_out) *maxerr_out = maxerr;
  if (maxref_out) *maxref_out = maxref;
  return used;
}
bool check_bound(const std::string& name, const Vec& got, const Vec& ref, const Vec& bound, DType dt) {
  g_checks++;
  note_checked(name);
  double maxerr = 0, maxref = 1;
  double used = bound_used(got, ref, bound, dt, &maxerr, &maxref);
  bool ok = used <= 1.0;
  std::printf("  %-4s %-58s max_abs_err %.3g (normalised %.3g; used %.3g of kTolF32 + %s rounding bound)\n",
              ok ? "ok" : "FAIL", name.c_str(), maxerr, maxerr / maxref, used, dtname(dt));
  if (!ok) g_failures++;
  return ok;
}
void compare_rounded(const std::string& name, const Vec& ref, const Vec& bound, DType dt,
                     const std::function<Vec(Target&)>& run) {
  Vec cpu_out;
  for (auto& t : g_targets) {
    Vec out = run_on(*t, run);
    if (!t->be->is_gpu()) {
      check(t->label + ": " + name, out, ref, kTolF32);
      if (t->label == "cpu") cpu_out = out;
      continue;
    }
    check_bound(t->label + ": " + name, out, ref, bound, dt);
    if (!cpu_out.empty()) check_bound(t->label + " vs cpu: " + name, out, cpu_out, bound, dt);
  }
}
void compare_ints(const std::string& name, const IVec& ref, const std::function<IVec(Target&)>& run) {
  for (auto& t : g_targets) {
    IVec out = run_on(*t, run, false);
    check_ints(t->label + ": " + name, out, ref);
  }
}

bool selected(const char* group) {
  if (g_filter && !std::strstr(group, g_filter)) return false;
  std::printf("[%s]\n", group);
  return true;
}

// ---------------- naive references ----------------
void ref_layernorm_row(float* y, const float* x, int C, const float* w, const float* b, float eps) {
  double m = 0, v = 0;
  for (int c = 0; c < C; c++) m += x[c];
  m /= C;
  for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
  v /= C;
  double r = 1.0 / std::sqrt(v + eps);
  for (int c = 0; c < C; c++) y[c] = static_cast<float>((x[c] - m) * r * (w ? w[c] : 1.0) + (b ? b[c] : 0.0));
}

// ---------------- tests ----------------
void test_linear() {
  if (!selected("linear")) return;
  struct Case { int64_t M; int N, K; };
  const Case cases[] = {{1, 64, 64}, {4, 2304, 768}, {3, 37, 29}, {8, 200, 96}, {13, 130, 72}, {39, 150, 100},
                        {17, 33, 70}, {300, 200, 300}, {197, 1030, 513}};
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    for (const Case& c : cases) {
      for (int variant = 0; variant < 2; variant++) {
        bool with_bias = variant == 0, accumulate = variant == 1;
        Vec x = randn(c.M * c.K), w = randn(static_cast<size_t>(c.N) * c.K, 0.2f), b = randn(c.N);
        Vec init = randn(c.M * c.N);
        Vec wr = round_to(w, dt);
        Vec ref(c.M * c.N), bound(c.M * c.N);
        for (int64_t m = 0; m < c.M; m++)
          for (int n = 0; n < c.N; n++) {
            double s = with_bias ? b[n] : 0.0, a = 0.0;
            for (int k = 0; k < c.K; k++) {
              double p = static_cast<double>(x[m * c.K + k]) * wr[static_cast<size_t>(n) * c.K + k];
              s += p;
              a += std::fabs(p);
            }
            ref[m * c.N + n] = static_cast<float>(s + (accumulate ? init[m * c.N + n] : 0.0));
            bound[m * c.N + n] = static_cast<float>(a);
          }
        char name[160];
        std::snprintf(name, sizeof name, "linear %s M=%lld N=%d K=%d%s%s", dtname(dt), (long long)c.M, c.N, c.K,
                      with_bias ? " bias" : "", accumulate ? " accumulate" : "");
        compare_rounded(name, ref, bound, dt, [&](Target& t) {
          float* out = t.up(init);
          t.be->linear(out, t.up(x), t.weight(w, dt), with_bias ? t.up(b) : nullptr, c.M, c.N, c.K, accumulate);
          return t.down(out, c.M * c.N);
        });
      }
    }
  }
}

// The tolerance table itself, on the CPU (so the dry run and CI check it): a product
// whose activations were rounded to f16/bf16, as the CUDA paths do, is inside the
// rounding bound; one output off by the bound is not; an fp32 product is within kTolF32.
void test_tolerances() {
  if (!selected("tolerances")) return;
  const int M = 16, N = 64, K = 700;
  Vec x = randn(static_cast<size_t>(M) * K), w = randn(static_cast<size_t>(N) * K, 0.2f);
  for (DType dt : {DType::F16, DType::BF16}) {
    Vec xr = round_to(x, dt), wr = round_to(w, dt), ref(M * N), got(M * N), bound(M * N);
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double s = 0, r = 0, a = 0;
        for (int k = 0; k < K; k++) {
          double p = static_cast<double>(x[m * K + k]) * wr[n * K + k];
          s += p;
          a += std::fabs(p);
          r += static_cast<double>(xr[m * K + k]) * wr[n * K + k];
        }
        ref[m * N + n] = static_cast<float>(s);
        got[m * N + n] = static_cast<float>(r);  // what the GPU path computes (fp32 accumulation aside)
        bound[m * N + n] = static_cast<float>(a);
      }
    double used = bound_used(got, ref, bound, dt);
    Vec off = got;
    off[5] = static_cast<float>(ref[5] + 1.01 * (kTolF32 * 1 + act_unit(dt) * bound[5]) + 1e-3);
    double used_off = bound_used(off, ref, bound, dt);
    double plain_used = bound_used(got, ref, bound, DType::F32);
    g_checks++;
    bool ok = used <= 1.0 && used_off > 1.0 && plain_used > 1.0;
    std::printf("  %-4s %s-rounded activations: used %.3g of the %s bound (one output off by it: %.3g; vs kTolF32 "
                "alone: %.3g)\n", ok ? "ok" : "FAIL", dtname(dt), used, dtname(dt), used_off, plain_used);
    if (!ok) g_failures++;
  }
}

void test_norms() {
  if (!selected("norms")) return;
  for (int C : {16, 64, 77, 768}) {
    int64_t rows = 37;
    Vec x = randn(rows * C, 2.f), w = randn(C), b = randn(C);
    for (auto& v : x) v += 3.f;  // a mean far from zero
    Vec ref(rows * C), ref_na(rows * C);
    for (int64_t r = 0; r < rows; r++) {
      ref_layernorm_row(&ref[r * C], &x[r * C], C, w.data(), b.data(), 1e-6f);
      ref_layernorm_row(&ref_na[r * C], &x[r * C], C, nullptr, nullptr, 1e-6f);
    }
    compare("layernorm affine C=" + std::to_string(C), ref, kTolF32, [&](Target& t) {
      float* out = t.zeros(rows * C);
      t.be->layernorm(out, t.up(x), t.up(w), t.up(b), rows, C, 1e-6f);
      return t.down(out, rows * C);
    });
    // modulate: 5 modulation rows of stride 6C, shift at 0, scale at C, row_map random
    int P = 5;
    int64_t stride = 6 * static_cast<int64_t>(C);
    Vec mod = randn(P * stride, 0.5f);
    IVec map(rows);
    for (auto& m : map) m = static_cast<int32_t>(g_rng() % P);
    Vec refm(rows * C);
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < C; c++)
        refm[r * C + c] = ref_na[r * C + c] * (1.f + mod[map[r] * stride + C + c]) + mod[map[r] * stride + c];
    compare("layernorm_modulate no-affine row_map C=" + std::to_string(C), refm, kTolF32, [&](Target& t) {
      float* out = t.zeros(rows * C);
      float* md = t.up(mod);
      t.be->layernorm_modulate(out, t.up(x), nullptr, nullptr, md, md + C, stride, t.upi(map), rows, C, 1e-6f);
      return t.down(out, rows * C);
    });
    Vec y = randn(rows * C), refg = x;
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < C; c++) refg[r * C + c] += mod[map[r] * stride + 2 * C + c] * y[r * C + c];
    compare("gated_residual row_map C=" + std::to_string(C), refg, 1e-6, [&](Target& t) {
      float* xx = t.up(x);
      float* md = t.up(mod);
      t.be->gated_residual(xx, t.up(y), md + 2 * C, stride, t.upi(map), rows, C);
      return t.down(xx, rows * C);
    });
  }
  // groupnorm (+SiLU)
  for (int silu = 0; silu < 2; silu++) {
    int B = 2, C = 64, G = 32;
    int64_t HW = 37 * 19;
    Vec x = randn(B * C * HW, 1.5f), w = randn(C), b = randn(C);
    Vec ref(x.size());
    int cpg = C / G;
    for (int bb = 0; bb < B; bb++)
      for (int g = 0; g < G; g++) {
        const float* xs = &x[(static_cast<int64_t>(bb) * C + g * cpg) * HW];
        double m = 0, v = 0;
        int64_t n = cpg * HW;
        for (int64_t i = 0; i < n; i++) m += xs[i];
        m /= n;
        for (int64_t i = 0; i < n; i++) v += (xs[i] - m) * (xs[i] - m);
        v /= n;
        double r = 1 / std::sqrt(v + 1e-6);
        for (int64_t i = 0; i < n; i++) {
          int c = g * cpg + static_cast<int>(i / HW);
          double y = (xs[i] - m) * r * w[c] + b[c];
          if (silu) y = y / (1 + std::exp(-y));
          ref[(static_cast<int64_t>(bb) * C + g * cpg) * HW + i] = static_cast<float>(y);
        }
      }
    compare(std::string("groupnorm G=32") + (silu ? " +silu" : ""), ref, kTolF32, [&](Target& t) {
      float* out = t.zeros(x.size());
      t.be->groupnorm(out, t.up(x), t.up(w), t.up(b), B, C, HW, G, 1e-6f, silu);
      return t.down(out, x.size());
    });
  }
}

void test_elementwise() {
  if (!selected("elementwise")) return;
  int64_t n = 100003;
  Vec x = randn(n, 3.f), y = randn(n);
  Vec rg(n), rs(n), ra(n);
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    rg[i] = static_cast<float>(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    rs[i] = static_cast<float>(v / (1 + std::exp(-v)));
    ra[i] = x[i] + y[i];
  }
  compare("gelu (erf)", rg, 1e-6, [&](Target& t) {
    float* o = t.zeros(n);
    t.be->gelu(o, t.up(x), n);
    return t.down(o, n);
  });
  compare("silu", rs, 1e-6, [&](Target& t) {
    float* o = t.zeros(n);
    t.be->silu(o, t.up(x), n);
    return t.down(o, n);
  });
  compare("add", ra, 0, [&](Target& t) {
    float* o = t.zeros(n);
    t.be->add(o, t.up(x), t.up(y), n);
    return t.down(o, n);
  });
  // embedding (with -1 ids) and accumulate
  int rows = 50, C = 40, trows = 11;
  Vec table = randn(trows * C), init = randn(rows * C);
  IVec ids(rows);
  for (auto& i : ids) i = static_cast<int32_t>(g_rng() % (trows + 1)) - 1;
  Vec re(rows * C), rea(rows * C);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < C; c++) {
      float v = ids[r] < 0 ? 0.f : table[ids[r] * C + c];
      re[r * C + c] = v;
      rea[r * C + c] = init[r * C + c] + v;
    }
  compare("embedding (ids -1 -> zeros)", re, 0, [&](Target& t) {
    float* o = t.up(init);
    t.be->embedding(o, t.up(table), t.upi(ids), rows, C, false);
    return t.down(o, rows * C);
  });
  compare("embedding accumulate", rea, 0, [&](Target& t) {
    float* o = t.up(init);
    t.be->embedding(o, t.up(table), t.upi(ids), rows, C, true);
    return t.down(o, rows * C);
  });
  // memory ops: copy, fill
  compare("copy + fill", [&] { Vec r = x; std::fill(r.begin() + 10, r.begin() + 20, 2.5f); return r; }(), 0,
          [&](Target& t) {
            float* o = t.zeros(n);
            t.be->copy(o, t.up(x), n * 4);
            t.be->fill(o + 10, 2.5f, 10);
            return t.down(o, n);
          });
}

// Naive attention: row b's new positions pos[b].. in cache slot slot[b] (caches
// (slots, H, Tc, D)); full causal softmax over the slot's positions 0..pos[b]+i.
void ref_attention(Vec& out, Vec& kc, Vec& vc, const Vec& qkv, const Vec& qw, const Vec& qb, const Vec& kw,
                   const Vec& kb, int B, int Tn, const IVec& pos, const IVec& slot, int Tc, int H, int D) {
  int C = H * D;
  for (int b = 0; b < B; b++)
    for (int i = 0; i < Tn; i++)
      for (int h = 0; h < H; h++) {
        const float* row = &qkv[(static_cast<int64_t>(b) * Tn + i) * 3 * C];
        int64_t dst = ((static_cast<int64_t>(slot[b]) * H + h) * Tc + pos[b] + i) * D;
        ref_layernorm_row(&kc[dst], row + C + h * D, D, kw.data(), kb.data(), 1e-6f);
        for (int d = 0; d < D; d++) vc[dst + d] = row[2 * C + h * D + d];
      }
  std::vector<double> s(Tc);
  Vec q(D);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < Tn; i++)
      for (int h = 0; h < H; h++) {
        ref_layernorm_row(q.data(), &qkv[(static_cast<int64_t>(b) * Tn + i) * 3 * C + h * D], D, qw.data(), qb.data(), 1e-6f);
        const int64_t base = (static_cast<int64_t>(slot[b]) * H + h) * Tc;
        int L = pos[b] + i + 1;
        double mx = -1e300;
        for (int j = 0; j < L; j++) {
          double d = 0;
          for (int e = 0; e < D; e++) d += static_cast<double>(q[e]) * kc[(base + j) * D + e];
          s[j] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[j]);
        }
        double den = 0;
        for (int j = 0; j < L; j++) den += (s[j] = std::exp(s[j] - mx));
        for (int e = 0; e < D; e++) {
          double a = 0;
          for (int j = 0; j < L; j++) a += s[j] * vc[(base + j) * D + e];
          out[(static_cast<int64_t>(b) * Tn + i) * C + h * D + e] = static_cast<float>(a / den);
        }
      }
}

// One position per row, or all rows at pos0 in slot r (the training / generate layout).
struct AttnCase {
  int B, H, D, Tc, Tn, slots;
  IVec pos, slot;
};
AttnCase uniform_case(int B, int H, int D, int Tc, int pos0, int Tn) {
  AttnCase c{B, H, D, Tc, Tn, B, IVec(B, pos0), IVec(B)};
  for (int b = 0; b < B; b++) c.slot[b] = b;
  return c;
}

void run_attention_case(const AttnCase& c, const char* name, bool with_caches) {
  int C = c.H * c.D;
  Vec qkv = randn(static_cast<size_t>(c.B) * c.Tn * 3 * C);
  Vec qw = randn(c.D, 0.5f), qb = randn(c.D, 0.2f), kw = randn(c.D, 0.5f), kb = randn(c.D, 0.2f);
  size_t cache_n = static_cast<size_t>(c.slots) * c.H * c.Tc * c.D;
  // Cache positions before pos hold earlier (already normalised) keys/values.
  Vec kc0 = randn(cache_n), vc0 = randn(cache_n);
  Vec out(static_cast<size_t>(c.B) * c.Tn * C), kc = kc0, vc = vc0;
  ref_attention(out, kc, vc, qkv, qw, qb, kw, kb, c.B, c.Tn, c.pos, c.slot, c.Tc, c.H, c.D);
  Vec ref = out;
  if (with_caches) {
    ref.insert(ref.end(), kc.begin(), kc.end());
    ref.insert(ref.end(), vc.begin(), vc.end());
  }
  compare(name, ref, 2e-5, [&](Target& t) {
    float* o = t.zeros(out.size());
    float* k = t.up(kc0);
    float* v = t.up(vc0);
    t.be->attention(o, k, v, DType::F32, t.up(qkv), t.up(qw), t.up(qb), t.up(kw), t.up(kb), c.B, c.Tn, t.upi(c.pos),
                    t.upi(c.slot), c.slots, c.Tc, c.H, c.D, 1e-6f);
    Vec r = t.down(o, out.size());
    if (with_caches) {
      Vec kk = t.down(k, cache_n), vv = t.down(v, cache_n);
      r.insert(r.end(), kk.begin(), kk.end());
      r.insert(r.end(), vv.begin(), vv.end());
    }
    return r;
  });
}

void test_attention() {
  if (!selected("attention")) return;
  struct Case { int B, H, D, Tc, pos0, Tn; };
  const Case cases[] = {{2, 4, 16, 17, 0, 17}, {3, 2, 48, 40, 0, 40}, {2, 3, 80, 30, 0, 30}, {1, 2, 88, 20, 0, 20},
                        {2, 2, 128, 25, 0, 25}, {4, 4, 48, 33, 0, 2},  {4, 4, 48, 33, 17, 1}, {2, 2, 88, 19, 18, 1},
                        {2, 3, 64, 300, 0, 300}, {2, 2, 20, 15, 0, 15}, {1, 1, 33, 9, 3, 2}};
  for (const Case& c : cases) {
    char name[160];
    std::snprintf(name, sizeof name, "attention B=%d H=%d D=%d Tcache=%d pos0=%d Tn=%d", c.B, c.H, c.D, c.Tc, c.pos0, c.Tn);
    run_attention_case(uniform_case(c.B, c.H, c.D, c.Tc, c.pos0, c.Tn), name, false);
  }
  // A position and a cache slot per row (continuous batching): rows at different
  // positions, slots permuted and with gaps (slots > rows), decode and prefill.
  const AttnCase per_row[] = {
      {5, 4, 48, 33, 1, 9, {0, 31, 7, 2, 17}, {8, 0, 3, 6, 1}},
      {4, 2, 88, 19, 1, 4, {18, 1, 9, 4}, {3, 2, 1, 0}},
      {3, 3, 64, 300, 1, 7, {299, 0, 150}, {6, 2, 4}},
      {4, 4, 48, 33, 2, 6, {0, 10, 0, 31}, {5, 0, 2, 3}},
      {2, 2, 20, 40, 5, 3, {0, 30}, {2, 0}},
  };
  for (const AttnCase& c : per_row) {
    std::string name = "attention per-row pos/slot B=" + std::to_string(c.B) + " D=" + std::to_string(c.D) +
                       " Tcache=" + std::to_string(c.Tc) + " Tn=" + std::to_string(c.Tn) + " slots=" +
                       std::to_string(c.slots);
    run_attention_case(c, name.c_str(), true);
  }
}

// The caches themselves: normalised k and raw v written at pos0.., the rest untouched.
void test_attention_cache() {
  if (!selected("attention-cache")) return;
  run_attention_case(uniform_case(2, 3, 48, 12, 5, 3), "attention out + k/v caches (pos0=5, Tn=3)", true);
}

// Reference sampler (same rules as backend.h: CFG, temperature, top-k, top-p by rank
// with ties to the lower index, inverse CDF in index order).
IVec ref_sample(const Vec& logits, int B, int V, bool cfg, float s, float temp, int top_k, float top_p, bool greedy,
                const Vec& u) {
  IVec out(B);
  for (int b = 0; b < B; b++) {
    std::vector<double> l(V);
    for (int v = 0; v < V; v++) {
      float c = logits[static_cast<size_t>(b) * V + v];
      l[v] = cfg ? logits[static_cast<size_t>(B + b) * V + v] + (c - logits[static_cast<size_t>(B + b) * V + v]) * s : c;
    }
    if (greedy) {
      out[b] = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
      continue;
    }
    for (auto& x : l) x = static_cast<float>(static_cast<float>(x) / temp);
    std::vector<int> idx(V);
    for (int v = 0; v < V; v++) idx[v] = v;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int c) { return l[a] > l[c]; });
    int kept = top_k > 0 && top_k < V ? top_k : V;
    if (top_p < 1.f) {
      double tot = 0, cum = 0;
      for (int r = 0; r < kept; r++) tot += std::exp(l[idx[r]] - l[idx[0]]);
      int r = 0;
      for (; r < kept; r++) {
        cum += std::exp(l[idx[r]] - l[idx[0]]) / tot;
        if (cum >= top_p) { r++; break; }
      }
      kept = std::max(1, std::min(kept, r));
    }
    std::vector<double> p(V, 0.0);
    double total = 0;
    for (int r = 0; r < kept; r++) total += (p[idx[r]] = std::exp(l[idx[r]] - l[idx[0]]));
    double target = u[b] * total, cum = 0;
    int chosen = -1, last = 0;
    for (int v = 0; v < V; v++) {
      if (p[v] <= 0) continue;
      last = v;
      cum += p[v];
      if (cum > target) { chosen = v; break; }
    }
    out[b] = chosen >= 0 ? chosen : last;
  }
  return out;
}

void test_sample() {
  if (!selected("sample")) return;
  int B = 6, V = 1024;
  struct Case { bool cfg; float s, temp; int top_k; float top_p; bool greedy; };
  const Case cases[] = {{false, 1, 1, 0, 1, true},     {true, 3.5f, 1, 0, 1, true},  {false, 1, 1, 0, 1, false},
                        {true, 7.f, 1.02f, 0, 1, false}, {true, 2.f, 0.7f, 50, 1, false}, {false, 1, 1, 0, 0.8f, false},
                        {true, 4.f, 1.f, 100, 0.9f, false}, {false, 1, 1, 1, 1, false}};
  for (const Case& c : cases) {
    Vec logits = randn(static_cast<size_t>(2) * B * V, 2.f);
    logits[7] = logits[9] = 50.f;  // an exact tie for greedy: the lower index wins
    Vec u = randu(B, 0.f, 1.f);
    IVec ref = ref_sample(logits, B, V, c.cfg, c.s, c.temp, c.top_k, c.top_p, c.greedy, u);
    char name[160];
    std::snprintf(name, sizeof name, "sample cfg=%d s=%.2f T=%.2f top_k=%d top_p=%.2f greedy=%d", c.cfg, c.s, c.temp,
                  c.top_k, c.top_p, c.greedy);
    compare_ints(name, ref, [&](Target& t) {
      IVec out(B);
      t.be->sample(out.data(), t.up(logits), B, V, c.cfg, c.s, c.temp, c.top_k, c.top_p, c.greedy, u.data());
      t.be->synchronize();
      return out;
    });
  }
}

void test_conv() {
  if (!selected("conv")) return;
  struct Case { int B, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw; DType dt; bool bias; };
  const Case cases[] = {{2, 8, 16, 16, 12, 3, 3, 1, 1, 1, 1, DType::F32, true},
                        {1, 32, 19, 23, 70, 3, 3, 1, 1, 1, 1, DType::F32, false},
                        {1, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, DType::F32, true},
                        {2, 16, 17, 9, 24, 1, 1, 1, 1, 0, 0, DType::F32, false},
                        {1, 5, 20, 21, 7, 3, 3, 2, 2, 1, 1, DType::F32, true},
                        {1, 6, 13, 11, 9, 4, 2, 1, 2, 0, 1, DType::F32, true},
                        {1, 64, 16, 16, 3, 3, 3, 1, 1, 1, 1, DType::F32, true},
                        {1, 32, 16, 16, 40, 3, 3, 1, 1, 1, 1, DType::F16, true},
                        {1, 48, 15, 9, 33, 3, 3, 1, 1, 1, 1, DType::F32, true},
                        {2, 130, 40, 24, 64, 3, 3, 1, 1, 1, 1, DType::F32, true},
                        {1, 32, 16, 16, 40, 3, 3, 1, 1, 1, 1, DType::BF16, true}};
  for (const Case& c : cases) {
    int Ho = (c.H + 2 * c.ph - c.kh) / c.sh + 1, Wo = (c.W + 2 * c.pw - c.kw) / c.sw + 1;
    Vec x = randn(static_cast<size_t>(c.B) * c.Cin * c.H * c.W);
    Vec w = randn(static_cast<size_t>(c.Cout) * c.Cin * c.kh * c.kw, 0.2f), b = randn(c.Cout);
    Vec wr = round_to(w, c.dt);
    Vec ref(static_cast<size_t>(c.B) * c.Cout * Ho * Wo), bound(ref.size());
    for (int bb = 0; bb < c.B; bb++)
      for (int co = 0; co < c.Cout; co++)
        for (int oy = 0; oy < Ho; oy++)
          for (int ox = 0; ox < Wo; ox++) {
            double s = c.bias ? b[co] : 0.0, a = 0.0;
            for (int ci = 0; ci < c.Cin; ci++)
              for (int ky = 0; ky < c.kh; ky++)
                for (int kx = 0; kx < c.kw; kx++) {
                  int iy = oy * c.sh + ky - c.ph, ix = ox * c.sw + kx - c.pw;
                  if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
                  double p = static_cast<double>(x[((static_cast<size_t>(bb) * c.Cin + ci) * c.H + iy) * c.W + ix]) *
                             wr[((static_cast<size_t>(co) * c.Cin + ci) * c.kh + ky) * c.kw + kx];
                  s += p;
                  a += std::fabs(p);
                }
            ref[((static_cast<size_t>(bb) * c.Cout + co) * Ho + oy) * Wo + ox] = static_cast<float>(s);
            bound[((static_cast<size_t>(bb) * c.Cout + co) * Ho + oy) * Wo + ox] = static_cast<float>(a);
          }
    char name[200];
    std::snprintf(name, sizeof name, "conv2d %s B=%d %dx%dx%d -> %d k%dx%d s%d,%d p%d,%d%s", dtname(c.dt), c.B, c.Cin,
                  c.H, c.W, c.Cout, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.bias ? " bias" : "");
    compare_rounded(name, ref, bound, c.dt, [&](Target& t) {
      float* o = t.zeros(ref.size());
      t.be->conv2d(o, t.up(x), t.weight(w, c.dt), c.bias ? t.up(b) : nullptr, c.B, c.Cin, c.H, c.W, c.Cout, c.kh,
                   c.kw, c.sh, c.sw, c.ph, c.pw);
      return t.down(o, ref.size());
    });
  }
  // upsample / avgpool
  int B = 2, C = 3, H = 5, W = 6;
  Vec x = randn(static_cast<size_t>(B) * C * H * W);
  Vec ru(static_cast<size_t>(B) * C * 4 * H * W), rp(static_cast<size_t>(B) * C * (H / 2) * (W / 2));
  for (int p = 0; p < B * C; p++) {
    for (int y = 0; y < 2 * H; y++)
      for (int xx = 0; xx < 2 * W; xx++) ru[(static_cast<size_t>(p) * 2 * H + y) * 2 * W + xx] = x[(static_cast<size_t>(p) * H + y / 2) * W + xx / 2];
    for (int y = 0; y < H / 2; y++)
      for (int xx = 0; xx < W / 2; xx++) {
        const float* s = &x[(static_cast<size_t>(p) * H + 2 * y) * W + 2 * xx];
        rp[(static_cast<size_t>(p) * (H / 2) + y) * (W / 2) + xx] = (((s[0] + s[1]) + s[W]) + s[W + 1]) * 0.25f;
      }
  }
  compare("upsample_nearest2x", ru, 0, [&](Target& t) {
    float* o = t.zeros(ru.size());
    t.be->upsample_nearest2x(o, t.up(x), B, C, H, W);
    return t.down(o, ru.size());
  });
  compare("avgpool2x2 (odd sizes floor)", rp, 1e-7, [&](Target& t) {
    float* o = t.zeros(rp.size());
    t.be->avgpool2x2(o, t.up(x), B, C, H, W);
    return t.down(o, rp.size());
  });
}

// The pooling block (the FID InceptionV3's ops): relu (in place, NaN -> 0), max and
// average pools with stride and padding (Inception's 3x3 s1 p1 / s2 p0, its global 8x8
// pool, padded windows at odd sizes, both count_include_pad modes) and channel slice
// copies with and without ReLU into a buffer whose other channels must stay. The
// references take the op table's order (row-major window sums in float), so every target
// matches exactly (measured: 0 on the CPU targets).
void test_pooling() {
  if (!selected("pooling")) return;
  {
    Vec x = randn(1001);
    x[7] = std::numeric_limits<float>::quiet_NaN();
    x[8] = -0.f;
    Vec r(x.size());
    for (size_t i = 0; i < x.size(); i++) r[i] = x[i] > 0.f ? x[i] : 0.f;
    compare("relu n=1001 in place (NaN -> 0)", r, 0, [&](Target& t) {
      float* p = t.up(x);
      t.be->relu(p, p, static_cast<int64_t>(x.size()));
      return t.down(p, x.size());
    });
  }
  struct Case { int B, C, H, W, k, s, p; bool avg, include; };
  const Case cases[] = {{2, 3, 9, 11, 3, 2, 0, false, false}, {2, 3, 9, 11, 3, 1, 1, false, false},
                        {1, 4, 7, 6, 2, 2, 1, false, false}, {1, 2, 10, 9, 3, 3, 2, false, false},
                        {2, 3, 9, 11, 3, 1, 1, true, false}, {2, 3, 9, 11, 3, 1, 1, true, true},
                        {1, 5, 8, 8, 8, 1, 0, true, true},   {2, 3, 5, 6, 2, 2, 0, true, true},
                        {1, 4, 9, 7, 3, 2, 1, true, false},  {1, 2, 10, 9, 3, 3, 2, true, true}};
  for (const Case& c : cases) {
    const int Ho = (c.H + 2 * c.p - c.k) / c.s + 1, Wo = (c.W + 2 * c.p - c.k) / c.s + 1;
    Vec x = randn(static_cast<size_t>(c.B) * c.C * c.H * c.W), r(static_cast<size_t>(c.B) * c.C * Ho * Wo);
    for (int pl = 0; pl < c.B * c.C; pl++)
      for (int oy = 0; oy < Ho; oy++)
        for (int ox = 0; ox < Wo; ox++) {
          float m = -std::numeric_limits<float>::infinity(), sum = 0.f;
          int n = 0;
          for (int ky = 0; ky < c.k; ky++)
            for (int kx = 0; kx < c.k; kx++) {
              const int iy = oy * c.s - c.p + ky, ix = ox * c.s - c.p + kx;
              if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
              const float v = x[(static_cast<size_t>(pl) * c.H + iy) * c.W + ix];
              m = std::max(m, v);
              sum += v;
              n++;
            }
          r[(static_cast<size_t>(pl) * Ho + oy) * Wo + ox] =
              c.avg ? sum / static_cast<float>(c.include ? c.k * c.k : n) : m;
        }
    char name[160];
    std::snprintf(name, sizeof name, "%s B=%d C=%d %dx%d k%d s%d p%d%s", c.avg ? "avgpool2d" : "maxpool2d", c.B, c.C, c.H,
                  c.W, c.k, c.s, c.p, c.avg ? (c.include ? " include_pad" : " exclude_pad") : "");
    compare(name, r, 0, [&](Target& t) {
      float* o = t.zeros(r.size());
      if (c.avg) t.be->avgpool2d(o, t.up(x), c.B, c.C, c.H, c.W, c.k, c.s, c.p, c.include);
      else t.be->maxpool2d(o, t.up(x), c.B, c.C, c.H, c.W, c.k, c.s, c.p);
      return t.down(o, r.size());
    });
  }
  {
    const int B = 2, Csrc = 5, soff = 1, Cdst = 6, doff = 2, C = 3;
    const int64_t HW = 37;
    Vec src = randn(static_cast<size_t>(B) * Csrc * HW), dst0 = randn(static_cast<size_t>(B) * Cdst * HW);
    for (bool relu : {false, true}) {
      Vec r = dst0;
      for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
          for (int64_t i = 0; i < HW; i++) {
            const float v = src[(static_cast<size_t>(b) * Csrc + soff + c) * HW + i];
            r[(static_cast<size_t>(b) * Cdst + doff + c) * HW + i] = relu ? (v > 0.f ? v : 0.f) : v;
          }
      compare(relu ? "copy_channels 3 of 5 (from 1) into 6 (at 2) relu" : "copy_channels 3 of 5 (from 1) into 6 (at 2)",
              r, 0, [&](Target& t) {
                float* d = t.up(dst0);
                t.be->copy_channels(d, Cdst, doff, t.up(src), Csrc, soff, B, C, HW, relu);
                return t.down(d, r.size());
              });
    }
  }
}

// conv3x3_fused: GroupNorm(+SiLU) and/or nearest-2x upsampling before a 3x3 conv, bias
// and residual after; against the plain composition in double. Sizes cover Winograd
// F(2x2) (< 32x32) and F(4x4) (>= 32x32, also odd sizes with partial tiles), the
// residual aliasing the output, and the default (composed) path on cpu-no-winograd.
void test_conv_fused() {
  if (!selected("conv_fused")) return;
  struct Case { int B, Cin, H, W, Cout; bool gn, silu, up, res, alias, bias; DType dt; };
  const Case cases[] = {{1, 64, 16, 16, 64, true, true, false, true, true, false, DType::F32},
                        {2, 32, 32, 32, 48, true, true, false, false, false, true, DType::F32},
                        {1, 64, 34, 37, 32, true, false, false, true, false, true, DType::F32},
                        {1, 32, 40, 36, 32, false, false, true, false, false, true, DType::F32},
                        {1, 64, 16, 12, 64, false, false, true, true, true, true, DType::F32},
                        {1, 128, 64, 64, 128, true, true, false, true, true, false, DType::F32},
                        {1, 64, 32, 32, 3, true, true, false, false, false, true, DType::F32},
                        {1, 32, 32, 36, 40, true, true, false, true, false, true, DType::F16}};
  const int G = 16;
  const float eps = 1e-6f;
  for (const Case& c : cases) {
    const int Hi = c.up ? c.H / 2 : c.H, Wi = c.up ? c.W / 2 : c.W;
    const int64_t HWi = static_cast<int64_t>(Hi) * Wi, HW = static_cast<int64_t>(c.H) * c.W;
    Vec x = randn(static_cast<size_t>(c.B) * c.Cin * HWi, 2.f);
    for (auto& v : x) v += 1.f;
    Vec gw = randn(c.Cin), gb = randn(c.Cin);
    Vec w = randn(static_cast<size_t>(c.Cout) * c.Cin * 9, 0.2f), b = randn(c.Cout);
    Vec r = randn(static_cast<size_t>(c.B) * c.Cout * HW);
    Vec wr = round_to(w, c.dt);
    Vec ref(static_cast<size_t>(c.B) * c.Cout * HW), bound(ref.size());
    std::vector<double> pre(static_cast<size_t>(c.Cin) * HW);
    for (int bb = 0; bb < c.B; bb++) {
      const float* xb = x.data() + static_cast<size_t>(bb) * c.Cin * HWi;
      std::vector<double> nx(xb, xb + c.Cin * HWi);
      if (c.gn) {
        const int cpg = c.Cin / G;
        for (int g = 0; g < G; g++) {
          double m = 0, v = 0, n = static_cast<double>(cpg) * HWi;
          for (int64_t i = g * cpg * HWi; i < (g + 1) * cpg * HWi; i++) m += xb[i];
          m /= n;
          for (int64_t i = g * cpg * HWi; i < (g + 1) * cpg * HWi; i++) v += (xb[i] - m) * (xb[i] - m);
          double rs = 1.0 / std::sqrt(v / n + eps);
          for (int cc = g * cpg; cc < (g + 1) * cpg; cc++)
            for (int64_t i = 0; i < HWi; i++) {
              double y = (xb[cc * HWi + i] - m) * rs * gw[cc] + gb[cc];
              if (c.silu) y = y / (1 + std::exp(-y));
              nx[cc * HWi + i] = y;
            }
        }
      }
      for (int ci = 0; ci < c.Cin; ci++)
        for (int y = 0; y < c.H; y++)
          for (int xx = 0; xx < c.W; xx++)
            pre[(static_cast<size_t>(ci) * c.H + y) * c.W + xx] =
                c.up ? nx[(static_cast<size_t>(ci) * Hi + y / 2) * Wi + xx / 2] : nx[(static_cast<size_t>(ci) * Hi + y) * Wi + xx];
      for (int co = 0; co < c.Cout; co++)
        for (int oy = 0; oy < c.H; oy++)
          for (int ox = 0; ox < c.W; ox++) {
            double acc = c.bias ? b[co] : 0.0, a = 0.0;
            for (int ci = 0; ci < c.Cin; ci++)
              for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                  int iy = oy + ky - 1, ix = ox + kx - 1;
                  if (iy < 0 || iy >= c.H || ix < 0 || ix >= c.W) continue;
                  double p = pre[(static_cast<size_t>(ci) * c.H + iy) * c.W + ix] * wr[((static_cast<size_t>(co) * c.Cin + ci) * 3 + ky) * 3 + kx];
                  acc += p;
                  a += std::fabs(p);
                }
            size_t o = ((static_cast<size_t>(bb) * c.Cout + co) * c.H + oy) * c.W + ox;
            ref[o] = static_cast<float>(acc + (c.res ? r[o] : 0.0));
            bound[o] = static_cast<float>(a);
          }
    }
    char name[200];
    std::snprintf(name, sizeof name, "conv3x3_fused %s B=%d %dx%dx%d -> %d%s%s%s%s%s%s", dtname(c.dt), c.B, c.Cin, c.H,
                  c.W, c.Cout, c.gn ? " gn" : "", c.silu ? "+silu" : "", c.up ? " up2x" : "", c.res ? " +res" : "",
                  c.alias ? "(=out)" : "", c.bias ? " bias" : "");
    compare_rounded(name, ref, bound, c.dt, [&](Target& t) {
      float* o = c.alias ? t.up(r) : t.zeros(ref.size());
      const float* res = c.res ? (c.alias ? o : t.up(r)) : nullptr;
      t.be->conv3x3_fused(o, t.up(x), t.weight(w, c.dt), c.bias ? t.up(b) : nullptr, c.B, c.Cin, c.H, c.W, c.Cout,
                          c.gn ? t.up(gw) : nullptr, c.gn ? t.up(gb) : nullptr, G, eps, c.silu, c.up, res);
      return t.down(o, ref.size());
    });
  }
}

void test_codebook() {
  if (!selected("codebook")) return;
  int B = 2, Cz = 32, K = 64;
  int64_t HW = 50;
  Vec cb = randn(static_cast<size_t>(K) * Cz);
  for (int c = 0; c < Cz; c++) cb[40 * Cz + c] = cb[7 * Cz + c];  // duplicate rows: ties -> 7
  Vec z = randn(static_cast<size_t>(B) * Cz * HW);
  for (int c = 0; c < Cz; c++) z[c * HW + 3] = cb[40 * Cz + c] + 0.01f;  // nearest to the duplicated row
  IVec ref(B * HW);
  for (int b = 0; b < B; b++)
    for (int64_t p = 0; p < HW; p++) {
      double best = 1e300;
      int bi = 0;
      for (int k = 0; k < K; k++) {
        double d = 0;
        for (int c = 0; c < Cz; c++) {
          double e = static_cast<double>(z[(static_cast<size_t>(b) * Cz + c) * HW + p]) - cb[static_cast<size_t>(k) * Cz + c];
          d += e * e;
        }
        if (d < best) { best = d; bi = k; }
      }
      ref[b * HW + p] = bi;
    }
  compare_ints("codebook_nearest (ties -> lowest index)", ref, [&](Target& t) {
    int32_t* tok = t.upi(IVec(B * HW, -1));
    t.be->codebook_nearest(tok, t.up(z), t.up(cb), B, Cz, HW, K);
    return t.downi(tok, B * HW);
  });
  Vec rl(static_cast<size_t>(B) * Cz * HW);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < Cz; c++)
      for (int64_t p = 0; p < HW; p++) rl[(static_cast<size_t>(b) * Cz + c) * HW + p] = cb[static_cast<size_t>(ref[b * HW + p]) * Cz + c];
  compare("codebook_lookup", rl, 0, [&](Target& t) {
    float* o = t.zeros(rl.size());
    t.be->codebook_lookup(o, t.upi(ref), t.up(cb), B, Cz, HW);
    return t.down(o, rl.size());
  });
}

void test_weight_roundtrip() {
  if (!selected("weights")) return;
  Vec w = randn(1000, 3.f);
  w[0] = 65504.f; w[1] = 1e-7f; w[2] = -0.f; w[3] = 70000.f;
  for (DType dt : {DType::F16, DType::BF16}) {
    Vec ref = round_to(w, dt);
    // Read back through linear with an identity input row: out[n] = W[n, 0] for K = 1.
    compare(std::string("upload_weight rounding ") + dtname(dt), ref, 0, [&](Target& t) {
      float* o = t.zeros(w.size());
      t.be->linear(o, t.up(Vec{1.f}), t.weight(w, dt), nullptr, 1, static_cast<int>(w.size()), 1, false);
      return t.down(o, w.size());
    });
  }
}


// ---------------- training (backward) ops ----------------
// Naive references where the formula is short (linear, GELU/SiLU, gated residual,
// embedding, dropout, cross-entropy, sum of squares, AdamW); the CPU backend as the
// reference for the adaLN-LayerNorm and attention backward passes (src/cpu/backward.cc,
// checked against PyTorch's autograd in test/train/native.test.ts). All fp32.
void compare_to_cpu(const std::string& name, double tol, const std::function<Vec(Target&)>& run) {
  Vec cpu_out;
  for (auto& t : g_targets) {
    Vec out = run_on(*t, run, false);
    if (t->label == "cpu") {
      cpu_out = out;
      g_checks++;
      note_checked("cpu: " + name);
      bool finite = std::all_of(out.begin(), out.end(), [](float v) { return std::isfinite(v); });
      std::printf("  %-4s cpu: %-53s (the reference: %zu finite values)\n", finite ? "ok" : "FAIL", name.c_str(), out.size());
      if (!finite) g_failures++;
    } else {
      check(t->label + " vs cpu: " + name, out, cpu_out, tol);
    }
  }
}
Vec cat(std::initializer_list<Vec> parts) {
  Vec r;
  for (const Vec& p : parts) r.insert(r.end(), p.begin(), p.end());
  return r;
}

void test_backward() {
  if (!selected("backward")) return;
  {  // linear_backward, with and without accumulating into dinp
    const int64_t M = 37;
    const int N = 50, K = 70;
    Vec dout = randn(M * N), inp = randn(M * K), w = randn(static_cast<size_t>(N) * K, 0.2f);
    Vec di0 = randn(M * K), dw0 = randn(static_cast<size_t>(N) * K), db0 = randn(N);
    for (int acc = 0; acc < 2; acc++) {
      Vec di(M * K), dw = dw0, db = db0;
      for (int64_t m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
          double s = acc ? di0[m * K + k] : 0.0;
          for (int n = 0; n < N; n++) s += static_cast<double>(dout[m * N + n]) * w[static_cast<size_t>(n) * K + k];
          di[m * K + k] = static_cast<float>(s);
        }
      for (int n = 0; n < N; n++) {
        double sb = 0;
        for (int64_t m = 0; m < M; m++) sb += dout[m * N + n];
        db[n] = static_cast<float>(db0[n] + sb);
        for (int k = 0; k < K; k++) {
          double sw = 0;
          for (int64_t m = 0; m < M; m++) sw += static_cast<double>(dout[m * N + n]) * inp[m * K + k];
          dw[static_cast<size_t>(n) * K + k] = static_cast<float>(dw0[static_cast<size_t>(n) * K + k] + sw);
        }
      }
      compare(std::string("linear_backward M=37 N=50 K=70 (dinp, dW +=, db +=)") + (acc ? " dinp +=" : ""),
              cat({di, dw, db}), kTolF32, [&](Target& t) {
                float *pdi = t.up(di0), *pdw = t.up(dw0), *pdb = t.up(db0);
                t.be->linear_backward(pdi, pdw, pdb, t.up(dout), t.up(inp), t.up(w), M, N, K, acc);
                return cat({t.down(pdi, M * K), t.down(pdw, dw0.size()), t.down(pdb, N)});
              });
    }
  }
  {  // GELU / SiLU backward
    const int64_t n = 5003;
    Vec x = randn(n, 3.f), g = randn(n), rg(n), rs(n);
    for (int64_t i = 0; i < n; i++) {
      double v = x[i], cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0))), pdf = std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
      double sg = 1 / (1 + std::exp(-v));
      rg[i] = static_cast<float>(g[i] * (cdf + v * pdf));
      rs[i] = static_cast<float>(g[i] * sg * (1 + v * (1 - sg)));
    }
    compare("gelu_backward (erf)", rg, 1e-6, [&](Target& t) {
      float* o = t.zeros(n);
      t.be->gelu_backward(o, t.up(g), t.up(x), n);
      return t.down(o, n);
    });
    compare("silu_backward", rs, 1e-6, [&](Target& t) {
      float* o = t.zeros(n);
      t.be->silu_backward(o, t.up(g), t.up(x), n);
      return t.down(o, n);
    });
  }
  {  // gated_residual_backward with a row map (several rows share a gate row)
    const int64_t rows = 41;
    const int C = 48, P = 5;
    const int64_t stride = 6 * C;
    Vec dx = randn(rows * C), y = randn(rows * C), mod = randn(P * stride, 0.5f), dmod0 = randn(P * stride);
    IVec map(rows);
    for (auto& m : map) m = static_cast<int32_t>(g_rng() % P);
    Vec dy(rows * C), dmod = dmod0;
    std::vector<double> acc(P * stride, 0.0);
    for (int64_t r = 0; r < rows; r++)
      for (int c = 0; c < C; c++) {
        dy[r * C + c] = mod[map[r] * stride + 2 * C + c] * dx[r * C + c];
        acc[map[r] * stride + 2 * C + c] += static_cast<double>(dx[r * C + c]) * y[r * C + c];
      }
    for (int64_t i = 0; i < P * stride; i++) dmod[i] = static_cast<float>(dmod0[i] + acc[i]);
    compare("gated_residual_backward row_map (dy, dgate +=)", cat({dy, dmod}), kTolF32, [&](Target& t) {
      float *pdy = t.zeros(rows * C), *pdm = t.up(dmod0), *pm = t.up(mod);
      t.be->gated_residual_backward(pdy, pdm + 2 * C, t.up(dx), t.up(y), pm + 2 * C, stride, t.upi(map), rows, C);
      return cat({t.down(pdy, rows * C), t.down(pdm, dmod0.size())});
    });
    // layernorm_modulate_backward (affine LN, shift/scale rows through the map): vs the CPU
    Vec inp = randn(rows * C, 2.f), lw = randn(C), lb = randn(C), dout = randn(rows * C), di0 = randn(rows * C);
    Vec dlw0 = randn(C), dlb0 = randn(C);
    compare_to_cpu("layernorm_modulate_backward affine row_map C=48", kTolF32, [&](Target& t) {
      float *pdi = t.up(di0), *pdlw = t.up(dlw0), *pdlb = t.up(dlb0), *pdm = t.up(dmod0), *pm = t.up(mod);
      t.be->layernorm_modulate_backward(pdi, pdlw, pdlb, pdm, pdm + C, t.up(dout), t.up(inp), t.up(lw), t.up(lb),
                                        pm + C, stride, t.upi(map), rows, C, 1e-6f);
      return cat({t.down(pdi, rows * C), t.down(pdlw, C), t.down(pdlb, C), t.down(pdm, dmod0.size())});
    });
  }
  {  // embedding_backward (ids < 0 skipped, repeated ids add up) and dropout
    const int64_t rows = 60;
    const int C = 24, trows = 9;
    Vec dout = randn(rows * C), dt0 = randn(trows * C), ref = dt0;
    IVec ids(rows);
    for (auto& i : ids) i = static_cast<int32_t>(g_rng() % (trows + 1)) - 1;
    std::vector<double> acc(trows * C, 0.0);
    for (int64_t r = 0; r < rows; r++)
      if (ids[r] >= 0)
        for (int c = 0; c < C; c++) acc[ids[r] * C + c] += dout[r * C + c];
    for (int i = 0; i < trows * C; i++) ref[i] = static_cast<float>(dt0[i] + acc[i]);
    compare("embedding_backward (ids -1 skipped, repeats add)", ref, kTolF32, [&](Target& t) {
      float* p = t.up(dt0);
      t.be->embedding_backward(p, t.up(dout), t.upi(ids), rows, C);
      return t.down(p, dt0.size());
    });
    const int64_t n = 10007;
    const float p = 0.3f;
    Vec x = randn(n), rd(n);
    const uint32_t th = dropout_threshold(p);
    for (int64_t i = 0; i < n; i++) rd[i] = dropout_bits(77, 5, i) >= th ? x[i] / (1 - p) : 0.f;
    compare("dropout p=0.3 (dropout_bits masks)", rd, 3e-7, [&](Target& t) {
      float* q = t.up(x);
      t.be->dropout(q, n, p, 77, 5);
      return t.down(q, n);
    });
  }
  {  // cross_entropy (rows with target -1: no loss, no gradient)
    const int64_t rows = 19;
    const int V = 300;
    const float scale = 0.25f;
    Vec logits = randn(rows * V, 3.f), rl(rows * V), loss(rows);
    IVec tgt(rows), corr(rows);
    for (auto& t : tgt) t = static_cast<int32_t>(g_rng() % (V + 1)) - 1;
    tgt[0] = -1;
    for (int64_t r = 0; r < rows; r++) {
      const float* l = &logits[r * V];
      double mx = *std::max_element(l, l + V), den = 0;
      for (int v = 0; v < V; v++) den += std::exp(l[v] - mx);
      int am = static_cast<int>(std::max_element(l, l + V) - l);
      for (int v = 0; v < V; v++)
        rl[r * V + v] = tgt[r] < 0 ? 0.f : static_cast<float>((std::exp(l[v] - mx) / den - (v == tgt[r])) * scale);
      loss[r] = tgt[r] < 0 ? 0.f : static_cast<float>(std::log(den) + mx - l[tgt[r]]);
      corr[r] = tgt[r] >= 0 && am == tgt[r];
    }
    Vec corrf(corr.begin(), corr.end());
    compare("cross_entropy (dlogits, losses, correct)", cat({rl, loss, corrf}), kTolF32, [&](Target& t) {
      float *dl = t.zeros(rows * V), *ls = t.zeros(rows);
      int32_t* cr = t.upi(IVec(rows, -7));
      t.be->cross_entropy(dl, ls, cr, t.up(logits), t.upi(tgt), rows, V, scale);
      IVec c = t.downi(cr, rows);
      return cat({t.down(dl, rows * V), t.down(ls, rows), Vec(c.begin(), c.end())});
    });
  }
  {  // sum_squares (double, on the host) and three AdamW steps
    const int64_t n = 200003;
    Vec x = randn(n, 2.f);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    compare("sum_squares n=200003 (relative)", Vec{1.f}, 1e-6, [&](Target& t) {
      return Vec{static_cast<float>(t.be->sum_squares(t.up(x), n) / ss)};
    });
    const int64_t m = 4099;
    Vec p0 = randn(m), g1 = randn(m), m0(m, 0.f), v0(m, 0.f);
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.96f, eps = 1e-8f, wd = 0.03f, gs = 0.5f;
    std::vector<double> P(p0.begin(), p0.end()), Mm(m, 0.0), Vv(m, 0.0);
    for (int step = 1; step <= 3; step++)
      for (int64_t i = 0; i < m; i++) {
        double g = static_cast<double>(g1[i]) * (1 + 0.1 * step) * gs;
        P[i] *= 1 - static_cast<double>(lr) * wd;
        Mm[i] = b1 * Mm[i] + (1 - static_cast<double>(b1)) * g;
        Vv[i] = b2 * Vv[i] + (1 - static_cast<double>(b2)) * g * g;
        P[i] -= lr / (1 - std::pow(static_cast<double>(b1), step)) * Mm[i] /
                (std::sqrt(Vv[i]) / std::sqrt(1 - std::pow(static_cast<double>(b2), step)) + eps);
      }
    Vec ref(P.begin(), P.end());
    compare("adamw, 3 steps (clip scale 0.5, weight decay)", ref, kTolF32, [&](Target& t) {
      float *pp = t.up(p0), *pm = t.up(m0), *pv = t.up(v0);
      for (int step = 1; step <= 3; step++) {
        Vec g(m);
        for (int64_t i = 0; i < m; i++) g[i] = static_cast<float>(g1[i] * (1 + 0.1 * step));
        t.be->adamw(pp, t.up(g), pm, pv, m, lr, b1, b2, eps, wd, gs, step);
      }
      return t.down(pp, m);
    });
  }
  // training attention forward + backward (with and without dropout): vs the CPU
  for (float pd : {0.f, 0.2f}) {
    const int B = 2, T = 33, H = 3, D = 32, C = H * D;
    Vec qkv = randn(static_cast<size_t>(B) * T * 3 * C), qw = randn(D, 0.5f), qb = randn(D, 0.2f), kw = randn(D, 0.5f),
        kb = randn(D, 0.2f), dout = randn(static_cast<size_t>(B) * T * C);
    Vec zD(D, 0.f);
    if (pd == 0.f) {  // without dropout the output is attention()'s over an empty cache: the naive reference
      const size_t cache_n = static_cast<size_t>(B) * H * T * D;
      Vec ref(static_cast<size_t>(B) * T * C), kc(cache_n), vc(cache_n);
      const IVec pos0(B, 0), slot_id = {0, 1};  // every row from position 0, row b in slot b
      ref_attention(ref, kc, vc, qkv, qw, qb, kw, kb, B, T, pos0, slot_id, T, H, D);
      compare("attention_train_forward B=2 T=33 H=3 D=32 p_drop=0 (out)", ref, 2e-5, [&](Target& t) {
        float *out = t.zeros(ref.size()), *lse = t.zeros(static_cast<size_t>(B) * H * T);
        t.be->attention_train_forward(out, lse, t.up(qkv), t.up(qw), t.up(qb), t.up(kw), t.up(kb), B, T, H, D, 1e-6f, 0.f,
                                      9, 3);
        return t.down(out, ref.size());
      });
    }
    char name[120];
    std::snprintf(name, sizeof name, "attention_train_forward + backward B=2 T=33 H=3 D=32 p_drop=%.1f", pd);
    compare_to_cpu(name, 2e-5, [&](Target& t) {
      float *out = t.zeros(static_cast<size_t>(B) * T * C), *lse = t.zeros(static_cast<size_t>(B) * H * T);
      float *pqkv = t.up(qkv), *pqw = t.up(qw), *pqb = t.up(qb), *pkw = t.up(kw), *pkb = t.up(kb);
      t.be->attention_train_forward(out, lse, pqkv, pqw, pqb, pkw, pkb, B, T, H, D, 1e-6f, pd, 9, 3);
      float* dqkv = t.zeros(qkv.size());
      float *dqw = t.up(zD), *dqb = t.up(zD), *dkw = t.up(zD), *dkb = t.up(zD);
      t.be->attention_backward(dqkv, dqw, dqb, dkw, dkb, t.up(dout), out, lse, pqkv, pqw, pqb, pkw, pkb, B, T, H, D, 1e-6f,
                               pd, 9, 3);
      // k_norm bias gradients are float noise around an exact 0 (softmax ignores a key shift): not compared
      return cat({t.down(out, static_cast<size_t>(B) * T * C), t.down(lse, static_cast<size_t>(B) * H * T),
                  t.down(dqkv, qkv.size()), t.down(dqw, D), t.down(dqb, D), t.down(dkw, D)});
    });
  }
}

// ---------------- finite differences of the backward ops ----------------
double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += static_cast<double>(a[i]) * b[i];
  return s;
}
// Central differences of `loss` (which runs the forward on t, reading the host vectors
// of `inputs`) for every element of every input, checked against the backward op's
// gradients `grads` (one per input, same order) with kTolFd. Returns the largest
// normalised error (for the rejection check).
struct FdInput {
  const char* name;
  Vec* x;
};
double fd_check(Target& t, const std::string& what, const std::vector<FdInput>& inputs, const std::vector<Vec>& grads,
                const std::function<double(Target&)>& loss, bool expect_fail = false) {
  double worst = 0;
  for (size_t k = 0; k < inputs.size(); k++) {
    Vec& x = *inputs[k].x;
    Vec num(x.size());
    for (size_t i = 0; i < x.size(); i++) {
      const float v = x[i];
      // a power-of-two step (x +- h, x +- 2h exact in float when the step is not below x's ulps)
      const int e = std::fabs(v) >= 1.f ? std::ilogb(v) : 0;
      const double h = std::ldexp(kFdStep, e);
      double l[4];
      const int steps[4] = {2, 1, -1, -2};
      for (int j = 0; j < 4; j++) {
        x[i] = static_cast<float>(v + steps[j] * h);
        l[j] = loss(t);
        t.release();
      }
      x[i] = v;
      num[i] = static_cast<float>((-l[0] + 8 * l[1] - 8 * l[2] + l[3]) / (12 * h));
    }
    double maxerr = 0, maxref = 1;
    for (size_t i = 0; i < num.size(); i++) {
      maxerr = std::max(maxerr, std::fabs(static_cast<double>(grads[k][i]) - num[i]));
      maxref = std::max(maxref, std::fabs(static_cast<double>(num[i])));
    }
    worst = std::max(worst, maxerr / maxref);
    std::string name = t.label + ": fd " + what + " d" + inputs[k].name + " (" + std::to_string(x.size()) + " elements)";
    if (!expect_fail) {
      check(name, grads[k], num, kTolFd);
    }
  }
  return worst;
}

// Every backward op of src/backend.h against central differences of its forward, on
// every target: linear, adaLN LayerNorm (with and without a row map), gated residual,
// GELU, SiLU, dropout, embedding, cross-entropy, the training attention (with and
// without dropout). Then the same check must reject a plausible wrong gradient (the
// tanh-approximate GELU's derivative).
void test_finite_differences() {
  if (!selected("fd")) return;
  for (auto& tp : g_targets) {
    Target& t = *tp;
    cpu::force_portable(t.portable);
    cpu::disable_winograd(t.no_winograd);
    {  // linear
      const int64_t M = 3;
      const int N = 4, K = 5;
      Vec x = randn(M * K), w = randn(static_cast<size_t>(N) * K, 0.5f), b = randn(N), g = randn(M * N);
      float *di = t.zeros(M * K), *dw = t.zeros(static_cast<size_t>(N) * K), *db = t.zeros(N);
      t.be->linear_backward(di, dw, db, t.up(g), t.up(x), t.up(w), M, N, K, false);
      std::vector<Vec> grads = {t.down(di, M * K), t.down(dw, static_cast<size_t>(N) * K), t.down(db, N)};
      t.release();
      fd_check(t, "linear_backward M=3 N=4 K=5", {{"inp", &x}, {"weight", &w}, {"bias", &b}}, grads, [&](Target& u) {
        float* o = u.zeros(M * N);
        u.be->linear(o, u.up(x), u.weight(w, DType::F32), u.up(b), M, N, K, false);
        return dot(g, u.down(o, M * N));
      });
    }
    for (int mapped = 0; mapped < 2; mapped++) {  // adaLN LayerNorm: out = LN(x) * (1 + scale[m]) + shift[m]
      const int64_t rows = 5;
      const int C = 8, P = mapped ? 3 : static_cast<int>(rows);
      const int64_t stride = 2 * C;  // shift at 0, scale at C
      Vec x = randn(rows * C), lw = randn(C, 0.3f), lb = randn(C, 0.3f), mod = randn(P * stride, 0.5f), g = randn(rows * C);
      for (auto& v : lw) v += 1.f;
      for (auto& v : x) v += 0.5f;
      IVec map(rows);
      for (int64_t r = 0; r < rows; r++) map[r] = static_cast<int32_t>(r % P);
      auto mp = [&](Target& u) { return mapped ? u.upi(map) : static_cast<int32_t*>(nullptr); };
      float *di = t.zeros(rows * C), *dlw = t.zeros(C), *dlb = t.zeros(C), *dm = t.zeros(P * stride);
      float* md = t.up(mod);
      t.be->layernorm_modulate_backward(di, dlw, dlb, dm, dm + C, t.up(g), t.up(x), t.up(lw), t.up(lb), md + C, stride,
                                        mp(t), rows, C, 1e-6f);
      std::vector<Vec> grads = {t.down(di, rows * C), t.down(dlw, C), t.down(dlb, C), t.down(dm, P * stride)};
      t.release();
      fd_check(t, std::string("layernorm_modulate_backward rows=5 C=8") + (mapped ? " row_map" : ""),
               {{"inp", &x}, {"ln_w", &lw}, {"ln_b", &lb}, {"shift|scale", &mod}}, grads, [&](Target& u) {
                 float *o = u.zeros(rows * C), *m = u.up(mod);
                 u.be->layernorm_modulate(o, u.up(x), u.up(lw), u.up(lb), m, m + C, stride, mp(u), rows, C, 1e-6f);
                 return dot(g, u.down(o, rows * C));
               });
    }
    for (int mapped = 0; mapped < 2; mapped++) {  // gated residual: x += gate[m] * y
      const int64_t rows = 5;
      const int C = 6, P = mapped ? 2 : static_cast<int>(rows);
      const int64_t stride = 2 * C;  // gate at C
      Vec x0 = randn(rows * C), y = randn(rows * C), mod = randn(P * stride), g = randn(rows * C);
      IVec map(rows);
      for (int64_t r = 0; r < rows; r++) map[r] = static_cast<int32_t>((r * 3) % P);
      auto mp = [&](Target& u) { return mapped ? u.upi(map) : static_cast<int32_t*>(nullptr); };
      float *dy = t.zeros(rows * C), *dm = t.zeros(P * stride);
      t.be->gated_residual_backward(dy, dm + C, t.up(g), t.up(y), t.up(mod) + C, stride, mp(t), rows, C);
      std::vector<Vec> grads = {t.down(dy, rows * C), t.down(dm, P * stride)};
      t.release();
      fd_check(t, std::string("gated_residual_backward rows=5 C=6") + (mapped ? " row_map" : ""),
               {{"y", &y}, {"gate", &mod}}, grads, [&](Target& u) {
                 float* xx = u.up(x0);
                 u.be->gated_residual(xx, u.up(y), u.up(mod) + C, stride, mp(u), rows, C);
                 return dot(g, u.down(xx, rows * C));
               });
    }
    {  // GELU, SiLU, dropout (its own backward: the same call on the gradient)
      const int64_t n = 24;
      Vec x(n), g(n, 1.f);  // x over [-3, 3], where the erf and tanh GELUs differ most
      for (int64_t i = 0; i < n; i++) x[i] = static_cast<float>(-3.0 + 6.0 * static_cast<double>(i) / (n - 1));
      for (int which = 0; which < 3; which++) {
        float *d = which == 2 ? t.up(g) : t.zeros(n);
        if (which == 0) t.be->gelu_backward(d, t.up(g), t.up(x), n);
        if (which == 1) t.be->silu_backward(d, t.up(g), t.up(x), n);
        if (which == 2) t.be->dropout(d, n, 0.3f, 5, 7);
        std::vector<Vec> grads = {t.down(d, n)};
        t.release();
        const char* what = which == 0 ? "gelu_backward (erf) n=24" : which == 1 ? "silu_backward n=24"
                                                                                : "dropout p=0.3 n=24";
        auto loss = [&](Target& u) {
          float* o = which == 2 ? u.up(x) : u.zeros(n);
          if (which == 0) u.be->gelu(o, u.up(x), n);
          if (which == 1) u.be->silu(o, u.up(x), n);
          if (which == 2) u.be->dropout(o, n, 0.3f, 5, 7);
          return dot(g, u.down(o, n));
        };
        fd_check(t, what, {{"inp", &x}}, grads, loss);
        if (which == 0) {
          // A plausible wrong gradient: the tanh-approximate GELU's derivative (off by ~1e-3).
          Vec wrong(n);
          for (int64_t i = 0; i < n; i++) {
            const double v = x[i], k = std::sqrt(2 / M_PI), u = k * (v + 0.044715 * v * v * v), th = std::tanh(u);
            wrong[i] = static_cast<float>(g[i] * (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * k * (1 + 3 * 0.044715 * v * v)));
          }
          const double err = fd_check(t, what, {{"inp", &x}}, {wrong}, loss, true);
          g_checks++;
          note_checked(t.label + ": fd gelu_backward rejection");
          const bool rejected = err > kTolFd;
          std::printf("  %-4s %s: fd rejects the tanh-GELU derivative as gelu_backward: normalised err %.3g (tol %.1g)\n",
                      rejected ? "ok" : "FAIL", t.label.c_str(), err, kTolFd);
          if (!rejected) g_failures++;
        }
      }
    }
    {  // embedding (ids -1 skipped, repeated ids add up)
      const int64_t rows = 7;
      const int C = 4, trows = 4;
      Vec table = randn(trows * C), g = randn(rows * C);
      IVec ids = {2, -1, 0, 2, 3, 2, -1};
      float* dt = t.zeros(trows * C);
      t.be->embedding_backward(dt, t.up(g), t.upi(ids), rows, C);
      std::vector<Vec> grads = {t.down(dt, trows * C)};
      t.release();
      fd_check(t, "embedding_backward rows=7 C=4", {{"table", &table}}, grads, [&](Target& u) {
        float* o = u.zeros(rows * C);
        u.be->embedding(o, u.up(table), u.upi(ids), rows, C, false);
        return dot(g, u.down(o, rows * C));
      });
    }
    {  // cross-entropy: dlogits is the gradient of grad_scale * sum of the losses
      const int64_t rows = 4;
      const int V = 7;
      const float gs = 0.5f;
      Vec logits = randn(rows * V, 2.f);
      IVec tgt = {2, -1, 0, 6};
      float *dl = t.zeros(rows * V), *ls = t.zeros(rows);
      int32_t* cr = t.upi(IVec(rows, 0));
      t.be->cross_entropy(dl, ls, cr, t.up(logits), t.upi(tgt), rows, V, gs);
      std::vector<Vec> grads = {t.down(dl, rows * V)};
      t.release();
      fd_check(t, "cross_entropy rows=4 V=7 (dlogits)", {{"logits", &logits}}, grads, [&](Target& u) {
        float *d = u.zeros(rows * V), *l = u.zeros(rows);
        int32_t* c = u.upi(IVec(rows, 0));
        u.be->cross_entropy(d, l, c, u.up(logits), u.upi(tgt), rows, V, gs);
        return gs * dot(Vec(rows, 1.f), u.down(l, rows));
      });
    }
    for (float pd : {0.f, 0.3f}) {  // training attention (q/k LayerNorm, causal softmax, dropout masks)
      const int B = 2, T = 5, H = 2, D = 4, C = H * D;
      Vec qkv = randn(static_cast<size_t>(B) * T * 3 * C), qw = randn(D, 0.3f), qb = randn(D, 0.3f), kw = randn(D, 0.3f),
          kb = randn(D, 0.3f), g = randn(static_cast<size_t>(B) * T * C);
      for (auto& v : qw) v += 1.f;
      for (auto& v : kw) v += 1.f;
      // a spread in every q and k head vector: no 4-element LayerNorm of tiny variance,
      // whose curvature would make the differences (not the gradient) inexact
      for (size_t r = 0; r < static_cast<size_t>(B) * T; r++)
        for (int e = 0; e < 2 * C; e++) qkv[r * 3 * C + e] += static_cast<float>((e % D) - (D - 1) / 2.0);
      const size_t no = static_cast<size_t>(B) * T * C, nl = static_cast<size_t>(B) * H * T;
      float *out = t.zeros(no), *lse = t.zeros(nl);
      float *pqkv = t.up(qkv), *pqw = t.up(qw), *pqb = t.up(qb), *pkw = t.up(kw), *pkb = t.up(kb);
      t.be->attention_train_forward(out, lse, pqkv, pqw, pqb, pkw, pkb, B, T, H, D, 1e-6f, pd, 9, 3);
      float *dqkv = t.zeros(qkv.size()), *dqw = t.zeros(D), *dqb = t.zeros(D), *dkw = t.zeros(D), *dkb = t.zeros(D);
      t.be->attention_backward(dqkv, dqw, dqb, dkw, dkb, t.up(g), out, lse, pqkv, pqw, pqb, pkw, pkb, B, T, H, D, 1e-6f,
                               pd, 9, 3);
      std::vector<Vec> grads = {t.down(dqkv, qkv.size()), t.down(dqw, D), t.down(dqb, D), t.down(dkw, D),
                                t.down(dkb, D)};
      t.release();
      char what[120];
      std::snprintf(what, sizeof what, "attention_backward of attention_train_forward B=2 T=5 H=2 D=4 p_drop=%.1f", pd);
      fd_check(t, what, {{"qkv", &qkv}, {"q_norm_w", &qw}, {"q_norm_b", &qb}, {"k_norm_w", &kw}, {"k_norm_b", &kb}},
               grads, [&](Target& u) {
                 float *o = u.zeros(no), *l = u.zeros(nl);
                 u.be->attention_train_forward(o, l, u.up(qkv), u.up(qw), u.up(qb), u.up(kw), u.up(kb), B, T, H, D,
                                               1e-6f, pd, 9, 3);
                 return dot(g, u.down(o, no));
               });
    }
    cpu::force_portable(false);
    cpu::disable_winograd(false);
    t.release();
  }
}

// ---------------- the Backend contract (src/backend.cc) ----------------
// The same bad call gives the same message on every target: one row per op (several for
// some), each with one bad argument; the message must be exactly the row's (the op and
// the argument named, "@" standing for the backend's name). The checks run before any
// backend code, so the other arguments only need to look right (one scratch buffer for
// every pointer). Then supports() on each target, the uniform "does not support" error,
// and the events (synchronous defaults on the CPU, cudaEvent_t on CUDA).
struct ContractRow {
  Op op;
  const char* want;  // "@" = the backend's name
  std::function<void(Backend*, float*, float*)> call;  // (backend, device scratch, host scratch)
};

std::string expand_name(const std::string& want, const std::string& name) {
  std::string out;
  for (char c : want) out += c == '@' ? name : std::string(1, c);
  return out;
}

void test_contract() {
  if (!selected("contract")) return;
  using I = int32_t;
  const int64_t kBig = INT64_MAX / 2;
  Weight w32;  // data set per target below
  const std::vector<ContractRow> rows = {
      {Op::upload, "rargen: @ upload: Expected a non-null pointer to backend memory for dst but received null",
       [](Backend* b, float*, float* h) { b->upload(nullptr, h, 4); }},
      {Op::download, "rargen: @ download: Expected a non-null pointer to backend memory for src but received null",
       [](Backend* b, float*, float* h) { b->download(h, nullptr, 4); }},
      {Op::download, "rargen: @ download: Expected a non-null pointer to host memory for dst but received null",
       [](Backend* b, float* d, float*) { b->download(nullptr, d, 4); }},
      {Op::copy, "rargen: @ copy: Expected a non-null pointer to backend memory for src but received null",
       [](Backend* b, float* d, float*) { b->copy(d, nullptr, 4); }},
      {Op::fill, "rargen: @ fill: Expected an integer >= 0 for n but received -1",
       [](Backend* b, float* d, float*) { b->fill(d, 0.f, -1); }},
      {Op::upload_weight, "rargen: @ upload_weight: Expected an integer >= 0 for n but received -3",
       [](Backend* b, float*, float* h) { b->upload_weight(h, -3, DType::F32); }},
      {Op::upload_weight,
       "rargen: @ does not support upload_weight for i32: @ runs upload_weight for f32, f16, bf16; pass one of those, "
       "or use a device that supports i32",
       [](Backend* b, float*, float* h) { b->upload_weight(h, 4, DType::I32); }},
      {Op::linear, "rargen: @ linear: Expected an integer >= 1 for N but received 0",
       [&](Backend* b, float* d, float*) { b->linear(d, d, w32, nullptr, 2, 0, 4); }},
      {Op::linear,
       "rargen: @ linear: Expected sizes whose product (4-byte elements) fits in 64 bits for M*K (inp) but received "
       "4611686018427387903*8",
       [&](Backend* b, float* d, float*) { b->linear(d, d, w32, nullptr, kBig, 4, 8); }},
      {Op::linear, "rargen: @ linear: Expected a non-null pointer to backend memory for w.data but received null",
       [&](Backend* b, float* d, float*) { b->linear(d, d, Weight{}, nullptr, 2, 4, 4); }},
      {Op::layernorm, "rargen: @ layernorm: Expected a finite number > 0 for eps but received 0",
       [](Backend* b, float* d, float*) { b->layernorm(d, d, nullptr, nullptr, 2, 8, 0.f); }},
      {Op::layernorm_modulate, "rargen: @ layernorm_modulate: Expected an integer >= 0 for mod_stride but received -8",
       [](Backend* b, float* d, float*) { b->layernorm_modulate(d, d, nullptr, nullptr, d, d, -8, nullptr, 2, 8, 1e-6f); }},
      {Op::gated_residual, "rargen: @ gated_residual: Expected a non-null pointer to backend memory for gate but received null",
       [](Backend* b, float* d, float*) { b->gated_residual(d, d, nullptr, 8, nullptr, 2, 8); }},
      {Op::gelu, "rargen: @ gelu: Expected an integer >= 0 for n but received -1",
       [](Backend* b, float* d, float*) { b->gelu(d, d, -1); }},
      {Op::silu, "rargen: @ silu: Expected a non-null pointer to backend memory for out but received null",
       [](Backend* b, float* d, float*) { b->silu(nullptr, d, 4); }},
      {Op::add, "rargen: @ add: Expected a non-null pointer to backend memory for b but received null",
       [](Backend* b, float* d, float*) { b->add(d, d, nullptr, 4); }},
      {Op::embedding, "rargen: @ embedding: Expected an integer >= 1 for C but received 0",
       [](Backend* b, float* d, float*) { b->embedding(d, d, reinterpret_cast<I*>(d), 2, 0); }},
      {Op::attention, "rargen: @ attention: Expected an integer in 1..128 for D but received 129",
       [](Backend* b, float* d, float*) {
         I* p = reinterpret_cast<I*>(d);
         b->attention(d, d, d, DType::F32, d, d, d, d, d, 1, 1, p, p, 1, 4, 1, 129, 1e-6f);
       }},
      {Op::attention, "rargen: @ attention: Expected an integer <= Tcache (4) for Tn but received 5",
       [](Backend* b, float* d, float*) {
         I* p = reinterpret_cast<I*>(d);
         b->attention(d, d, d, DType::F32, d, d, d, d, d, 1, 5, p, p, 1, 4, 2, 8, 1e-6f);
       }},
      {Op::attention, "rargen: @ attention: Expected an integer <= slots (2) for R but received 3",
       [](Backend* b, float* d, float*) {
         I* p = reinterpret_cast<I*>(d);
         b->attention(d, d, d, DType::F32, d, d, d, d, d, 3, 1, p, p, 2, 4, 2, 8, 1e-6f);
       }},
      {Op::attention,
       "rargen: @ attention: Expected sizes whose product fits in a 32-bit int for 3*H*D (qkv row) but received "
       "3*20000000*128",
       [](Backend* b, float* d, float*) {
         I* p = reinterpret_cast<I*>(d);
         b->attention(d, d, d, DType::F32, d, d, d, d, d, 1, 1, p, p, 1, 4, 20000000, 128, 1e-6f);
       }},
      {Op::attention, "rargen: @ attention: Expected a non-null pointer to backend memory for k_norm_w but received null",
       [](Backend* b, float* d, float*) {
         I* p = reinterpret_cast<I*>(d);
         b->attention(d, d, d, DType::F32, d, d, d, nullptr, d, 1, 1, p, p, 1, 4, 2, 8, 1e-6f);
       }},
      {Op::sample,
       "rargen: @ sample: Expected uniforms in [0, 1) (host memory, B of them) unless greedy for uniforms but received "
       "null",
       [](Backend* b, float* d, float* h) {
         b->sample(reinterpret_cast<I*>(h), d, 2, 8, false, 1.f, 1.f, 0, 1.f, false, nullptr);
       }},
      {Op::sample, "rargen: @ sample: Expected a number in [0, 1) for uniforms[1] but received 1",
       [](Backend* b, float* d, float* h) {
         float u[2] = {0.5f, 1.f};
         b->sample(reinterpret_cast<I*>(h), d, 2, 8, false, 1.f, 1.f, 0, 1.f, false, u);
       }},
      {Op::sample, "rargen: @ sample: Expected a finite number > 0 for temperature but received 0",
       [](Backend* b, float* d, float* h) {
         float u[2] = {0.5f, 0.5f};
         b->sample(reinterpret_cast<I*>(h), d, 2, 8, false, 1.f, 0.f, 0, 1.f, false, u);
       }},
      {Op::sample, "rargen: @ sample: Expected a number in (0, 1] for top_p but received 0",
       [](Backend* b, float* d, float* h) {
         float u[2] = {0.5f, 0.5f};
         b->sample(reinterpret_cast<I*>(h), d, 2, 8, false, 1.f, 1.f, 0, 0.f, false, u);
       }},
      {Op::conv2d, "rargen: @ conv2d: Expected an integer >= 1 for stride_w but received 0",
       [&](Backend* b, float* d, float*) { b->conv2d(d, d, w32, nullptr, 1, 2, 4, 4, 2, 3, 3, 1, 0, 1, 1); }},
      {Op::conv2d, "rargen: @ conv2d: Expected an integer >= 0 for pad_h but received -1",
       [&](Backend* b, float* d, float*) { b->conv2d(d, d, w32, nullptr, 1, 2, 4, 4, 2, 3, 3, 1, 1, -1, 1); }},
      {Op::conv2d,
       "rargen: @ conv2d: Expected an input that covers the 3x3 kernel with padding 0x0 for H x W but received 2x5",
       [&](Backend* b, float* d, float*) { b->conv2d(d, d, w32, nullptr, 1, 2, 2, 5, 2, 3, 3, 1, 1, 0, 0); }},
      {Op::groupnorm, "rargen: @ groupnorm: Expected a multiple of G (32) for C but received 48",
       [](Backend* b, float* d, float*) { b->groupnorm(d, d, d, d, 1, 48, 4, 32, 1e-6f, false); }},
      {Op::upsample_nearest2x, "rargen: @ upsample_nearest2x: Expected an integer >= 1 for H but received 0",
       [](Backend* b, float* d, float*) { b->upsample_nearest2x(d, d, 1, 2, 0, 4); }},
      {Op::avgpool2x2, "rargen: @ avgpool2x2: Expected an integer >= 1 for C but received 0",
       [](Backend* b, float* d, float*) { b->avgpool2x2(d, d, 1, 0, 4, 4); }},
      {Op::relu, "rargen: @ relu: Expected an integer >= 0 for n but received -1",
       [](Backend* b, float* d, float*) { b->relu(d, d, -1); }},
      {Op::maxpool2d, "rargen: @ maxpool2d: Expected an integer in 0..2 for pad but received 3",
       [](Backend* b, float* d, float*) { b->maxpool2d(d, d + 2048, 1, 2, 8, 8, 3, 1, 3); }},
      {Op::avgpool2d, "rargen: @ avgpool2d: Expected an integer >= 3 for H + 2*pad but received 2",
       [](Backend* b, float* d, float*) { b->avgpool2d(d, d + 2048, 1, 2, 2, 8, 3, 1, 0, false); }},
      {Op::copy_channels, "rargen: @ copy_channels: Expected an integer in 0..4 for dst_off but received 5",
       [](Backend* b, float* d, float*) { b->copy_channels(d, 8, 5, d + 2048, 4, 0, 1, 4, 16, false); }},
      {Op::conv3x3_fused,
       "rargen: @ conv3x3_fused: Expected an even integer (upsample2x: the output is twice the input) for H but "
       "received 7",
       [&](Backend* b, float* d, float*) {
         b->conv3x3_fused(d, d + 4096, w32, nullptr, 1, 2, 7, 8, 2, nullptr, nullptr, 1, 1e-6f, false, true, nullptr);
       }},
      {Op::conv3x3_fused, "rargen: @ conv3x3_fused: Expected a multiple of G (32) for Cin but received 40",
       [&](Backend* b, float* d, float*) {
         b->conv3x3_fused(d, d + 4096, w32, nullptr, 1, 40, 4, 4, 2, d, d, 32, 1e-6f, true, false, nullptr);
       }},
      {Op::conv3x3_fused,
       "rargen: @ conv3x3_fused: Expected an input buffer other than out (only residual may alias out) for inp but "
       "received out",
       [&](Backend* b, float* d, float*) {
         b->conv3x3_fused(d, d, w32, nullptr, 1, 2, 4, 4, 2, nullptr, nullptr, 1, 1e-6f, false, false, nullptr);
       }},
      {Op::codebook_nearest, "rargen: @ codebook_nearest: Expected an integer >= 1 for K but received 0",
       [](Backend* b, float* d, float*) { b->codebook_nearest(reinterpret_cast<I*>(d), d, d, 1, 4, 4, 0); }},
      {Op::codebook_lookup, "rargen: @ codebook_lookup: Expected an integer >= 1 for Cz but received 0",
       [](Backend* b, float* d, float*) { b->codebook_lookup(d, reinterpret_cast<I*>(d), d, 1, 0, 4); }},
      {Op::event_record, "rargen: @ event_record: Expected an event from event_create() for e but received null",
       [](Backend* b, float*, float*) { b->event_record(nullptr); }},
      {Op::event_synchronize,
       "rargen: @ event_synchronize: Expected an event from event_create() for e but received null",
       [](Backend* b, float*, float*) { b->event_synchronize(nullptr); }},
      {Op::linear_backward,
       "rargen: @ linear_backward: Expected a non-null pointer to backend memory for weight (for dinp) but received null",
       [](Backend* b, float* d, float*) { b->linear_backward(d, nullptr, nullptr, d, d, nullptr, 2, 4, 4, false); }},
      {Op::layernorm_modulate_backward,
       "rargen: @ layernorm_modulate_backward: Expected an integer >= 1 for C but received -1",
       [](Backend* b, float* d, float*) {
         b->layernorm_modulate_backward(d, nullptr, nullptr, nullptr, nullptr, d, d, nullptr, nullptr, nullptr, 0,
                                        nullptr, 2, -1, 1e-6f);
       }},
      {Op::gated_residual_backward,
       "rargen: @ gated_residual_backward: Expected a non-null pointer to backend memory for y (for dgate) but received "
       "null",
       [](Backend* b, float* d, float*) { b->gated_residual_backward(d, d, d, nullptr, d, 8, nullptr, 2, 8); }},
      {Op::gelu_backward, "rargen: @ gelu_backward: Expected an integer >= 0 for n but received -1",
       [](Backend* b, float* d, float*) { b->gelu_backward(d, d, d, -1); }},
      {Op::silu_backward, "rargen: @ silu_backward: Expected a non-null pointer to backend memory for dinp but received null",
       [](Backend* b, float* d, float*) { b->silu_backward(nullptr, d, d, 4); }},
      {Op::dropout, "rargen: @ dropout: Expected a number in [0, 1) for p but received 1",
       [](Backend* b, float* d, float*) { b->dropout(d, 4, 1.f, 1, 2); }},
      {Op::attention_train_forward,
       "rargen: @ attention_train_forward: Expected a number in [0, 1) for p_drop but received 1.5",
       [](Backend* b, float* d, float*) {
         b->attention_train_forward(d, d, d, d, d, d, d, 1, 4, 2, 8, 1e-6f, 1.5f, 1, 2);
       }},
      {Op::attention_backward,
       "rargen: @ attention_backward: Expected a non-null pointer to backend memory for lse but received null",
       [](Backend* b, float* d, float*) {
         b->attention_backward(d, d, d, d, d, d, d, nullptr, d, d, d, d, d, 1, 4, 2, 8, 1e-6f, 0.f, 1, 2);
       }},
      {Op::embedding_backward,
       "rargen: @ embedding_backward: Expected a non-null pointer to backend memory for ids but received null",
       [](Backend* b, float* d, float*) { b->embedding_backward(d, d, nullptr, 2, 8); }},
      {Op::cross_entropy, "rargen: @ cross_entropy: Expected an integer >= 1 for V but received 0",
       [](Backend* b, float* d, float*) {
         b->cross_entropy(d, d, nullptr, d, reinterpret_cast<I*>(d), 2, 0, 1.f);
       }},
      {Op::sum_squares, "rargen: @ sum_squares: Expected an integer >= 0 for n but received -2",
       [](Backend* b, float* d, float*) { b->sum_squares(d, -2); }},
      {Op::adamw, "rargen: @ adamw: Expected an integer >= 1 for step but received 0",
       [](Backend* b, float* d, float*) { b->adamw(d, d, d, d, 4, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.f, 1.f, 0); }},
      {Op::adamw, "rargen: @ adamw: Expected a number in [0, 1) for beta2 but received 1",
       [](Backend* b, float* d, float*) { b->adamw(d, d, d, d, 4, 1e-3f, 0.9f, 1.f, 1e-8f, 0.f, 1.f, 1); }},
  };
  // every op with arguments has a row (alloc/free/synchronize, the graphs and
  // event_create/event_destroy/native_stream take none that can be wrong)
  {
    std::string missing;
    for (int i = 0; i < kOpCount; i++) {
      const Op op = static_cast<Op>(i);
      if (op == Op::alloc || op == Op::free || op == Op::synchronize || op_kind(op) == rargen::OpKind::Graph ||
          op == Op::event_create || op == Op::event_destroy || op == Op::native_stream)
        continue;
      if (std::none_of(rows.begin(), rows.end(), [&](const ContractRow& r) { return r.op == op; }))
        missing += std::string(" ") + op_name(op);
    }
    g_checks++;
    std::printf("  %-4s contract: every op with arguments has a bad-call row (%zu rows)%s%s\n",
                missing.empty() ? "ok" : "FAIL", rows.size(), missing.empty() ? "" : "; none for:", missing.c_str());
    if (!missing.empty()) g_failures++;
  }
  Vec host(1 << 16, 0.f);
  for (auto& t : g_targets) {
    if (t->label != "cpu" && !t->be->is_gpu()) continue;  // the CPU variants are the same backend object
    Backend* be = t->be;
    float* dev = static_cast<float*>(be->alloc(1 << 20));
    w32 = Weight{dev, DType::F32};
    int same = 0;
    for (const ContractRow& r : rows) {
      const std::string want = expand_name(r.want, be->name());
      std::string got = "(no error)";
      try {
        r.call(be, dev, host.data());
      } catch (const std::exception& e) {
        got = e.what();
      }
      g_checks++;
      const bool ok = got == want && got.find(op_name(r.op)) != std::string::npos;
      if (ok) {
        same++;
      } else {
        std::printf("  FAIL %s: contract %s: got \"%s\", want \"%s\"\n", t->label.c_str(), op_name(r.op), got.c_str(),
                    want.c_str());
        g_failures++;
      }
    }
    std::printf("  %-4s %s: contract: %d of %zu bad calls give the contract's message\n",
                same == static_cast<int>(rows.size()) ? "ok" : "FAIL", t->label.c_str(), same, rows.size());
    be->synchronize();
    be->free(dev);
  }

  // supports(): the CPU's answers (the reference set) and CUDA's additions
  struct Answer {
    Op op;
    DType dt;
    bool cpu, cuda;
  };
  const Answer answers[] = {
      {Op::linear, DType::F32, true, true},        {Op::linear, DType::BF16, true, true},
      {Op::linear, DType::I32, false, false},      {Op::upload_weight, DType::F16, true, true},
      {Op::attention, DType::F32, true, true},     {Op::attention, DType::F16, false, true},
      {Op::attention, DType::BF16, false, true},   {Op::layernorm, DType::F16, false, false},
      {Op::sample, DType::F32, true, true},        {Op::graph_replay, DType::F32, false, true},
      {Op::attention_backward, DType::F32, true, true}, {Op::adamw, DType::F32, true, true},
      {Op::event_record, DType::F32, true, true},  {Op::alloc, DType::F32, true, true},
  };
  for (auto& t : g_targets) {
    if (t->label != "cpu" && !t->be->is_gpu()) continue;
    int right = 0;
    for (const Answer& a : answers) {
      const bool want = t->be->is_gpu() ? a.cuda : a.cpu, got = t->be->supports(a.op, a.dt);
      g_checks++;
      if (got == want) {
        right++;
      } else {
        std::printf("  FAIL %s: supports(%s, %s) is %d, want %d\n", t->label.c_str(), op_name(a.op), dtype_name(a.dt),
                    got, want);
        g_failures++;
      }
    }
    std::printf("  %-4s %s: supports() gives the expected answer for %d of %zu (op, dtype) pairs\n",
                right == static_cast<int>(std::size(answers)) ? "ok" : "FAIL", t->label.c_str(), right,
                std::size(answers));
  }
  // The uniform "does not support" error for a dtype the CPU lacks, and no graphs there.
  {
    Backend* be = cpu_backend();
    float* d = static_cast<float*>(be->alloc(4096));
    int32_t* p = reinterpret_cast<int32_t*>(d);
    std::string got = "(no error)";
    try {
      be->attention(d, d, d, DType::F16, d, d, d, d, d, 1, 1, p, p, 1, 4, 2, 8, 1e-6f);
    } catch (const std::exception& e) {
      got = e.what();
    }
    const std::string want =
        "rargen: cpu does not support attention for f16: cpu runs attention for f32; pass one of those, or use a "
        "device that supports f16";
    g_checks++;
    const bool ok = got == want && !be->graph_capture_begin() && !be->graph_replay();
    std::printf("  %-4s cpu: attention with an f16 KV cache: \"%s\"; graphs answer false\n", ok ? "ok" : "FAIL",
                got.c_str());
    if (!ok) g_failures++;
    be->free(d);
  }
  // Events on every target: a fill, a record, the host waits, the values are there.
  for (auto& t : g_targets) {
    Backend* be = t->be;
    const int64_t n = 1 << 20;
    float* d = static_cast<float*>(be->alloc(n * 4));
    Event* e = be->event_create();
    be->fill(d, 3.5f, n);
    be->event_record(e);
    be->event_synchronize(e);
    Vec back(n);
    be->download(back.data(), d, n * 4);
    be->event_destroy(e);
    be->free(d);
    const bool stream_ok = t->be->is_gpu() ? be->native_stream() != nullptr : be->native_stream() == nullptr;
    Vec ref(n, 3.5f);
    check(t->label + ": events event_create event_record event_synchronize event_destroy after fill", back, ref, 0);
    g_checks++;
    note_checked(t->label + ": native_stream");
    std::printf("  %-4s %s: native_stream is %s\n", stream_ok ? "ok" : "FAIL", t->label.c_str(),
                t->be->is_gpu() ? "the CUDA stream" : "null (synchronous)");
    if (!stream_ok) g_failures++;
  }
}



// The op table against what ran: every op was exercised by a check on every target (or,
// model-level, on the CPU) and, where the table says so, by a finite-difference check.
void test_op_table() {
  if (g_filter && !std::strstr("op-table", g_filter)) return;
  std::printf("[op-table]\n");
  {  // every op of src/backend.h's list has a row here
    std::string unlisted;
    for (int i = 0; i < kOpCount; i++) {
      const char* n = op_name(static_cast<Op>(i));
      if (std::none_of(std::begin(kOps), std::end(kOps), [&](const OpEntry& e) { return std::strcmp(e.op, n) == 0; }))
        unlisted += std::string(" ") + n;
    }
    g_checks++;
    std::printf("  %-4s the %d ops of RARGEN_BACKEND_OPS all have a row in this table%s%s\n", unlisted.empty() ? "ok" : "FAIL",
                kOpCount, unlisted.empty() ? "" : "; missing:", unlisted.c_str());
    if (!unlisted.empty()) g_failures++;
  }
  for (const OpEntry& e : kOps) {
    const std::string token = e.token ? e.token : e.op;
    std::set<std::string> want;
    if (e.every_target)
      for (auto& t : g_targets) want.insert(t->label);
    else
      want.insert("cpu");
    const std::set<std::string>& got = token == "*" ? g_labels_checked : g_checked[token];
    std::string missing, fd_missing;
    for (const std::string& l : want) {
      if (!got.count(l)) missing += " " + l;
      if (e.fd && !g_fd_checked[e.op].count(l)) fd_missing += " " + l;
    }
    const bool ok = missing.empty() && fd_missing.empty();
    g_checks++;
    std::printf("  %-4s op %-28s %-9s %s%s%s%s%s\n", ok ? "ok" : "FAIL", e.op, kind_name(e.kind), e.group,
                e.fd ? " (+ finite differences)" : "", missing.empty() ? "" : "; no check on:", missing.c_str(),
                fd_missing.empty() ? "" : "; no fd check on:", fd_missing.c_str());
    if (!ok) g_failures++;
  }
}

// A stand-in for a GPU backend with CUDA graphs, on the CPU backend: while capturing,
// ops are recorded with their arguments frozen (not run) and graph_replay() runs the
// recording, as cudaGraph does; attention reads the positions and slots when it
// runs. It lets the CPU-only machine check the model's graph path (src/model/rar.cc).
// Like the CUDA backend (cuda/backend.cu) it fails a capture whose ops would create
// backend state: an allocation, or a linear/attention shape never run outside a capture
// (the CUDA backend's cuBLASLt plans and scratch buffers are made on first use), so a
// model that records a step before running it directly falls back, and the test fails.
class FakeGraphBackend final : public Backend {
 public:
  explicit FakeGraphBackend(Backend* inner) : in_(inner) {}
  const char* name() const override { return "fake-graph"; }
  bool is_gpu() const override { return true; }
  // What the inner backend runs, but not training (not forwarded here), plus the graphs
  // this stand-in records.
  bool supports(Op op, DType dt) const override {
    return op_kind(op) == rargen::OpKind::Graph || (op_kind(op) != rargen::OpKind::Training && in_->supports(op, dt));
  }
  void* alloc_impl(size_t b) override {
    if (capturing_) miss_ = true;
    return in_->alloc(b);
  }
  void free_impl(void* p) override { in_->free(p); }
  void upload_impl(void* d, const void* s, size_t b) override { no_capture("upload"); in_->upload(d, s, b); }
  void download_impl(void* d, const void* s, size_t b) override { no_capture("download"); in_->download(d, s, b); }
  void copy_impl(void* d, const void* s, size_t b) override { rec([=] { in_->copy(d, s, b); }); }
  void fill_impl(float* d, float v, int64_t n) override { rec([=] { in_->fill(d, v, n); }); }
  void synchronize_impl() override { no_capture("synchronize"); }
  size_t free_memory() const override { return in_->free_memory(); }
  Weight upload_weight_impl(const float* h, int64_t n, DType dt) override { return in_->upload_weight(h, n, dt); }
  void linear_impl(float* o, const float* i, Weight w, const float* b, int64_t M, int N, int K, bool acc) override {
    first_use("linear", {M, N, K, static_cast<int64_t>(w.dtype)});
    rec([=] { in_->linear(o, i, w, b, M, N, K, acc); });
  }
  void layernorm_impl(float* o, const float* i, const float* w, const float* b, int64_t r, int C, float e) override {
    rec([=] { in_->layernorm(o, i, w, b, r, C, e); });
  }
  void layernorm_modulate_impl(float* o, const float* i, const float* w, const float* b, const float* sh, const float* sc,
                          int64_t st, const int32_t* map, int64_t r, int C, float e) override {
    rec([=] { in_->layernorm_modulate(o, i, w, b, sh, sc, st, map, r, C, e); });
  }
  void gated_residual_impl(float* x, const float* y, const float* g, int64_t st, const int32_t* map, int64_t r, int C) override {
    rec([=] { in_->gated_residual(x, y, g, st, map, r, C); });
  }
  void gelu_impl(float* o, const float* i, int64_t n) override { rec([=] { in_->gelu(o, i, n); }); }
  void silu_impl(float* o, const float* i, int64_t n) override { rec([=] { in_->silu(o, i, n); }); }
  void add_impl(float* o, const float* a, const float* b, int64_t n) override { rec([=] { in_->add(o, a, b, n); }); }
  void embedding_impl(float* o, const float* t, const int32_t* ids, int64_t r, int C, bool acc) override {
    rec([=] { in_->embedding(o, t, ids, r, C, acc); });
  }
  // pos and slot are read when the op runs (host memory here), like the device does
  void attention_impl(float* o, void* k, void* v, DType dt, const float* qkv, const float* a, const float* b, const float* c,
                 const float* d, int R, int Tn, const int32_t* pos, const int32_t* slot, int slots, int Tc, int H, int D,
                 float e) override {
    first_use("attention", {R, Tn, slots, Tc, H, D});
    if (capturing_) captured_attention_++;
    rec([=] { in_->attention(o, k, v, dt, qkv, a, b, c, d, R, Tn, pos, slot, slots, Tc, H, D, e); });
  }
  void sample_impl(int32_t* t, const float* l, int B, int V, bool cfg, float s, float T, int k, float p, bool g,
              const float* u) override {
    no_capture("sample");
    in_->sample(t, l, B, V, cfg, s, T, k, p, g, u);
  }
  void conv2d_impl(float* o, const float* i, Weight w, const float* b, int B, int Ci, int H, int W, int Co, int kh, int kw,
              int sh, int sw, int ph, int pw) override {
    rec([=] { in_->conv2d(o, i, w, b, B, Ci, H, W, Co, kh, kw, sh, sw, ph, pw); });
  }
  void groupnorm_impl(float* o, const float* i, const float* w, const float* b, int B, int C, int64_t HW, int G, float e,
                 bool s) override {
    rec([=] { in_->groupnorm(o, i, w, b, B, C, HW, G, e, s); });
  }
  void upsample_nearest2x_impl(float* o, const float* i, int B, int C, int H, int W) override {
    rec([=] { in_->upsample_nearest2x(o, i, B, C, H, W); });
  }
  void avgpool2x2_impl(float* o, const float* i, int B, int C, int H, int W) override {
    rec([=] { in_->avgpool2x2(o, i, B, C, H, W); });
  }
  void relu_impl(float* o, const float* i, int64_t n) override { rec([=] { in_->relu(o, i, n); }); }
  void maxpool2d_impl(float* o, const float* i, int B, int C, int H, int W, int k, int s, int p) override {
    rec([=] { in_->maxpool2d(o, i, B, C, H, W, k, s, p); });
  }
  void avgpool2d_impl(float* o, const float* i, int B, int C, int H, int W, int k, int s, int p, bool inc) override {
    rec([=] { in_->avgpool2d(o, i, B, C, H, W, k, s, p, inc); });
  }
  void copy_channels_impl(float* d, int Cd, int doff, const float* s, int Cs, int soff, int B, int C, int64_t HW,
                          bool r) override {
    rec([=] { in_->copy_channels(d, Cd, doff, s, Cs, soff, B, C, HW, r); });
  }
  void codebook_nearest_impl(int32_t* t, const float* z, const float* cb, int B, int Cz, int64_t HW, int K) override {
    rec([=] { in_->codebook_nearest(t, z, cb, B, Cz, HW, K); });
  }
  void codebook_lookup_impl(float* o, const int32_t* t, const float* cb, int B, int Cz, int64_t HW) override {
    rec([=] { in_->codebook_lookup(o, t, cb, B, Cz, HW); });
  }
  bool graph_capture_begin_impl() override {
    if (capturing_) return false;
    graph_.clear();
    capturing_ = true;
    miss_ = false;
    captures_++;
    return true;
  }
  bool graph_capture_end_impl() override {
    if (!capturing_) return false;
    capturing_ = false;
    if (miss_) {
      graph_.clear();
      failed_++;
      return false;
    }
    return true;
  }
  bool graph_replay_impl() override {
    if (capturing_ || graph_.empty()) return false;
    for (auto& f : graph_) f();
    replays_++;
    return true;
  }
  void graph_reset_impl() override { graph_.clear(); }
  int captures_ = 0, replays_ = 0, captured_attention_ = 0, failed_ = 0;

 private:
  void first_use(const char* op, std::initializer_list<int64_t> dims) {
    std::string key = op;
    for (int64_t d : dims) key += "," + std::to_string(d);
    if (!capturing_) seen_.insert(key);
    else if (!seen_.count(key)) miss_ = true;
  }
  std::set<std::string> seen_;
  bool miss_ = false;
  void rec(std::function<void()> f) {
    if (capturing_) graph_.push_back(std::move(f));
    else f();
  }
  void no_capture(const char* what) {
    if (capturing_) throw Error(std::string("fake-graph: ") + what + " during a capture");
  }
  Backend* in_;
  bool capturing_ = false;
  std::vector<std::function<void()>> graph_;
};

// The KV-cached decode recorded once and replayed (FakeGraphBackend) gives the same
// logits and tokens as the plain decode on the CPU.
void test_model_graph() {
  if (!selected("model-graph")) return;
  RarConfig c;
  c.hidden = 64; c.depth = 2; c.heads = 4; c.mlp = 128; c.seq_len = 40; c.codebook = 48; c.classes = 5;
  c.pos_rows = c.seq_len + 8; c.ts_rows = c.seq_len + 4;
  FakeGraphBackend fake(cpu_backend());
  Rar plain(cpu_backend(), c, DType::F32), graphed(&fake, c, DType::F32);
  for (Rar* m : {&plain, &graphed}) {
    std::mt19937_64 r(5);
    std::uniform_real_distribution<float> d(-0.3f, 0.3f);
    for (const ParamSpec& p : rar_param_table(c)) {
      Vec v(p.numel());
      for (auto& x : v) x = d(r) + (p.kind == ParamKind::NormWeight ? 1.f : 0.f);
      m->params().set(p.name, v.data(), p.shape);
    }
    m->params().finalize();
  }
  RarGenerateOptions o;
  o.class_ids = {0, 3, 3, 4};
  o.guidance_scale = 3.f;
  o.guidance_scale_pow = 1.f;
  o.seed = 11;
  std::vector<int32_t> a = plain.generate(o, nullptr, nullptr), b = graphed.generate(o, nullptr, nullptr);
  check_ints("generate (CFG) with a recorded+replayed decode step", b, a);
  IVec ids(a.begin(), a.end()), cond = {c.class_condition(0), c.class_condition(3), c.null_condition(), c.class_condition(1)};
  Vec la = plain.decode_steps(ids.data(), cond.data(), 4), lb = graphed.decode_steps(ids.data(), cond.data(), 4);
  check("decode_steps logits with a recorded+replayed step", lb, la, 0);
  g_checks++;
  // every capture succeeded (none fell back), and steps 2..N-1 of both calls replayed
  bool used = fake.captures_ >= 2 && fake.failed_ == 0 && fake.replays_ >= 2 * (c.seq_len - 2) && fake.captured_attention_ > 0;
  std::printf("  %-4s graph path used: %d captures (%d fell back), %d replays\n", used ? "ok" : "FAIL", fake.captures_,
              fake.failed_, fake.replays_);
  if (!used) g_failures++;
}

// The guidance schedule s_t against rar-tiny/decode.npz cfg_scale_<g>_<p> (N = 16).
void test_cfg_schedule() {
  if (!selected("cfg-schedule")) return;
  const double a[16] = {1, 1.00000882, 1.00039933, 1.00371366, 1.01806453, 1.06157593, 1.16744813, 1.38897361,
                        1.80307983, 2.50961453, 3.62163187, 5.23990452, 7.40439725, 10.0198787, 12.7673776, 15.0423031};
  const double b[16] = {1, 1.02223256, 1.11681299, 1.30626887, 1.6019129, 2.00684196, 2.51640153, 3.11835254,
                        3.79320872, 4.5149203, 5.25197554, 5.96893042, 6.628329, 7.19293472, 7.62815544, 7.90451476};
  Vec ga, gb, ra(a, a + 16), rb(b, b + 16);
  for (int t = 0; t < 16; t++) {
    ga.push_back(cfg_scale_at(t, 16, 16.f, 2.75f));
    gb.push_back(cfg_scale_at(t, 16, 8.f, 1.2f));
  }
  check("cfg_scale_at(g=16, p=2.75) vs decode.npz", ga, ra, 1e-6);
  check("cfg_scale_at(g=8, p=1.2) vs decode.npz", gb, rb, 1e-6);
  // sampling_uniform: in [0,1), deterministic, different per image and step
  g_checks++;
  bool ok = sampling_uniform(1, 2, 3) == sampling_uniform(1, 2, 3) && sampling_uniform(1, 2, 3) != sampling_uniform(1, 3, 2) &&
            sampling_uniform(1, 2, 3) != sampling_uniform(2, 2, 3);
  double mean = 0;
  for (int i = 0; i < 10000; i++) {
    float u = sampling_uniform(7, i, 0);
    ok = ok && u >= 0.f && u < 1.f;
    mean += u;
  }
  mean /= 10000;
  ok = ok && std::fabs(mean - 0.5) < 0.02;
  std::printf("  %-4s sampling_uniform: deterministic, in [0,1), mean %.4f\n", ok ? "ok" : "FAIL", mean);
  if (!ok) g_failures++;
}

void bench_gemm() {
  if (!g_filter || std::strcmp(g_filter, "bench") != 0) return;
  std::printf("[bench]\n");
  Backend* be = cpu_backend();
  auto timeit = [&](const char* name, double flops, double bytes, const std::function<void()>& f) {
    f();
    int reps = 0;
    auto t0 = std::chrono::steady_clock::now();
    double el = 0;
    do {
      f();
      reps++;
      el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (el < 0.5);
    el /= reps;
    std::printf("  %-40s %8.3f ms  %7.1f GFLOP/s  %6.1f GB/s\n", name, el * 1e3, flops / el * 1e-9, bytes / el * 1e-9);
  };
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    int N = 3072, K = 768;
    Vec w = randn(static_cast<size_t>(N) * K), x = randn(4 * K), o(4 * N);
    Weight W = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), dt);
    char name[80];
    std::snprintf(name, sizeof name, "gemv M=4 N=%d K=%d %s", N, K, dtname(dt));
    timeit(name, 2.0 * 4 * N * K, static_cast<double>(N) * K * dtype_size(dt), [&] { be->linear(o.data(), x.data(), W, nullptr, 4, N, K, false); });
    be->free(const_cast<void*>(W.data));
  }
  const int64_t gemv_rows_default = cpu::gemv_max_rows();
  for (DType dt : {DType::F16, DType::F32}) {
    // GEMV-style vs packed GEMM for a few rows (decode with larger batches).
    int N = 3072, K = 768, L = 24;
    std::vector<Weight> ws;
    Vec w = randn(static_cast<size_t>(N) * K);
    for (int l = 0; l < L; l++) ws.push_back(be->upload_weight(w.data(), static_cast<int64_t>(w.size()), dt));
    for (int M : {8, 16, 32, 64, 128}) {
      Vec x = randn(static_cast<size_t>(M) * K), o(static_cast<size_t>(M) * N);
      for (int path = 0; path < 2; path++) {
        cpu::set_gemv_max_rows(path == 0 ? 1 << 20 : 0);
        char name[96];
        std::snprintf(name, sizeof name, "%s M=%d 24x(3072x768) %s", path == 0 ? "gemv" : "gemm", M, dtname(dt));
        timeit(name, 2.0 * M * N * K * L, static_cast<double>(N) * K * dtype_size(dt) * L, [&] {
          for (auto& W : ws) be->linear(o.data(), x.data(), W, nullptr, M, N, K, false);
        });
      }
    }
    cpu::set_gemv_max_rows(gemv_rows_default);
    for (auto& W : ws) be->free(const_cast<void*>(W.data));
  }
  {
    // Out of cache: 48 matrices of 3072 x 768 (f16: 226 MB), as a decode step streams them.
    int N = 3072, K = 768, L = 48;
    std::vector<Weight> ws;
    Vec w = randn(static_cast<size_t>(N) * K), x = randn(4 * K), o(4 * N);
    for (int l = 0; l < L; l++) ws.push_back(be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F16));
    timeit("gemv M=4 48 x (3072x768) f16, out of cache", 2.0 * 4 * N * K * L, static_cast<double>(N) * K * 2 * L, [&] {
      for (auto& W : ws) be->linear(o.data(), x.data(), W, nullptr, 4, N, K, false);
    });
    for (auto& W : ws) be->free(const_cast<void*>(W.data));
  }
  {
    int M = 1032, N = 768, K = 768;
    Vec w = randn(static_cast<size_t>(N) * K), x = randn(static_cast<size_t>(M) * K), o(static_cast<size_t>(M) * N);
    Weight W = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F32);
    timeit("gemm M=1032 N=768 K=768 f32", 2.0 * M * N * K, 0, [&] { be->linear(o.data(), x.data(), W, nullptr, M, N, K, false); });
    be->free(const_cast<void*>(W.data));
  }
  {
    int C = 128, H = 128, W = 128;
    Vec x = randn(static_cast<size_t>(C) * H * W), w = randn(static_cast<size_t>(C) * C * 9), o(x.size());
    Weight Wt = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F32);
    for (int rep = 0; rep < 2; rep++)
      for (int wino = 1; wino >= 0; wino--) {
        cpu::disable_winograd(!wino);
        timeit(wino ? "conv3x3 128->128 @128x128 winograd (direct-equiv GFLOP/s)" : "conv3x3 128->128 @128x128 implicit GEMM",
               2.0 * C * C * 9 * H * W, 0, [&] { be->conv2d(o.data(), x.data(), Wt, nullptr, 1, C, H, W, C, 3, 3, 1, 1, 1, 1); });
      }
    cpu::disable_winograd(false);
    be->free(const_cast<void*>(Wt.data));
  }
  {  // the VQGAN decoder's 256x256 level: fused GroupNorm+SiLU conv (+ residual), conv_out
    int C = 128, H = 256, W = 256, G = 32;
    Vec x = randn(static_cast<size_t>(C) * H * W), w = randn(static_cast<size_t>(C) * C * 9), o(x.size()), t(x.size());
    Vec gw(C, 1.f), gb(C, 0.f);
    Weight Wt = be->upload_weight(w.data(), static_cast<int64_t>(w.size()), DType::F32);
    timeit("vq 256x256 128->128 gn+silu conv +res", 2.0 * C * C * 9 * H * W, 0, [&] {
      be->conv3x3_fused(o.data(), x.data(), Wt, nullptr, 1, C, H, W, C, gw.data(), gb.data(), G, 1e-6f, true, false,
                        o.data());
    });
    timeit("vq 256x256 128->128 conv +res (no gn)", 2.0 * C * C * 9 * H * W, 0, [&] {
      be->conv3x3_fused(o.data(), x.data(), Wt, nullptr, 1, C, H, W, C, nullptr, nullptr, G, 1e-6f, false, false,
                        o.data());
    });
    timeit("vq 256x256 128->128 unfused (gn, conv, add)", 2.0 * C * C * 9 * H * W, 0, [&] {
      be->groupnorm(t.data(), x.data(), gw.data(), gb.data(), 1, C, static_cast<int64_t>(H) * W, G, 1e-6f, true);
      be->conv2d(o.data(), t.data(), Wt, nullptr, 1, C, H, W, C, 3, 3, 1, 1, 1, 1);
      be->add(o.data(), o.data(), x.data(), static_cast<int64_t>(x.size()));
    });
    for (int wino = 1; wino >= 0; wino--) {
      cpu::disable_winograd(!wino);
      timeit(wino ? "vq conv_out 128->3 gn+silu winograd" : "vq conv_out 128->3 gn+silu composed", 2.0 * C * 3 * 9 * H * W,
             0, [&] {
               be->conv3x3_fused(o.data(), x.data(), Wt, nullptr, 1, C, H, W, 3, gw.data(), gb.data(), G, 1e-6f, true,
                                 false, nullptr);
             });
    }
    cpu::disable_winograd(false);
    be->free(const_cast<void*>(Wt.data));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line: a run cut short (bench/gpu.sh) keeps its log
  if (argc > 1) g_filter = argv[1];
  std::printf("rargen_optest: CPU backend (%s kernels) against naive references\n", cpu::has_avx2() ? "AVX2/FMA" : "portable");
  g_targets.emplace_back(new Target{"cpu", cpu_backend(), false, false, {}});
  if (cpu::has_avx2()) g_targets.emplace_back(new Target{"cpu-portable", cpu_backend(), true, false, {}});
  g_targets.emplace_back(new Target{"cpu-no-winograd", cpu_backend(), false, true, {}});
#ifdef RARGEN_CUDA
  CudaProbe probe = cuda_probe();
  if (probe.available) {
    try {
      g_targets.emplace_back(new Target{"cuda:0", cuda_backend(0), false, false, {}});
      std::printf("CUDA: %s (also checked against the CPU)\n", probe.devices[0].name.c_str());
    } catch (const std::exception& e) {
      std::printf("CUDA: skipped: %s\n", e.what());
    }
  } else {
    std::printf("CUDA: skipped: %s\n", probe.reason.c_str());
  }
#else
  std::printf("CUDA: skipped: this binary was built without CUDA\n");
#endif
  // bench/gpu.sh on the device sets RARGEN_GPU_REQUIRE: there a skipped CUDA target fails
  if (std::getenv("RARGEN_GPU_REQUIRE") &&
      std::none_of(g_targets.begin(), g_targets.end(), [](const std::unique_ptr<Target>& t) { return t->be->is_gpu(); })) {
    std::printf("FAIL: RARGEN_GPU_REQUIRE is set but no CUDA target could be made\n");
    return 1;
  }
  if (g_filter && std::strcmp(g_filter, "bench") == 0) {
    bench_gemm();
    return 0;
  }
  try {
    test_tolerances();
    test_linear();
    test_norms();
    test_elementwise();
    test_attention();
    test_attention_cache();
    test_sample();
    test_conv();
    test_pooling();
    test_conv_fused();
    test_codebook();
    test_weight_roundtrip();
    test_backward();
    test_finite_differences();
    test_model_graph();
    test_cfg_schedule();
    test_contract();
    test_op_table();  // last: what every group above exercised
  } catch (const std::exception& e) {
    std::printf("FAIL: exception: %s\n", e.what());
    g_failures++;
  }
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures ? 1 : 0;
}
