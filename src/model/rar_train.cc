// RAR training forward + backward (see rar_train.h). Shapes in comments: R = B*T rows
// (T = N + 2 positions per sample: cls, class, N image tokens), P = U*T modulation
// rows (U distinct conditions in the batch; row r = (b, j) uses modulation row
// u(b)*T + j through row_map), C hidden, I MLP, H heads, V vocab.
#include "model/rar_train.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "model/params.h"

namespace rargen {

namespace {
constexpr float kEps = 1e-6f;
// Dropout sites: 4 per block (model/rar.h, shared with rar_block's training forward).
constexpr uint64_t kSiteAttn = kRarSiteAttn, kSiteProj = kRarSiteProj, kSiteAct = kRarSiteAct, kSiteFc2 = kRarSiteFc2;
uint64_t site(int layer, uint64_t which) { return rar_dropout_site(layer, which); }

// RARGEN_TRAIN_PROFILE=1: per-phase wall times of each forward_backward on stderr.
struct PhaseTimer {
  bool on;
  Backend* be;
  std::chrono::steady_clock::time_point t;
  std::string line;
  explicit PhaseTimer(Backend* b) : on(std::getenv("RARGEN_TRAIN_PROFILE") != nullptr), be(b), t(std::chrono::steady_clock::now()) {}
  void mark(const char* what) {
    if (!on) return;
    be->synchronize();
    auto now = std::chrono::steady_clock::now();
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s %.0fms", what, std::chrono::duration<double, std::milli>(now - t).count());
    line += buf;
    t = now;
  }
  ~PhaseTimer() {
    if (on) std::fprintf(stderr, "rargen train profile:%s\n", line.c_str());
  }
};
}  // namespace

struct RarTrainer::Acts {
  int B = 0;  // capacity in samples
  struct Block {
    DeviceBuffer<float> x_in, h1, qkv, att, lse, proj, x_mid, h2, fc1, act, fc2, mod;
  };
  std::vector<Block> blocks;
  DeviceBuffer<float> x_fin, hf, cond_pre, cond_silu, head_mod, logits, losses;
  DeviceBuffer<int32_t> correct, idx;
  // backward scratch
  DeviceBuffer<float> dx, dc, di, dqkv, datt, dmod, dcond;
};

RarTrainer::RarTrainer(Backend* be, const RarConfig& cfg, const RarTrainOptions& opt)
    : be_(be), cfg_(cfg), opt_(opt) {
  if (cfg.hidden < 1 || cfg.depth < 1 || cfg.heads < 1 || cfg.hidden % cfg.heads != 0 || cfg.mlp < 1 ||
      cfg.seq_len < 1 || cfg.codebook < 1 || cfg.classes < 1)
    throw Error("RarTrainer: invalid config (hidden " + std::to_string(cfg.hidden) + ", heads " +
                std::to_string(cfg.heads) + ")");
  if (cfg.pos_rows < cfg.seq_len + 2 || cfg.ts_rows < cfg.seq_len + 2)
    throw Error("RarTrainer: pos_rows and ts_rows must be at least seq_len + 2");
  if (opt.dropout < 0.f || opt.dropout >= 1.f || opt.attn_dropout < 0.f || opt.attn_dropout >= 1.f)
    throw Error("RarTrainer: dropout probabilities must be in [0, 1)");
  // The flat buffers follow the table (state-dict order, model/rar_params.h); decay from it.
  table_ = rar_param_table(cfg);
  for (const ParamSpec& spec : table_) {
    ParamInfo p;
    p.name = spec.name;
    p.shape = spec.shape;
    p.numel = spec.numel();
    p.offset = total_;
    p.decayed = spec.decayed;
    total_ += p.numel;
    index_[p.name] = infos_.size();
    infos_.push_back(std::move(p));
  }

  params_ = static_cast<float*>(be_->alloc(total_ * 4));
  grads_ = static_cast<float*>(be_->alloc(total_ * 4));
  m_ = static_cast<float*>(be_->alloc(total_ * 4));
  v_ = static_cast<float*>(be_->alloc(total_ * 4));
  for (float* b : {params_, grads_, m_, v_}) be_->fill(b, 0.f, total_);
  p_ = bind(params_);
  g_ = bind(grads_);
  acts_ = std::make_unique<Acts>();
}

RarTrainer::~RarTrainer() {
  acts_.reset();
  for (float* b : {params_, grads_, m_, v_})
    if (b) be_->free(b);
}

// Each table entry's slot in ModelP, by id (never by position).
RarTrainer::ModelP RarTrainer::bind(float* base) const {
  ModelP m{};
  m.blocks.assign(cfg_.depth, BlockP{});
  for (size_t k = 0; k < table_.size(); k++) {
    const ParamSpec& p = table_[k];
    BlockP* b = p.block >= 0 ? &m.blocks[p.block] : nullptr;
    float** slot = nullptr;
    switch (static_cast<RarParam>(p.id)) {
      case RarParam::ClsToken: slot = &m.cls_token; break;
      case RarParam::PosEmbed: slot = &m.pos_embed; break;
      case RarParam::TargetAwarePosEmbed: slot = &m.target_aware_pos_embed; break;
      case RarParam::TimestepsEmbeddings: slot = &m.timesteps_embeddings; break;
      case RarParam::Norm1W: slot = &b->norm1_w; break;
      case RarParam::Norm1B: slot = &b->norm1_b; break;
      case RarParam::QkvW: slot = &b->qkv_w; break;
      case RarParam::QkvB: slot = &b->qkv_b; break;
      case RarParam::QNormW: slot = &b->q_norm_w; break;
      case RarParam::QNormB: slot = &b->q_norm_b; break;
      case RarParam::KNormW: slot = &b->k_norm_w; break;
      case RarParam::KNormB: slot = &b->k_norm_b; break;
      case RarParam::ProjW: slot = &b->proj_w; break;
      case RarParam::ProjB: slot = &b->proj_b; break;
      case RarParam::Norm2W: slot = &b->norm2_w; break;
      case RarParam::Norm2B: slot = &b->norm2_b; break;
      case RarParam::Fc1W: slot = &b->fc1_w; break;
      case RarParam::Fc1B: slot = &b->fc1_b; break;
      case RarParam::Fc2W: slot = &b->fc2_w; break;
      case RarParam::Fc2B: slot = &b->fc2_b; break;
      case RarParam::AdaW: slot = &b->ada_w; break;
      case RarParam::AdaB: slot = &b->ada_b; break;
      case RarParam::Embeddings: slot = &m.embeddings; break;
      case RarParam::HeadAdaW: slot = &m.head_ada_w; break;
      case RarParam::HeadAdaB: slot = &m.head_ada_b; break;
      case RarParam::LmHeadW: slot = &m.lm_head_w; break;
      case RarParam::LmHeadB: slot = &m.lm_head_b; break;
    }
    if (!slot || *slot) throw Error("RarTrainer: internal: parameter " + p.name + " bound twice or not at all");
    *slot = base + infos_[k].offset;
  }
  // Every slot filled: a tensor the kernels read but the table lacks is an error here, not a crash later.
  std::vector<float*> all = {m.cls_token, m.pos_embed, m.target_aware_pos_embed, m.timesteps_embeddings,
                             m.embeddings, m.head_ada_w, m.head_ada_b, m.lm_head_w, m.lm_head_b};
  for (const BlockP& b : m.blocks)
    all.insert(all.end(), {b.norm1_w, b.norm1_b, b.qkv_w, b.qkv_b, b.q_norm_w, b.q_norm_b, b.k_norm_w, b.k_norm_b,
                           b.proj_w, b.proj_b, b.norm2_w, b.norm2_b, b.fc1_w, b.fc1_b, b.fc2_w, b.fc2_b, b.ada_w, b.ada_b});
  for (float* q : all)
    if (!q) throw Error("RarTrainer: internal: a parameter slot has no entry in the RAR parameter table");
  return m;
}

const RarTrainer::ParamInfo& RarTrainer::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("RarTrainer: no parameter named '" + name + "'");
  return infos_[it->second];
}

float* RarTrainer::buffer(TrainTensor kind) const {
  switch (kind) {
    case TrainTensor::Param: return params_;
    case TrainTensor::Grad: return grads_;
    case TrainTensor::ExpAvg: return m_;
    case TrainTensor::ExpAvgSq: return v_;
  }
  return nullptr;
}

void RarTrainer::set_tensor(TrainTensor kind, const std::string& name, const float* host, int64_t n) {
  const ParamInfo& p = info(name);
  if (kind == TrainTensor::Grad) throw Error("RarTrainer: gradients cannot be set");
  if (n != p.numel)
    throw Error("RarTrainer: " + name + " has " + std::to_string(p.numel) + " values (shape " + shape_str(p.shape) +
                ") but " + std::to_string(n) + " were given");
  be_->upload(buffer(kind) + p.offset, host, n * 4);
}

void RarTrainer::get_tensor(TrainTensor kind, const std::string& name, float* host, int64_t n) const {
  const ParamInfo& p = info(name);
  if (n != p.numel) throw Error("RarTrainer: " + name + " has " + std::to_string(p.numel) + " values");
  be_->synchronize();
  be_->download(host, buffer(kind) + p.offset, n * 4);
}

void RarTrainer::ensure_acts(int B, int64_t /*P*/) {
  Acts& a = *acts_;
  if (a.B >= B) return;
  a = Acts();  // free the old ones first
  const int64_t C = cfg_.hidden, I = cfg_.mlp, V = cfg_.codebook, T = cfg_.seq_len + 2, H = cfg_.heads;
  const int64_t R = B * T, Pm = R;  // P <= B*T
  a.blocks.resize(cfg_.depth);
  for (Acts::Block& b : a.blocks) {
    b.x_in = DeviceBuffer<float>(be_, R * C);
    b.h1 = DeviceBuffer<float>(be_, R * C);
    b.qkv = DeviceBuffer<float>(be_, R * 3 * C);
    b.att = DeviceBuffer<float>(be_, R * C);
    b.lse = DeviceBuffer<float>(be_, B * H * T);
    b.proj = DeviceBuffer<float>(be_, R * C);
    b.x_mid = DeviceBuffer<float>(be_, R * C);
    b.h2 = DeviceBuffer<float>(be_, R * C);
    b.fc1 = DeviceBuffer<float>(be_, R * I);
    b.act = DeviceBuffer<float>(be_, R * I);
    b.fc2 = DeviceBuffer<float>(be_, R * C);
    b.mod = DeviceBuffer<float>(be_, Pm * 6 * C);
  }
  a.x_fin = DeviceBuffer<float>(be_, R * C);
  a.hf = DeviceBuffer<float>(be_, R * C);
  a.cond_pre = DeviceBuffer<float>(be_, Pm * C);
  a.cond_silu = DeviceBuffer<float>(be_, Pm * C);
  a.head_mod = DeviceBuffer<float>(be_, Pm * 2 * C);
  a.logits = DeviceBuffer<float>(be_, R * V);
  a.losses = DeviceBuffer<float>(be_, R);
  a.correct = DeviceBuffer<int32_t>(be_, R);
  a.idx = DeviceBuffer<int32_t>(be_, 6 * R + 2 * Pm);
  a.dx = DeviceBuffer<float>(be_, R * C);
  a.dc = DeviceBuffer<float>(be_, R * C);
  a.di = DeviceBuffer<float>(be_, R * I);
  a.dqkv = DeviceBuffer<float>(be_, R * 3 * C);
  a.datt = DeviceBuffer<float>(be_, R * C);
  a.dmod = DeviceBuffer<float>(be_, Pm * 6 * C);
  a.dcond = DeviceBuffer<float>(be_, Pm * C);
  a.B = B;
}

RarTrainStats RarTrainer::forward_backward(const RarTrainBatch& bt) {
  const int B = bt.B;
  const int C = cfg_.hidden, I = cfg_.mlp, N = cfg_.seq_len, V = cfg_.codebook, T = N + 2, H = cfg_.heads,
            D = cfg_.head_dim();
  if (B < 1) throw Error("RarTrainer: batch must hold at least one sample");
  const int64_t R = static_cast<int64_t>(B) * T;

  // ---- host index arrays: distinct conditions u, modulation pair (u, j) at u*T + j ----
  std::map<int32_t, int> slot;
  std::vector<int32_t> uniq;
  for (int b = 0; b < B; b++)
    if (slot.emplace(bt.condition[b], static_cast<int>(uniq.size())).second) uniq.push_back(bt.condition[b]);
  const int64_t P = static_cast<int64_t>(uniq.size()) * T;
  ensure_acts(B, P);
  Acts& a = *acts_;

  std::vector<int32_t> idx(6 * R + 2 * P);
  const RarInputArrays in{idx.data(), idx.data() + R, idx.data() + 2 * R, idx.data() + 3 * R, idx.data() + 4 * R};
  int32_t *tgt = idx.data() + 5 * R, *pc = tgt + R, *pp = pc + P;
  for (int b = 0; b < B; b++) {
    const int32_t* o = bt.orders + static_cast<int64_t>(b) * N;
    const int32_t* ids = bt.ids + static_cast<int64_t>(b) * N;
    for (int j = 0; j < T; j++) {
      int64_t r = static_cast<int64_t>(b) * T + j;
      rar_put_input(in, r, N, j, bt.condition[b], o, j >= 2 ? ids[o[j - 2]] : 0, slot[bt.condition[b]] * T + j);
      tgt[r] = (j >= 1 && j <= N) ? ids[o[j - 1]] : -1;  // output j predicts token order[j-1]
    }
  }
  for (int64_t p = 0; p < P; p++) {
    pc[p] = uniq[p / T];
    pp[p] = static_cast<int32_t>(p % T);
  }
  be_->upload(a.idx.get(), idx.data(), idx.size() * 4);
  const int32_t* d_tok = a.idx.get();
  const int32_t *d_cls = d_tok + R, *d_pos = d_cls + R, *d_ta = d_pos + R, *d_map = d_ta + R, *d_tgt = d_map + R;
  const int32_t *d_pc = d_tgt + R, *d_pp = d_pc + P;

  const Weight noW{};
  auto W = [](const float* p) {
    Weight w;
    w.data = p;
    w.dtype = DType::F32;
    return w;
  };
  const float pd = opt_.dropout, pa = opt_.attn_dropout;
  const uint64_t seed = bt.dropout_seed;
  (void)noW;

  PhaseTimer timer(be_);
  // ================= forward =================
  // x0 (R, C): token/class embedding + cls + pos_embed + target-aware pos embed.
  float* x = a.blocks.empty() ? a.x_fin.get() : a.blocks[0].x_in.get();
  rar_embed_inputs(be_, x, p_.embeddings, p_.cls_token, p_.pos_embed, p_.target_aware_pos_embed, d_tok, d_cls, d_pos,
                   d_ta, R, C);
  // cond (P, C) = embeddings[c_u] + timesteps_embeddings[j]; SiLU'ed copy drives adaLN.
  be_->embedding(a.cond_pre.get(), p_.embeddings, d_pc, P, C, false);
  be_->embedding(a.cond_pre.get(), p_.timesteps_embeddings, d_pp, P, C, true);
  be_->silu(a.cond_silu.get(), a.cond_pre.get(), P * C);

  const std::function<void(const char*)> mark = [&timer](const char* what) { timer.mark(what); };
  RarBlockContext k;
  k.R = B;
  k.Tn = T;
  k.row_map = d_map;
  k.train = true;
  k.dropout = pd;
  k.attn_dropout = pa;
  k.seed = seed;
  k.mark = &mark;
  for (int l = 0; l < cfg_.depth; l++) {
    const BlockP& w = p_.blocks[l];
    Acts::Block& s = a.blocks[l];
    float* mod = s.mod.get();  // (P, 6C): shift1, scale1, gate1, shift2, scale2, gate2
    be_->linear(mod, a.cond_silu.get(), W(w.ada_w), w.ada_b, P, 6 * C, C);
    const RarBlockWeights bw{w.norm1_w, w.norm1_b, W(w.qkv_w), w.qkv_b, w.q_norm_w, w.q_norm_b, w.k_norm_w,
                             w.k_norm_b, W(w.proj_w),  w.proj_b,  w.norm2_w, w.norm2_b, W(w.fc1_w), w.fc1_b,
                             W(w.fc2_w), w.fc2_b, W(w.ada_w), w.ada_b};
    const RarBlockSaved saved{s.h1.get(), s.qkv.get(), s.att.get(), s.lse.get(), s.proj.get(),
                              s.x_mid.get(), s.h2.get(), s.fc1.get(), s.act.get(), s.fc2.get()};
    k.mod = mod;
    k.layer = l;
    k.saved = &saved;
    float* x_out = l + 1 < cfg_.depth ? a.blocks[l + 1].x_in.get() : a.x_fin.get();
    rar_block(be_, cfg_, bw, s.x_in.get(), x_out, k, nullptr);
  }
  timer.mark("blocks_fwd");
  // Final layer (scale first), every row; row j predicts token order[j-1] for j = 1..N.
  float* hm = a.head_mod.get();  // (P, 2C)
  be_->linear(hm, a.cond_silu.get(), W(p_.head_ada_w), p_.head_ada_b, P, 2 * C, C);
  be_->layernorm_modulate(a.hf.get(), a.x_fin.get(), nullptr, nullptr, hm + C, hm, 2 * C, d_map, R, C, kEps);
  be_->linear(a.logits.get(), a.hf.get(), W(p_.lm_head_w), p_.lm_head_b, R, V, C);

  RarTrainStats stats;
  if (bt.return_logits) {
    stats.logits.resize(static_cast<size_t>(B) * (N + 1) * V);
    be_->synchronize();
    for (int b = 0; b < B; b++)
      be_->download(stats.logits.data() + static_cast<size_t>(b) * (N + 1) * V,
                    a.logits.get() + (static_cast<int64_t>(b) * T + 1) * V, static_cast<size_t>(N + 1) * V * 4);
  }

  // ================= loss =================
  const float gscale = bt.loss_scale / static_cast<float>(static_cast<int64_t>(B) * N);
  float* dlogits = a.logits.get();  // in place
  be_->cross_entropy(dlogits, a.losses.get(), a.correct.get(), a.logits.get(), d_tgt, R, V, gscale);
  {
    std::vector<float> losses(R);
    std::vector<int32_t> correct(R);
    be_->synchronize();
    be_->download(losses.data(), a.losses.get(), R * 4);
    be_->download(correct.data(), a.correct.get(), R * 4);
    double s = 0;
    int64_t c = 0;
    for (int64_t r = 0; r < R; r++) {
      s += losses[r];
      c += correct[r];
    }
    stats.loss = s / (static_cast<double>(B) * N);
    stats.correct = c;
    stats.count = static_cast<int64_t>(B) * N;
  }

  timer.mark("head_fwd+loss");
  // ================= backward =================
  if (bt.zero_grad) be_->fill(grads_, 0.f, total_);
  float* dx = a.dx.get();        // (R, C) gradient of the residual stream
  float* dcond = a.dcond.get();  // (P, C) gradient of cond_silu, then of cond_pre
  be_->fill(dcond, 0.f, P * C);
  // lm_head
  be_->linear_backward(a.dc.get(), g_.lm_head_w, g_.lm_head_b, dlogits, a.hf.get(), p_.lm_head_w, R, V, C, false);
  // final adaLN-modulated LayerNorm (no affine): dx, d(shift) at +C, d(scale) at +0
  float* dhm = a.dmod.get();  // (P, 2C) reusing the block modulation scratch
  be_->fill(dhm, 0.f, P * 2 * C);
  be_->fill(dx, 0.f, R * C);
  be_->layernorm_modulate_backward(dx, nullptr, nullptr, dhm + C, dhm, a.dc.get(), a.x_fin.get(), nullptr, nullptr,
                                   hm, 2 * C, d_map, R, C, kEps);
  be_->linear_backward(dcond, g_.head_ada_w, g_.head_ada_b, dhm, a.cond_silu.get(), p_.head_ada_w, P, 2 * C, C, true);

  const int stages = cfg_.depth + 2;  // grad_stages()
  auto final_now = [&](int done) {
    if (bt.on_grads_final) bt.on_grads_final(done, stages);
  };
  final_now(1);  // the head
  timer.mark("head_bwd");
  for (int l = cfg_.depth - 1; l >= 0; l--) {
    const BlockP& w = p_.blocks[l];
    const BlockP& gw = g_.blocks[l];
    Acts::Block& s = a.blocks[l];
    const float* mod = s.mod.get();
    float* dmod = a.dmod.get();
    const int64_t st = 6 * C;
    be_->fill(dmod, 0.f, P * 6 * C);
    // x_out = x_mid + gate2 * fc2  ->  d fc2 = gate2 * dx ; d gate2 += dx * fc2 ; dx flows to x_mid
    float* dc = a.dc.get();
    be_->gated_residual_backward(dc, dmod + 5 * C, dx, s.fc2.get(), mod + 5 * C, st, d_map, R, C);
    be_->dropout(dc, R * C, pd, seed, site(l, kSiteFc2));
    float* di = a.di.get();
    be_->linear_backward(di, gw.fc2_w, gw.fc2_b, dc, s.act.get(), w.fc2_w, R, C, I, false);
    be_->dropout(di, R * I, pd, seed, site(l, kSiteAct));
    be_->gelu_backward(di, di, s.fc1.get(), R * I);
    be_->linear_backward(dc, gw.fc1_w, gw.fc1_b, di, s.h2.get(), w.fc1_w, R, I, C, false);
    be_->layernorm_modulate_backward(dx, gw.norm2_w, gw.norm2_b, dmod + 3 * C, dmod + 4 * C, dc, s.x_mid.get(),
                                     w.norm2_w, w.norm2_b, mod + 4 * C, st, d_map, R, C, kEps);
    // x_mid = x_in + gate1 * proj
    be_->gated_residual_backward(dc, dmod + 2 * C, dx, s.proj.get(), mod + 2 * C, st, d_map, R, C);
    be_->dropout(dc, R * C, pd, seed, site(l, kSiteProj));
    float* datt = a.datt.get();
    be_->linear_backward(datt, gw.proj_w, gw.proj_b, dc, s.att.get(), w.proj_w, R, C, C, false);
    timer.mark("mlp_bwd");
    float* dqkv = a.dqkv.get();
    be_->attention_backward(dqkv, gw.q_norm_w, gw.q_norm_b, gw.k_norm_w, gw.k_norm_b, datt, s.att.get(), s.lse.get(),
                            s.qkv.get(), w.q_norm_w, w.q_norm_b, w.k_norm_w, w.k_norm_b, B, T, H, D, kEps, pa, seed,
                            site(l, kSiteAttn));
    timer.mark("attn_bwd");
    be_->linear_backward(dc, gw.qkv_w, gw.qkv_b, dqkv, s.h1.get(), w.qkv_w, R, 3 * C, C, false);
    be_->layernorm_modulate_backward(dx, gw.norm1_w, gw.norm1_b, dmod, dmod + C, dc, s.x_in.get(), w.norm1_w,
                                     w.norm1_b, mod + C, st, d_map, R, C, kEps);
    // mod = adaLN(cond_silu)
    be_->linear_backward(dcond, gw.ada_w, gw.ada_b, dmod, a.cond_silu.get(), w.ada_w, P, 6 * C, C, true);
    timer.mark("qkv+ada_bwd");
    final_now(1 + cfg_.depth - l);  // block l
  }
  // cond_silu = SiLU(cond_pre); cond_pre = embeddings[c_u] + timesteps_embeddings[j]
  be_->silu_backward(dcond, dcond, a.cond_pre.get(), P * C);
  be_->embedding_backward(g_.embeddings, dcond, d_pc, P, C);
  be_->embedding_backward(g_.timesteps_embeddings, dcond, d_pp, P, C);
  // x0 gathers
  be_->embedding_backward(g_.embeddings, dx, d_tok, R, C);
  be_->embedding_backward(g_.cls_token, dx, d_cls, R, C);
  be_->embedding_backward(g_.pos_embed, dx, d_pos, R, C);
  be_->embedding_backward(g_.target_aware_pos_embed, dx, d_ta, R, C);
  timer.mark("emb_bwd");
  final_now(stages);  // the shared tables
  be_->synchronize();
  return stats;
}

std::vector<RarTrainer::Ranges> RarTrainer::grad_stages() const {
  std::vector<Ranges> st(cfg_.depth + 2);
  for (size_t i = 0; i < table_.size(); i++) {
    const ParamSpec& s = table_[i];
    const ParamInfo& p = infos_[i];
    const auto id = static_cast<RarParam>(s.id);
    int stage = cfg_.depth + 1;  // shared tables
    if (s.block >= 0)
      stage = cfg_.depth - s.block;
    else if (id == RarParam::HeadAdaW || id == RarParam::HeadAdaB || id == RarParam::LmHeadW || id == RarParam::LmHeadB)
      stage = 0;
    Ranges& r = st[stage];
    if (!r.empty() && r.back().second == p.offset) r.back().second = p.offset + p.numel;
    else r.push_back({p.offset, p.offset + p.numel});
  }
  return st;
}

double RarTrainer::optimizer_step(const AdamWOptions& o) {
  std::vector<AdamWTensor> ts;
  ts.reserve(infos_.size());
  for (const ParamInfo& p : infos_)
    ts.push_back({params_ + p.offset, grads_ + p.offset, m_ + p.offset, v_ + p.offset, p.numel, p.decayed});
  double norm = adamw_step(be_, ts, grads_, total_, o);
  be_->synchronize();
  return norm;
}

}  // namespace rargen
