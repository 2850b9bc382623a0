#include "model/rar.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

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

void rar_embed_inputs(Backend* be, float* x, const float* embeddings, const float* cls_token, const float* pos_embed,
                      const float* target_aware_pos_embed, const int32_t* tok, const int32_t* cls, const int32_t* pos,
                      const int32_t* ta, int64_t rows, int C) {
  be->embedding(x, embeddings, tok, rows, C, false);
  be->embedding(x, cls_token, cls, rows, C, true);
  be->embedding(x, pos_embed, pos, rows, C, true);
  be->embedding(x, target_aware_pos_embed, ta, rows, C, true);
}

void rar_block(Backend* be, const RarConfig& c, const RarBlockWeights& w, const float* x_in, float* x_out,
               const RarBlockContext& k, RarBlockScratch* s) {
  const int C = c.hidden, I = c.mlp;
  const int64_t rows = static_cast<int64_t>(k.R) * k.Tn, st = 6 * static_cast<int64_t>(C);
  const RarBlockSaved* sv = k.saved;
  if (k.train ? !sv : !s) throw Error("rargen: internal: rar_block needs saved buffers (training) or scratch");
  if (!k.train && x_out != x_in) throw Error("rargen: internal: rar_block inference runs in place");
  // inference: the residual stream in place, intermediates in scratch (h and y, mlp reused)
  float* h1 = sv ? sv->h1 : s->h.get();
  float* qkv = sv ? sv->qkv : s->qkv.get();
  float* att = sv ? sv->att : s->att.get();
  float* proj = sv ? sv->proj : s->y.get();
  float* x_mid = sv ? sv->x_mid : x_out;
  float* h2 = sv ? sv->h2 : s->h.get();
  float* fc1 = sv ? sv->fc1 : s->mlp.get();
  float* act = sv ? sv->act : s->mlp.get();
  float* fc2 = sv ? sv->fc2 : s->y.get();
  auto mark = [&](const char* what) {
    if (k.mark) (*k.mark)(what);
  };
  const float* mod = k.mod;
  // x_mid = x_in + gate1 * Attn(LN(x_in) * (1 + scale1) + shift1)
  be->layernorm_modulate(h1, x_in, w.norm1_w, w.norm1_b, mod, mod + C, st, k.row_map, rows, C, kEps);
  be->linear(qkv, h1, w.qkv_w, w.qkv_b, rows, 3 * C, C);  // (rows, 3C)
  mark("pre_attn");
  if (k.train)
    be->attention_train_forward(att, sv->lse, qkv, w.q_norm_w, w.q_norm_b, w.k_norm_w, w.k_norm_b, k.R, k.Tn, c.heads,
                                c.head_dim(), kEps, k.attn_dropout, k.seed, rar_dropout_site(k.layer, kRarSiteAttn));
  else
    be->attention(att, k.kcache, k.vcache, k.cache_dtype, qkv, w.q_norm_w, w.q_norm_b, w.k_norm_w, w.k_norm_b, k.R,
                  k.Tn, k.pos, k.slot, k.slots, k.Tcache, c.heads, c.head_dim(), kEps);  // (rows, C)
  mark("attn_fwd");
  be->linear(proj, att, w.proj_w, w.proj_b, rows, C, C);
  if (k.train) be->dropout(proj, rows * C, k.dropout, k.seed, rar_dropout_site(k.layer, kRarSiteProj));
  if (x_mid != x_in) be->copy(x_mid, x_in, rows * C * 4);
  be->gated_residual(x_mid, proj, mod + 2 * C, st, k.row_map, rows, C);
  // x_out = x_mid + gate2 * MLP(LN(x_mid) * (1 + scale2) + shift2)
  be->layernorm_modulate(h2, x_mid, w.norm2_w, w.norm2_b, mod + 3 * C, mod + 4 * C, st, k.row_map, rows, C, kEps);
  be->linear(fc1, h2, w.fc1_w, w.fc1_b, rows, I, C);  // (rows, I)
  be->gelu(act, fc1, rows * I);
  if (k.train) be->dropout(act, rows * I, k.dropout, k.seed, rar_dropout_site(k.layer, kRarSiteAct));
  be->linear(fc2, act, w.fc2_w, w.fc2_b, rows, C, I);
  if (k.train) be->dropout(fc2, rows * C, k.dropout, k.seed, rar_dropout_site(k.layer, kRarSiteFc2));
  mark("post_attn_fwd");
  if (x_out != x_mid) be->copy(x_out, x_mid, rows * C * 4);
  be->gated_residual(x_out, fc2, mod + 5 * C, st, k.row_map, rows, C);
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

  // Host index arrays, uploaded at once: tok, cls, pos, ta, row_map (rows each), pair
  // cond/pos (P each), attention first positions (0) and cache slots (b) (B each).
  std::vector<int32_t> idx(5 * rows + 2 * P + 2 * B);
  const RarInputArrays in{idx.data(), idx.data() + rows, idx.data() + 2 * rows, idx.data() + 3 * rows,
                          idx.data() + 4 * rows};
  int32_t *pc = idx.data() + 5 * rows, *pp = pc + P, *apos = pp + P, *aslot = apos + B;
  for (int b = 0; b < B; b++) {
    apos[b] = 0;
    aslot[b] = b;
    const int32_t* o = orders + static_cast<int64_t>(b) * N;
    for (int j = 0; j < T; j++)
      rar_put_input(in, static_cast<int64_t>(b) * T + j, N, j, condition[b], o,
                    j >= 2 ? ids[static_cast<int64_t>(b) * N + o[j - 2]] : 0, slot[condition[b]] * T + j);
  }
  for (int64_t p = 0; p < P; p++) {
    pc[p] = uniq[p / T];
    pp[p] = static_cast<int32_t>(p % T);
  }
  DeviceBuffer<int32_t> didx(be_, idx.size());
  be_->upload(didx.get(), idx.data(), idx.size() * 4);
  const int32_t* d_tok = didx.get();
  const int32_t *d_cls = d_tok + rows, *d_pos = d_cls + rows, *d_ta = d_pos + rows, *d_map = d_ta + rows;
  const int32_t *d_pc = d_map + rows, *d_pp = d_pc + P, *d_apos = d_pp + P, *d_aslot = d_apos + B;

  DeviceBuffer<float> x(be_, rows * C), cond(be_, P * C), mod(be_, P * 6 * C), logits(be_, rows * V);
  rar_embed_inputs(be_, x.get(), w_.embeddings, w_.cls_token, w_.pos_embed, w_.target_aware_pos_embed, d_tok, d_cls,
                   d_pos, d_ta, rows, C);
  silu_conditions(cond.get(), d_pc, d_pp, P);

  const int64_t cache_n = static_cast<int64_t>(B) * cfg_.heads * T * cfg_.head_dim();
  DeviceBuffer<float> kc(be_, cache_n), vc(be_, cache_n);
  RarBlockScratch s(be_, rows, cfg_);
  RarBlockContext k;
  k.R = B;
  k.Tn = T;
  k.mod = mod.get();
  k.row_map = d_map;
  k.kcache = kc.get();
  k.vcache = vc.get();
  k.pos = d_apos;
  k.slot = d_aslot;
  k.slots = B;
  k.Tcache = T;
  for (const RarBlockWeights& w : w_.blocks) {
    be_->linear(mod.get(), cond.get(), w.ada_w, w.ada_b, P, 6 * C, C);  // (P, 6C)
    rar_block(be_, cfg_, w, x.get(), x.get(), k, &s);
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
// Positions per modulation entry: a function of the config only, so that every decoder
// computes an entry by the same call (same rows, same M) and gets the same bits.
int mod_chunk(const RarConfig& c) { return std::min(32, c.seq_len + 1); }
// Bytes of one modulation entry: chunk positions x (depth blocks x 6C + head 2C + cond C).
double mod_entry_bytes(const RarConfig& c) {
  return static_cast<double>(mod_chunk(c)) * (6.0 * c.hidden * c.depth + 3.0 * c.hidden) * 4.0;
}
}  // namespace

// A pool of `capacity` KV-cache slots and `entries` modulation entries. Each call runs
// rows that all have the same Tn (all prefill, or all decode), each with its own slot,
// condition and step; it leaves the logits of each row's last fed position in `logits`
// (row order). Callers read them (sample / download, which synchronize) before the next
// call, since the index buffer and the logits are reused.
struct RarDecoder {
  struct Row {
    int slot;       // KV-cache slot, 0..capacity-1
    int32_t cond;   // embedding index of the condition (class or null)
    int step;       // t: 0 feeds positions 0 and 1; t >= 1 feeds position t + 1 holding `token`
    int32_t token;  // the token sampled at step t - 1 (ignored at t = 0)
  };

  Rar& m;
  Backend* be;
  const RarConfig& c;
  const int cap, E, chunk, Tc;
  DType cache_dt = DType::F32;
  std::vector<DeviceBuffer<char>> kc, vc;
  DeviceBuffer<float> x, xl, cond, mod, modh, logits;
  DeviceBuffer<int32_t> idx, pairs;
  RarBlockScratch s;
  // Modulation entries: (condition, block of positions [blk*chunk, (blk+1)*chunk)).
  struct Entry {
    int32_t cond = 0;
    int blk = -1;  // -1: empty
    uint64_t used = 0;
  };
  std::vector<Entry> pool;
  std::map<std::pair<int32_t, int>, int> where;
  uint64_t clock = 0;
  // CUDA graph of the decode call of graph_rows rows; direct_rows: the row count of the
  // last decode call run directly (its shapes exist, so it may be recorded).
  bool graph_ready = false, graph_failed = false;
  int graph_rows = -1, direct_rows = -1;
  int64_t computed_entries = 0;

  RarDecoder(Rar& model, int capacity, int entries)
      : m(model), be(model.be_), c(model.cfg_), cap(capacity), E(std::max(1, entries)), chunk(mod_chunk(model.cfg_)),
        Tc(model.cfg_.seq_len + 1), s(model.be_, 2 * static_cast<int64_t>(capacity), model.cfg_) {
    if (cap < 1) throw Error("rargen: internal: decoder capacity must be positive");
    const int C = c.hidden;
    // F16 KV cache with F16/BF16 weights where the backend has it (half the reads).
    if (m.params_.matrix_dtype() != DType::F32 && be->supports(Op::attention, DType::F16)) cache_dt = DType::F16;
    const int64_t cache_bytes = static_cast<int64_t>(cap) * c.heads * Tc * c.head_dim() * dtype_size(cache_dt);
    for (int l = 0; l < c.depth; l++) {
      kc.emplace_back(be, cache_bytes);
      vc.emplace_back(be, cache_bytes);
    }
    const int64_t P = static_cast<int64_t>(E) * chunk;
    x = DeviceBuffer<float>(be, 2 * static_cast<int64_t>(cap) * C);
    xl = DeviceBuffer<float>(be, static_cast<int64_t>(cap) * C);
    cond = DeviceBuffer<float>(be, static_cast<int64_t>(chunk) * C);
    mod = DeviceBuffer<float>(be, static_cast<int64_t>(c.depth) * P * 6 * C);
    modh = DeviceBuffer<float>(be, P * 2 * C);
    logits = DeviceBuffer<float>(be, static_cast<int64_t>(cap) * c.codebook);
    idx = DeviceBuffer<int32_t>(be, 5 * 2 * static_cast<int64_t>(cap) + 3 * static_cast<int64_t>(cap));
    pairs = DeviceBuffer<int32_t>(be, 2 * static_cast<int64_t>(chunk));
    pool.resize(E);
  }

  ~RarDecoder() {
    try {
      be->graph_release(this);
    } catch (...) {
    }
  }

  // The entry of (cond, blk), computed if missing: the rows of its chunk positions by one
  // silu_conditions + one linear per block of chunk rows, whichever entry it lands in.
  int entry(int32_t cnd, int blk) {
    auto it = where.find({cnd, blk});
    if (it != where.end()) {
      pool[it->second].used = clock;
      return it->second;
    }
    int e = -1;
    for (int i = 0; i < E; i++) {  // an empty entry, else the least recently used one not used by this call
      if (pool[i].blk < 0) {
        e = i;
        break;
      }
      if (pool[i].used != clock && (e < 0 || pool[i].used < pool[e].used)) e = i;
    }
    if (e < 0) throw Error("rargen: internal: modulation pool of " + std::to_string(E) + " entries is full");
    if (pool[e].blk >= 0) where.erase({pool[e].cond, pool[e].blk});
    pool[e] = Entry{cnd, blk, clock};
    where[{cnd, blk}] = e;
    const int C = c.hidden;
    std::vector<int32_t> h(2 * static_cast<size_t>(chunk));
    for (int q = 0; q < chunk; q++) {
      h[q] = cnd;
      h[chunk + q] = std::min(blk * chunk + q, c.seq_len);  // rows past the last position: unused
    }
    be->synchronize();  // the previous entry's ops may still read `pairs` and `cond`
    be->upload(pairs.get(), h.data(), h.size() * 4);
    m.silu_conditions(cond.get(), pairs.get(), pairs.get() + chunk, chunk);
    const int64_t off = static_cast<int64_t>(e) * chunk;
    for (int l = 0; l < c.depth; l++) {
      const RarBlockWeights& w = m.w_.blocks[l];
      be->linear(mod.get() + (static_cast<int64_t>(l) * E * chunk + off) * 6 * C, cond.get(), w.ada_w, w.ada_b, chunk,
                 6 * C, C);
    }
    be->linear(modh.get() + off * 2 * C, cond.get(), m.w_.head_ada_w, m.w_.head_ada_b, chunk, 2 * C, C);
    computed_entries++;
    return e;
  }

  void run(const std::vector<Row>& rows) {
    const int n = static_cast<int>(rows.size());
    if (n < 1 || n > cap) throw Error("rargen: internal: decoder call of " + std::to_string(n) + " rows");
    const int Tn = rows[0].step == 0 ? 2 : 1;
    const int64_t nr = static_cast<int64_t>(n) * Tn;
    clock++;
    std::vector<int32_t> h(5 * nr + 3 * n);
    const RarInputArrays in{h.data(), h.data() + nr, h.data() + 2 * nr, h.data() + 3 * nr, h.data() + 4 * nr};
    int32_t *last = h.data() + 5 * nr, *apos = last + n, *aslot = apos + n;
    // every entry this call needs is marked used before any is evicted
    std::vector<int> ent(n);
    for (int pass = 0; pass < 2; pass++)
      for (int r = 0; r < n; r++) {
        const Row& w = rows[r];
        const int p0 = w.step == 0 ? 0 : w.step + 1;
        auto it = where.find({w.cond, p0 / chunk});
        if (pass == 0) {
          if (it != where.end()) pool[it->second].used = clock;
        } else {
          ent[r] = entry(w.cond, p0 / chunk);
        }
      }
    for (int r = 0; r < n; r++) {
      const Row& w = rows[r];
      if ((w.step == 0) != (Tn == 2) || w.step < 0 || w.step >= c.seq_len || w.slot < 0 || w.slot >= cap)
        throw Error("rargen: internal: bad decoder row");
      const int p0 = w.step == 0 ? 0 : w.step + 1;
      const int base = ent[r] * chunk - (p0 / chunk) * chunk;  // pair row of position p: base + p
      for (int i = 0; i < Tn; i++)  // raster order
        rar_put_input(in, static_cast<int64_t>(r) * Tn + i, c.seq_len, p0 + i, w.cond, nullptr, w.token, base + p0 + i);
      last[r] = base + p0 + Tn - 1;
      apos[r] = p0;
      aslot[r] = w.slot;
    }
    be->upload(idx.get(), h.data(), h.size() * 4);
    // Decode calls of one row count issue the same ops with the same pointers: record
    // one (CUDA graphs) and replay it. The first call of a row count runs directly, so the
    // backend's scratch buffers and GEMM plans for its shapes exist before it is recorded.
    if (Tn == 1 && be->is_gpu() && !graph_failed && be->graph_claim(this)) {
      if (graph_ready && graph_rows == n) {
        if (be->graph_replay()) return;
        graph_failed = true;
      } else if (direct_rows == n) {
        graph_ready = false;
        if (be->graph_capture_begin()) {
          bool ok = false;
          try {
            issue(n, Tn);
            ok = true;
          } catch (...) {
          }
          graph_ready = be->graph_capture_end() && ok;
          if (!graph_ready) be->graph_reset();
        }
        graph_rows = n;
        if (graph_ready && be->graph_replay()) return;
        graph_failed = true;
      }
      graph_ready = graph_ready && !graph_failed;
    }
    issue(n, Tn);
    if (Tn == 1) direct_rows = n;
  }

  // The ops of one call (ids, maps, positions and slots already uploaded to idx).
  void issue(int n, int Tn) {
    const int C = c.hidden;
    const int64_t nr = static_cast<int64_t>(n) * Tn;
    const int32_t *d_tok = idx.get(), *d_cls = d_tok + nr, *d_pos = d_cls + nr, *d_ta = d_pos + nr;
    const int32_t *d_map = d_ta + nr, *d_last = d_map + nr, *d_apos = d_last + n, *d_aslot = d_apos + n;
    rar_embed_inputs(be, x.get(), m.w_.embeddings, m.w_.cls_token, m.w_.pos_embed, m.w_.target_aware_pos_embed, d_tok,
                     d_cls, d_pos, d_ta, nr, C);
    const int64_t stride = static_cast<int64_t>(E) * chunk * 6 * C;
    RarBlockContext k;
    k.R = n;
    k.Tn = Tn;
    k.row_map = d_map;
    k.cache_dtype = cache_dt;
    k.pos = d_apos;
    k.slot = d_aslot;
    k.slots = cap;
    k.Tcache = Tc;
    for (int l = 0; l < c.depth; l++) {
      k.mod = mod.get() + l * stride;
      k.kcache = kc[l].get();
      k.vcache = vc[l].get();
      rar_block(be, c, m.w_.blocks[l], x.get(), x.get(), k, &s);
    }
    // The last fed position of each row predicts the row's next token.
    float* xp = x.get();
    if (Tn == 2) {
      for (int r = 0; r < n; r++)
        be->copy(xl.get() + static_cast<int64_t>(r) * C, x.get() + (2 * static_cast<int64_t>(r) + 1) * C, C * 4);
      xp = xl.get();
    }
    be->layernorm_modulate(s.h.get(), xp, nullptr, nullptr, modh.get() + C, modh.get(), 2 * C, d_last, n, C, kEps);
    be->linear(logits.get(), s.h.get(), m.w_.lm_head_w, m.w_.lm_head_b, n, c.codebook, C);
  }
};

namespace {
// Rows that fit the memory budget for the KV caches, a modulation entry each (and a
// little more).
int max_decode_rows(Backend* be, const RarConfig& c) {
  double per_row = 2.0 * c.depth * c.hidden * (c.seq_len + 1) * 4.0 + 16.0 * c.hidden * 4 + (c.mlp + c.codebook) * 8.0 +
                   mod_entry_bytes(c);
  double budget = be->is_gpu() ? be->free_memory() * 0.6 : std::min<double>(be->free_memory() * 0.5, 4.0 * (1 << 30));
  return static_cast<int>(std::clamp(budget / per_row, 1.0, 4096.0));
}

int distinct(const std::vector<int32_t>& v) {
  std::vector<int32_t> u(v);
  std::sort(u.begin(), u.end());
  return static_cast<int>(std::unique(u.begin(), u.end()) - u.begin());
}
}  // namespace

std::vector<float> Rar::decode_steps(const int32_t* ids, const int32_t* condition, int B) {
  const int N = cfg_.seq_len, V = cfg_.codebook;
  std::vector<float> out(static_cast<size_t>(B) * N * V);
  const int bs = max_decode_rows(be_, cfg_);
  for (int b0 = 0; b0 < B; b0 += bs) {
    int nb = std::min(bs, B - b0);
    std::vector<int32_t> cond(condition + b0, condition + b0 + nb);
    RarDecoder d(*this, nb, distinct(cond));
    std::vector<RarDecoder::Row> rows(nb);
    for (int t = 0; t < N; t++) {
      for (int r = 0; r < nb; r++)
        rows[r] = {r, cond[r], t, t > 0 ? ids[static_cast<int64_t>(b0 + r) * N + t - 1] : 0};
      d.run(rows);
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
    // rows [cond 0..nb-1][null 0..nb-1], row r in cache slot r
    std::vector<int32_t> row_cond;
    for (int i = 0; i < nb; i++) row_cond.push_back(cfg_.class_condition(o.class_ids[b0 + i]));
    if (cfg)
      for (int i = 0; i < nb; i++) row_cond.push_back(cfg_.null_condition());
    const int R = static_cast<int>(row_cond.size());
    RarDecoder d(*this, R, distinct(row_cond));
    std::vector<RarDecoder::Row> rows(R);
    std::vector<int32_t> tok(nb);
    std::vector<float> u(nb);
    for (int t = 0; t < N; t++) {
      if (cancel && cancel->load()) throw Cancelled();
      for (int r = 0; r < R; r++) rows[r] = {r, row_cond[r], t, t > 0 ? tok[r % nb] : 0};
      d.run(rows);
      float s = cfg ? cfg_scale_at(t, N, o.guidance_scale, o.guidance_scale_pow) : 1.f;
      for (int i = 0; i < nb; i++) u[i] = sampling_uniform(o.seed, static_cast<uint64_t>(o.index_offset + b0 + i), t);
      be_->sample(tok.data(), d.logits.get(), nb, V, cfg, s, o.temperature, o.top_k, o.top_p, o.greedy, u.data());
      for (int i = 0; i < nb; i++) tokens[static_cast<size_t>(b0 + i) * N + t] = tok[i];
      if (progress) progress(++done, total);
    }
  }
  return tokens;
}

// ---------------- continuous-batching session ----------------

struct RarSession::Seq {
  int64_t id;
  RarSequenceOptions o;
  int slot[2] = {-1, -1};
  std::vector<int32_t> tokens;
  bool cancelled = false;
};

RarSession::RarSession(Rar& model, int max_rows)
    : m_(model), max_rows_(max_rows > 0 ? max_rows : max_decode_rows(model.be_, model.cfg_)) {
  // One modulation entry per row covers any mix of conditions and positions in a call.
  dec_ = std::make_unique<RarDecoder>(m_, max_rows_, max_rows_);
  for (int i = max_rows_ - 1; i >= 0; i--) free_slots_.push_back(i);
}

RarSession::~RarSession() = default;

int RarSession::free_rows() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(free_slots_.size());
}

int RarSession::active() const {
  std::lock_guard<std::mutex> lk(mu_);
  int n = 0;
  for (const auto& kv : seqs_) n += !kv.second->cancelled;
  return n;
}

int64_t RarSession::add(const RarSequenceOptions& o) {
  const RarConfig& c = m_.cfg_;
  if (o.class_id < 0 || o.class_id >= c.classes)
    throw Error("rargen: session: classId must be an integer between 0 and " + std::to_string(c.classes - 1) +
                " but received " + std::to_string(o.class_id));
  if (!std::isfinite(o.guidance_scale) || !std::isfinite(o.guidance_scale_pow))
    throw Error("rargen: session: guidanceScale and guidanceScalePow must be finite");
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    throw Error("rargen: session: temperature must be a finite number > 0");
  if (o.top_k < 0 || o.top_k > c.codebook)
    throw Error("rargen: session: topK must be an integer between 0 and " + std::to_string(c.codebook));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw Error("rargen: session: topP must be in (0, 1]");
  if (o.index < 0) throw Error("rargen: session: index must be >= 0");
  const int need = rows_for(o);
  std::lock_guard<std::mutex> lk(mu_);
  if (static_cast<int>(free_slots_.size()) < need)
    throw SessionFull("rargen: session: no room for a sequence of " + std::to_string(need) + " rows (" +
                      std::to_string(free_slots_.size()) + " of " + std::to_string(max_rows_) +
                      " rows free); step() until sequences finish, or cancel some");
  auto s = std::make_unique<Seq>();
  s->id = next_id_++;
  s->o = o;
  for (int k = 0; k < need; k++) {
    s->slot[k] = free_slots_.back();
    free_slots_.pop_back();
  }
  s->tokens.reserve(c.seq_len);
  const int64_t id = s->id;
  seqs_.emplace(id, std::move(s));
  return id;
}

void RarSession::release(Seq& s) {
  for (int k = 0; k < 2; k++)
    if (s.slot[k] >= 0) free_slots_.push_back(s.slot[k]);
  s.slot[0] = s.slot[1] = -1;
}

bool RarSession::cancel(int64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end() || it->second->cancelled) return false;
  it->second->cancelled = true;
  if (!in_step_) {
    release(*it->second);
    seqs_.erase(it);
  }
  return true;
}

RarSession::StepResult RarSession::step() {
  const RarConfig& c = m_.cfg_;
  const int N = c.seq_len, V = c.codebook;
  std::vector<Seq*> prefill, decode;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (in_step_) throw Error("rargen: session: step() is already running; await it first");
    for (auto& kv : seqs_) {
      if (kv.second->cancelled) continue;
      (kv.second->tokens.empty() ? prefill : decode).push_back(kv.second.get());
    }
    in_step_ = true;
  }
  struct Done {
    RarSession* self;
    ~Done() {
      std::lock_guard<std::mutex> lk(self->mu_);
      self->in_step_ = false;
    }
  };
  StepResult res;
  {
    Done done{this};
    std::vector<std::pair<Seq*, int32_t>> sampled;
    // One call per phase; within it, sequences with the same sampling options (and s_t)
    // form a group laid out [cond rows][null rows], sampled by one sample() call.
    for (std::vector<Seq*>* phase : {&prefill, &decode}) {
      if (phase->empty()) continue;
      struct Key {
        bool cfg;
        float s, temp, top_p;
        int top_k;
        bool greedy;
        bool operator<(const Key& k) const {
          return std::tie(cfg, s, temp, top_p, top_k, greedy) < std::tie(k.cfg, k.s, k.temp, k.top_p, k.top_k, k.greedy);
        }
      };
      std::map<Key, std::vector<Seq*>> groups;
      for (Seq* q : *phase) {
        const int t = static_cast<int>(q->tokens.size());
        const bool cfg = q->o.guidance_scale != 0.f;
        const float sc = cfg ? cfg_scale_at(t, N, q->o.guidance_scale, q->o.guidance_scale_pow) : 1.f;
        groups[{cfg, sc, q->o.temperature, q->o.top_p, q->o.top_k, q->o.greedy}].push_back(q);
      }
      std::vector<RarDecoder::Row> rows;
      for (auto& g : groups) {
        for (Seq* q : g.second) {
          const int t = static_cast<int>(q->tokens.size());
          rows.push_back({q->slot[0], c.class_condition(q->o.class_id), t, t > 0 ? q->tokens.back() : 0});
        }
        if (g.first.cfg)
          for (Seq* q : g.second) {
            const int t = static_cast<int>(q->tokens.size());
            rows.push_back({q->slot[1], c.null_condition(), t, t > 0 ? q->tokens.back() : 0});
          }
      }
      dec_->run(rows);
      int64_t off = 0;
      for (auto& g : groups) {
        const Key& k = g.first;
        const int nb = static_cast<int>(g.second.size());
        std::vector<float> u(nb);
        std::vector<int32_t> tok(nb);
        for (int i = 0; i < nb; i++) {
          const Seq* q = g.second[i];
          u[i] = sampling_uniform(q->o.seed, static_cast<uint64_t>(q->o.index), q->tokens.size());
        }
        m_.be_->sample(tok.data(), dec_->logits.get() + off * V, nb, V, k.cfg, k.s, k.temp, k.top_k, k.top_p, k.greedy,
                       u.data());
        for (int i = 0; i < nb; i++) sampled.push_back({g.second[i], tok[i]});
        off += k.cfg ? 2 * nb : nb;
      }
      // the tokens land after the phase's call: the decode phase reads tokens.back()
      for (auto& st : sampled) st.first->tokens.push_back(st.second);
      sampled.clear();
    }
    std::lock_guard<std::mutex> lk(mu_);
    for (std::vector<Seq*>* phase : {&prefill, &decode})
      for (Seq* q : *phase) {
        if (q->cancelled) continue;
        res.progressed.push_back({q->id, static_cast<int>(q->tokens.size())});
      }
    for (auto it = seqs_.begin(); it != seqs_.end();) {
      Seq& q = *it->second;
      // sequences added during this step have no tokens and are not cancelled: kept
      if (q.cancelled || static_cast<int>(q.tokens.size()) == N) {
        if (!q.cancelled) res.finished.push_back({q.id, std::move(q.tokens)});
        release(q);
        it = seqs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  return res;
}

}  // namespace rargen
