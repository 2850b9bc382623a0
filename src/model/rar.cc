#include "model/rar.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

namespace rargen {

namespace {
constexpr float kEps = 1e-6f;

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

float cfg_scale_at(int t, int N, float g, float p) {
  // torch: scale_step = (1 - cos(((t / N) ** pow) * pi)) * 1/2; (g - 1) * scale_step + 1
  float ratio = static_cast<float>(static_cast<double>(t) / N);
  float step = (1.f - std::cos(std::pow(ratio, p) * static_cast<float>(M_PI))) * 0.5f;
  return static_cast<float>(static_cast<double>(g) - 1.0) * step + 1.f;
}

float sampling_uniform(uint64_t seed, uint64_t image, uint64_t step) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ image);
  h = splitmix64(h ^ (step * 0xD1B54A32D192ED03ull));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

struct Rar::Scratch {
  DeviceBuffer<float> h, qkv, att, y, mlp;
  Scratch(Backend* be, int64_t rows, const RarConfig& c)
      : h(be, rows * c.hidden), qkv(be, rows * 3 * c.hidden), att(be, rows * c.hidden), y(be, rows * c.hidden),
        mlp(be, rows * c.mlp) {}
};

Rar::Rar(Backend* be, const RarConfig& cfg, DType weight_dtype)
    : be_(be), cfg_(cfg), params_(be, weight_dtype, "RAR generator") {
  const int C = cfg.hidden, D = cfg.heads > 0 ? cfg.head_dim() : 0;
  if (C <= 0 || cfg.depth <= 0 || cfg.heads <= 0 || C % cfg.heads)
    throw Error("rargen: bad RAR config: hidden " + std::to_string(C) + " must be a positive multiple of heads " +
                std::to_string(cfg.heads));
  if (D < 1 || D > 128) throw Error("rargen: bad RAR config: head dim " + std::to_string(D) + " not in 1..128");
  if (cfg.pos_rows < cfg.seq_len + 2 || cfg.ts_rows < cfg.seq_len + 2)
    throw Error("rargen: bad RAR config: posEmbedRows and timestepRows must be >= seqLen + 2");
  // Every tensor of the table, bound to its slot by id (model/rar_params.h).
  w_.blocks.resize(cfg.depth);
  for (const ParamSpec& p : rar_param_table(cfg)) {
    RarBlockWeights* b = p.block >= 0 ? &w_.blocks[p.block] : nullptr;
    Weight* m = nullptr;
    const float** v = nullptr;
    switch (static_cast<RarParam>(p.id)) {
      case RarParam::ClsToken: v = &w_.cls_token; break;
      case RarParam::PosEmbed: v = &w_.pos_embed; break;
      case RarParam::TargetAwarePosEmbed: v = &w_.target_aware_pos_embed; break;
      case RarParam::TimestepsEmbeddings: v = &w_.timesteps_embeddings; break;
      case RarParam::Norm1W: v = &b->norm1_w; break;
      case RarParam::Norm1B: v = &b->norm1_b; break;
      case RarParam::QkvW: m = &b->qkv_w; break;
      case RarParam::QkvB: v = &b->qkv_b; break;
      case RarParam::QNormW: v = &b->q_norm_w; break;
      case RarParam::QNormB: v = &b->q_norm_b; break;
      case RarParam::KNormW: v = &b->k_norm_w; break;
      case RarParam::KNormB: v = &b->k_norm_b; break;
      case RarParam::ProjW: m = &b->proj_w; break;
      case RarParam::ProjB: v = &b->proj_b; break;
      case RarParam::Norm2W: v = &b->norm2_w; break;
      case RarParam::Norm2B: v = &b->norm2_b; break;
      case RarParam::Fc1W: m = &b->fc1_w; break;
      case RarParam::Fc1B: v = &b->fc1_b; break;
      case RarParam::Fc2W: m = &b->fc2_w; break;
      case RarParam::Fc2B: v = &b->fc2_b; break;
      case RarParam::AdaW: m = &b->ada_w; break;
      case RarParam::AdaB: v = &b->ada_b; break;
      case RarParam::Embeddings: v = &w_.embeddings; break;
      case RarParam::HeadAdaW: m = &w_.head_ada_w; break;
      case RarParam::HeadAdaB: v = &w_.head_ada_b; break;
      case RarParam::LmHeadW: m = &w_.lm_head_w; break;
      case RarParam::LmHeadB: v = &w_.lm_head_b; break;
    }
    // The table's kind decides the storage: GEMM weights in the weight dtype, the rest F32.
    if ((p.kind == ParamKind::Linear) != (m != nullptr))
      throw Error("rargen: internal: RAR parameter " + p.name + " has kind " + param_kind_name(p.kind) +
                  " but binds to a " + (m ? "matrix" : "vector") + " slot");
    if (!m && !v) throw Error("rargen: internal: RAR parameter " + p.name + " has no slot");
    if (m) params_.matrix(p.name, p.shape, m);
    else params_.vector(p.name, p.shape, v);
  }
}

Rar::~Rar() = default;

void Rar::silu_conditions(float* cond, const int32_t* cond_ids, const int32_t* pos_ids, int64_t P) {
  be_->embedding(cond, w_.embeddings, cond_ids, P, cfg_.hidden, false);
  be_->embedding(cond, w_.timesteps_embeddings, pos_ids, P, cfg_.hidden, true);
  be_->silu(cond, cond, P * cfg_.hidden);
}

void Rar::block(const RarBlockWeights& w, float* x, int R, int Tn, int pos0, const int32_t* pos0_device, int Tcache,
                void* kcache, void* vcache, DType cache_dtype, const float* mod, const int32_t* row_map, Scratch& s) {
  const int C = cfg_.hidden, I = cfg_.mlp;
  const int64_t rows = static_cast<int64_t>(R) * Tn, st = 6 * static_cast<int64_t>(C);
  // x += gate1 * Attn(LN(x) * (1 + scale1) + shift1)
  be_->layernorm_modulate(s.h.get(), x, w.norm1_w, w.norm1_b, mod, mod + C, st, row_map, rows, C, kEps);
  be_->linear(s.qkv.get(), s.h.get(), w.qkv_w, w.qkv_b, rows, 3 * C, C);                     // (rows, 3C)
  if (cache_dtype == DType::F32 && !pos0_device)
    be_->attention(s.att.get(), static_cast<float*>(kcache), static_cast<float*>(vcache), s.qkv.get(), w.q_norm_w,
                   w.q_norm_b, w.k_norm_w, w.k_norm_b, R, Tn, pos0, Tcache, cfg_.heads, cfg_.head_dim(), kEps);
  else
    be_->attention_ext(s.att.get(), kcache, vcache, cache_dtype, s.qkv.get(), w.q_norm_w, w.q_norm_b, w.k_norm_w,
                       w.k_norm_b, R, Tn, pos0, pos0_device, Tcache, cfg_.heads, cfg_.head_dim(), kEps);  // (rows, C)
  be_->linear(s.y.get(), s.att.get(), w.proj_w, w.proj_b, rows, C, C);
  be_->gated_residual(x, s.y.get(), mod + 2 * C, st, row_map, rows, C);
  // x += gate2 * MLP(LN(x) * (1 + scale2) + shift2)
  be_->layernorm_modulate(s.h.get(), x, w.norm2_w, w.norm2_b, mod + 3 * C, mod + 4 * C, st, row_map, rows, C, kEps);
  be_->linear(s.mlp.get(), s.h.get(), w.fc1_w, w.fc1_b, rows, I, C);                          // (rows, I)
  be_->gelu(s.mlp.get(), s.mlp.get(), rows * I);
  be_->linear(s.y.get(), s.mlp.get(), w.fc2_w, w.fc2_b, rows, C, I);
  be_->gated_residual(x, s.y.get(), mod + 5 * C, st, row_map, rows, C);
}

// ---------------- training path ----------------

std::vector<float> Rar::forward(const int32_t* ids, const int32_t* condition, const int32_t* orders, int B) {
  const int C = cfg_.hidden, N = cfg_.seq_len, V = cfg_.codebook, T = N + 2;
  const int64_t rows = static_cast<int64_t>(B) * T;
  // Distinct conditions u; modulation pair (u, j) at u * T + j.
  std::map<int32_t, int> slot;
  std::vector<int32_t> uniq;
  for (int b = 0; b < B; b++)
    if (slot.emplace(condition[b], static_cast<int>(uniq.size())).second) uniq.push_back(condition[b]);
  const int64_t P = static_cast<int64_t>(uniq.size()) * T;

  // Host index arrays, uploaded at once: tok, cls, pos, ta, row_map (rows each), pair cond/pos (P each).
  std::vector<int32_t> idx(5 * rows + 2 * P);
  int32_t *tok = idx.data(), *cls = tok + rows, *pos = cls + rows, *ta = pos + rows, *map = ta + rows;
  int32_t *pc = map + rows, *pp = pc + P;
  for (int b = 0; b < B; b++) {
    const int32_t* o = orders + static_cast<int64_t>(b) * N;
    for (int j = 0; j < T; j++) {
      int64_t r = static_cast<int64_t>(b) * T + j;
      tok[r] = j == 0 ? -1 : j == 1 ? condition[b] : ids[static_cast<int64_t>(b) * N + o[j - 2]];
      cls[r] = j == 0 ? 0 : -1;
      pos[r] = j < 2 ? j : 2 + o[j - 2];
      ta[r] = (j == 0 || j == N + 1) ? -1 : 2 + o[j - 1];
      map[r] = slot[condition[b]] * T + j;
    }
  }
  for (int64_t p = 0; p < P; p++) {
    pc[p] = uniq[p / T];
    pp[p] = static_cast<int32_t>(p % T);
  }
  DeviceBuffer<int32_t> didx(be_, idx.size());
  be_->upload(didx.get(), idx.data(), idx.size() * 4);
  const int32_t* d_tok = didx.get();
  const int32_t *d_cls = d_tok + rows, *d_pos = d_cls + rows, *d_ta = d_pos + rows, *d_map = d_ta + rows;
  const int32_t *d_pc = d_map + rows, *d_pp = d_pc + P;

  DeviceBuffer<float> x(be_, rows * C), cond(be_, P * C), mod(be_, P * 6 * C), logits(be_, rows * V);
  be_->embedding(x.get(), w_.embeddings, d_tok, rows, C, false);
  be_->embedding(x.get(), w_.cls_token, d_cls, rows, C, true);
  be_->embedding(x.get(), w_.pos_embed, d_pos, rows, C, true);
  be_->embedding(x.get(), w_.target_aware_pos_embed, d_ta, rows, C, true);
  silu_conditions(cond.get(), d_pc, d_pp, P);

  const int64_t cache_n = static_cast<int64_t>(B) * cfg_.heads * T * cfg_.head_dim();
  DeviceBuffer<float> kc(be_, cache_n), vc(be_, cache_n);
  Scratch s(be_, rows, cfg_);
  for (const RarBlockWeights& w : w_.blocks) {
    be_->linear(mod.get(), cond.get(), w.ada_w, w.ada_b, P, 6 * C, C);  // (P, 6C)
    block(w, x.get(), B, T, 0, nullptr, T, kc.get(), vc.get(), DType::F32, mod.get(), d_map, s);
  }
  // Final layer (scale first), on every row; position 0 is dropped on the way out.
  be_->linear(mod.get(), cond.get(), w_.head_ada_w, w_.head_ada_b, P, 2 * C, C);  // (P, 2C)
  be_->layernorm_modulate(s.h.get(), x.get(), nullptr, nullptr, mod.get() + C, mod.get(), 2 * C, d_map, rows, C, kEps);
  be_->linear(logits.get(), s.h.get(), w_.lm_head_w, w_.lm_head_b, rows, V, C);
  std::vector<float> out(static_cast<size_t>(B) * (N + 1) * V);
  be_->synchronize();
  for (int b = 0; b < B; b++)
    be_->download(out.data() + static_cast<size_t>(b) * (N + 1) * V, logits.get() + (static_cast<int64_t>(b) * T + 1) * V,
                  static_cast<size_t>(N + 1) * V * 4);
  return out;
}

// ---------------- KV-cached decode ----------------

namespace {
// A backend has one CUDA-graph slot; the first decoder to claim it uses it.
std::mutex g_graph_mutex;
std::map<Backend*, const void*> g_graph_owner;
}  // namespace

struct RarDecoder {
  Rar& m;
  Backend* be;
  const RarConfig& c;
  int R, U, Tc, chunk;
  int chunk_start = -1, chunk_len = 0;
  std::vector<int32_t> uniq, row_slot;
  DType cache_dt = DType::F32;
  bool graph_owner = false, graph_ready = false, graph_failed = false;
  std::vector<DeviceBuffer<char>> kc, vc;
  DeviceBuffer<float> x, xl, cond, mod, modh, logits;
  DeviceBuffer<int32_t> idx;
  Rar::Scratch s;

  RarDecoder(Rar& model, const std::vector<int32_t>& row_cond)
      : m(model), be(model.be_), c(model.cfg_), R(static_cast<int>(row_cond.size())), Tc(c.seq_len + 1),
        s(model.be_, 2 * static_cast<int64_t>(row_cond.size()), model.cfg_) {
    std::map<int32_t, int> slot;
    for (int32_t v : row_cond) {
      auto it = slot.emplace(v, static_cast<int>(uniq.size()));
      if (it.second) uniq.push_back(v);
      row_slot.push_back(it.first->second);
    }
    U = static_cast<int>(uniq.size());
    const int C = c.hidden;
    // Positions per modulation chunk: bounded to ~256 MiB of modulation rows.
    double per_pos = static_cast<double>(U) * (6.0 * C * c.depth + 3.0 * C) * 4.0;
    chunk = static_cast<int>(std::clamp(256.0 * (1 << 20) / per_pos, 2.0, 32.0));
    chunk = std::min(chunk, c.seq_len + 1);
    // F16 KV cache with F16/BF16 weights where the backend has it (half the reads).
    if (m.params_.matrix_dtype() != DType::F32 && be->supports_kv_cache(DType::F16)) cache_dt = DType::F16;
    const int64_t cache_bytes = static_cast<int64_t>(R) * c.heads * Tc * c.head_dim() * dtype_size(cache_dt);
    for (int l = 0; l < c.depth; l++) {
      kc.emplace_back(be, cache_bytes);
      vc.emplace_back(be, cache_bytes);
    }
    const int64_t P = static_cast<int64_t>(chunk) * U;
    x = DeviceBuffer<float>(be, 2 * static_cast<int64_t>(R) * C);
    xl = DeviceBuffer<float>(be, static_cast<int64_t>(R) * C);
    cond = DeviceBuffer<float>(be, P * C);
    mod = DeviceBuffer<float>(be, static_cast<int64_t>(c.depth) * P * 6 * C);
    modh = DeviceBuffer<float>(be, P * 2 * C);
    logits = DeviceBuffer<float>(be, static_cast<int64_t>(R) * c.codebook);
    idx = DeviceBuffer<int32_t>(be, std::max<int64_t>(11 * static_cast<int64_t>(R) + 1, 2 * P));
    if (be->is_gpu()) {
      std::lock_guard<std::mutex> lk(g_graph_mutex);
      if (!g_graph_owner.count(be)) {
        g_graph_owner[be] = this;
        graph_owner = true;
      }
    }
  }

  ~RarDecoder() {
    if (!graph_owner) return;
    try {
      be->graph_reset();
    } catch (...) {
    }
    std::lock_guard<std::mutex> lk(g_graph_mutex);
    g_graph_owner.erase(be);
  }

  // Modulation rows for positions [lo, lo + chunk): pair (p - lo) * U + u.
  void ensure_chunk(int lo, int hi) {
    if (chunk_start >= 0 && lo >= chunk_start && hi < chunk_start + chunk_len) return;
    chunk_start = lo;
    chunk_len = std::min(chunk, c.seq_len + 1 - lo);
    const int C = c.hidden;
    const int64_t P = static_cast<int64_t>(chunk_len) * U, stride = static_cast<int64_t>(chunk) * U;
    std::vector<int32_t> h(2 * P);
    for (int64_t p = 0; p < P; p++) {
      h[p] = uniq[p % U];
      h[P + p] = static_cast<int32_t>(lo + p / U);
    }
    DeviceBuffer<int32_t> d(be, h.size());
    be->upload(d.get(), h.data(), h.size() * 4);
    m.silu_conditions(cond.get(), d.get(), d.get() + P, P);
    for (int l = 0; l < c.depth; l++) {
      const RarBlockWeights& w = m.w_.blocks[l];
      be->linear(mod.get() + l * stride * 6 * C, cond.get(), w.ada_w, w.ada_b, P, 6 * C, C);
    }
    be->linear(modh.get(), cond.get(), m.w_.head_ada_w, m.w_.head_ada_b, P, 2 * C, C);
    be->synchronize();  // `d` is freed on return
  }

  // Feeds step t (t = 0: positions 0 and 1; t >= 1: position t + 1 holding token
  // prev[r] sampled at step t - 1). Leaves the step-t logits (R, V) in `logits`.
  void step(int t, const int32_t* prev) {
    const int Tn = t == 0 ? 2 : 1, pos0 = t == 0 ? 0 : t + 1;
    const int64_t rows = static_cast<int64_t>(R) * Tn;
    ensure_chunk(pos0, pos0 + Tn - 1);
    std::vector<int32_t> h(5 * rows + R + 1);
    int32_t *tok = h.data(), *cls = tok + rows, *pos = cls + rows, *ta = pos + rows, *map = ta + rows, *last = map + rows;
    last[R] = pos0;
    for (int r = 0; r < R; r++) {
      for (int i = 0; i < Tn; i++) {
        int64_t q = static_cast<int64_t>(r) * Tn + i;
        int p = pos0 + i;  // raster order: pos_embed[p], target_aware_pos_embed[p + 1]
        tok[q] = p == 0 ? -1 : p == 1 ? uniq[row_slot[r]] : prev[r];
        cls[q] = p == 0 ? 0 : -1;
        pos[q] = p;
        ta[q] = p == 0 ? -1 : p + 1;
        map[q] = (p - chunk_start) * U + row_slot[r];
      }
      last[r] = (pos0 + Tn - 1 - chunk_start) * U + row_slot[r];
    }
    be->upload(idx.get(), h.data(), h.size() * 4);
    // Steps t >= 1 all issue the same ops with the same pointers: record them once
    // (CUDA graphs) and replay. Step 1 runs directly, so the backend's scratch buffers and
    // GEMM plans for these shapes exist before step 2 is recorded (then replayed).
    if (Tn == 1 && t >= 2 && graph_owner && !graph_failed) {
      if (!graph_ready) {
        if (be->graph_capture_begin()) {
          bool ok = false;
          try {
            issue(t, rows, Tn, pos0, true);
            ok = true;
          } catch (...) {
          }
          graph_ready = be->graph_capture_end() && ok;
          if (!graph_ready) be->graph_reset();
        }
        if (!graph_ready) graph_failed = true;
      }
      if (graph_ready && be->graph_replay()) return;
      graph_failed = true;
      graph_ready = false;
    }
    issue(t, rows, Tn, pos0, false);
  }

  // The ops of one step (ids and maps already uploaded to idx).
  void issue(int t, int64_t rows, int Tn, int pos0, bool device_pos) {
    const int C = c.hidden;
    const int32_t *d_tok = idx.get(), *d_cls = d_tok + rows, *d_pos = d_cls + rows, *d_ta = d_pos + rows;
    const int32_t *d_map = d_ta + rows, *d_last = d_map + rows, *d_pos0 = d_last + R;
    be->embedding(x.get(), m.w_.embeddings, d_tok, rows, C, false);
    be->embedding(x.get(), m.w_.cls_token, d_cls, rows, C, true);
    be->embedding(x.get(), m.w_.pos_embed, d_pos, rows, C, true);
    be->embedding(x.get(), m.w_.target_aware_pos_embed, d_ta, rows, C, true);
    const int64_t stride = static_cast<int64_t>(chunk) * U * 6 * C;
    for (int l = 0; l < c.depth; l++)
      m.block(m.w_.blocks[l], x.get(), R, Tn, pos0, device_pos ? d_pos0 : nullptr, Tc, kc[l].get(), vc[l].get(), cache_dt,
              mod.get() + l * stride, d_map, s);
    // The last fed position of each row predicts token t.
    float* xp = x.get();
    if (Tn == 2) {
      for (int r = 0; r < R; r++) be->copy(xl.get() + static_cast<int64_t>(r) * C, x.get() + (2 * static_cast<int64_t>(r) + 1) * C, C * 4);
      xp = xl.get();
    }
    be->layernorm_modulate(s.h.get(), xp, nullptr, nullptr, modh.get() + C, modh.get(), 2 * C, d_last, R, C, kEps);
    be->linear(logits.get(), s.h.get(), m.w_.lm_head_w, m.w_.lm_head_b, R, c.codebook, C);
  }
};

namespace {
// Rows that fit the memory budget for the KV caches (and a little more).
int max_decode_rows(Backend* be, const RarConfig& c) {
  double per_row = 2.0 * c.depth * c.hidden * (c.seq_len + 1) * 4.0 + 16.0 * c.hidden * 4 + (c.mlp + c.codebook) * 8.0;
  double budget = be->is_gpu() ? be->free_memory() * 0.6 : std::min<double>(be->free_memory() * 0.5, 4.0 * (1 << 30));
  return static_cast<int>(std::clamp(budget / per_row, 1.0, 4096.0));
}
}  // namespace

std::vector<float> Rar::decode_steps(const int32_t* ids, const int32_t* condition, int B) {
  const int N = cfg_.seq_len, V = cfg_.codebook;
  std::vector<float> out(static_cast<size_t>(B) * N * V);
  const int bs = max_decode_rows(be_, cfg_);
  for (int b0 = 0; b0 < B; b0 += bs) {
    int nb = std::min(bs, B - b0);
    RarDecoder d(*this, std::vector<int32_t>(condition + b0, condition + b0 + nb));
    std::vector<int32_t> prev(nb);
    for (int t = 0; t < N; t++) {
      for (int r = 0; r < nb && t > 0; r++) prev[r] = ids[static_cast<int64_t>(b0 + r) * N + t - 1];
      d.step(t, prev.data());
      be_->synchronize();
      for (int r = 0; r < nb; r++)
        be_->download(out.data() + (static_cast<size_t>(b0 + r) * N + t) * V, d.logits.get() + static_cast<int64_t>(r) * V,
                      static_cast<size_t>(V) * 4);
    }
  }
  return out;
}

std::vector<int32_t> Rar::generate(const RarGenerateOptions& o, const Progress& progress,
                                   const std::atomic<bool>* cancel) {
  const int N = cfg_.seq_len, V = cfg_.codebook;
  const int B = static_cast<int>(o.class_ids.size());
  const bool cfg = o.guidance_scale != 0.f;
  std::vector<int32_t> tokens(static_cast<size_t>(B) * N);
  const int bs = std::max(1, max_decode_rows(be_, cfg_) / (cfg ? 2 : 1));
  const int nsub = (B + bs - 1) / bs;
  const int64_t total = static_cast<int64_t>(N) * nsub;
  int64_t done = 0;
  for (int b0 = 0; b0 < B; b0 += bs) {
    const int nb = std::min(bs, B - b0);
    std::vector<int32_t> row_cond;
    for (int i = 0; i < nb; i++) row_cond.push_back(cfg_.class_condition(o.class_ids[b0 + i]));
    if (cfg)
      for (int i = 0; i < nb; i++) row_cond.push_back(cfg_.null_condition());
    RarDecoder d(*this, row_cond);
    std::vector<int32_t> prev(row_cond.size()), tok(nb);
    std::vector<float> u(nb);
    for (int t = 0; t < N; t++) {
      if (cancel && cancel->load()) throw Error("rargen: generation cancelled");
      d.step(t, prev.data());
      float s = cfg ? cfg_scale_at(t, N, o.guidance_scale, o.guidance_scale_pow) : 1.f;
      for (int i = 0; i < nb; i++) u[i] = sampling_uniform(o.seed, static_cast<uint64_t>(o.index_offset + b0 + i), t);
      be_->sample(tok.data(), d.logits.get(), nb, V, cfg, s, o.temperature, o.top_k, o.top_p, o.greedy, u.data());
      for (int i = 0; i < nb; i++) {
        tokens[static_cast<size_t>(b0 + i) * N + t] = tok[i];
        prev[i] = tok[i];
        if (cfg) prev[nb + i] = tok[i];
      }
      if (progress) progress(++done, total);
    }
  }
  return tokens;
}

}  // namespace rargen
