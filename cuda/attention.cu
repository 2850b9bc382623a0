// Causal self-attention with q/k LayerNorm over the head dim, for any D in 1..128 (48,
// 80, 88 included): the inference op (prefill and KV-cache decode, Backend::attention)
// and the training ops (attention_train_forward, attention_backward) of one op family,
// on ONE q/k LayerNorm prologue and ONE flash forward kernel.
//
// Row b (of B) has its own first position pos[b] and cache slot slot[b] (device int32
// arrays read when the kernels run); kcache/vcache are (slots, H, Tcache, D). Training
// has no cache: its normalised k and v go to scratch buffers of the same layout with
// slots = B, Tcache = T, slot[b] = b and pos[b] = 0 (template flag kCache = false), which
// are also the (B*H, T, D) per-head copies its backward reads.
// 1. prologue: one warp per (b, new position i, head h) normalises q (to a scratch
//    buffer (B, H, Tn, D)) and k (into slot[b]'s cache at pos[b]+i), and copies v;
//    optionally it saves the LayerNorm statistics (the backward's recomputation).
//    Statistics are two-pass in double (warp_mean_rstd, as the CPU reference).
// 2a. Tn > 1 (training, prefill): flash-style tiled attention in fp32: a block owns 32
//    queries of one (b, h), walks 32-key tiles of the cache up to the causal limit with
//    an online softmax (the denominator in double), never materialising the (T x T)
//    scores. 256 threads: 8 per query row, each holding D/8 accumulators. Training adds
//    the saved log-sum-exp (kLse) and dropout on the probabilities (kDrop; element
//    (b, h, i, j) draws dropout_bits index ((b*H + h)*T + i)*T + j; the denominator sums
//    the undropped probabilities).
// 2b. Tn == 1 (the decode step): flash-decoding. The cache length is split into S chunks
//    (S chosen from Tcache and the number of (b, h) pairs so the GPU is full even for a
//    small batch); each block scores its chunk (8 lanes per key, float4 when D % 4 == 0),
//    softmaxes it locally and writes (max, sum, unnormalised output); a combine kernel
//    merges the S partials. With S == 1 the block writes the output directly.
// 3. backward (training): probabilities recomputed from the saved log-sum-exp with the
//    forward's score arithmetic (q pre-scaled by 1/sqrt(D)), dropout masks from
//    dropout_bits, never a stored (T, T) matrix; then the q/k LayerNorm backward.
//    Deterministic like the CPU: no atomics; q/k-norm affine gradients are per-(batch,
//    head) partials reduced in order by a second kernel.
//
// Arithmetic is fp32. The cache is fp32 or bf16/f16 (template parameter KV): values are
// rounded when the prologue stores them and widened when loaded, halving the decode
// step's dominant memory traffic. Positions and slots come from device memory, so the
// same launches serve every step of a captured CUDA graph; grid sizes depend only on
// B, Tn, H, D and Tcache.
#include <algorithm>
#include <cmath>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kMaxD = 128;

// ---- 1. prologue ----

// y[d] = ((x[d] - mean) * rstd) * w[d] + b[d] (w, b may be null: 1, 0), d < D, by a warp.
template <typename T>
__device__ __forceinline__ void head_layernorm(T* dst, const float* src, const float* w, const float* b, int D,
                                               float eps, int lane, float* stats) {
  float mean, rstd;
  warp_mean_rstd<double>(src, D, eps, lane, mean, rstd);
  for (int d = lane; d < D; d += 32) {
    const float xh = (src[d] - mean) * rstd;
    dst[d] = from_float<T>(xh * (w ? w[d] : 1.f) + (b ? b[d] : 0.f));
  }
  if (stats && lane == 0) {
    stats[0] = mean;
    stats[1] = rstd;
  }
}

// kCache: positions and slots from pos_dev/slot_dev (the inference op); otherwise pos 0,
// slot b, Tcache = Tn (training). qstats/kstats (2 floats per (b, h, i) in (b*H + h)*Tn + i
// order) may be null.
template <typename KV, bool kCache>
__global__ void attn_prologue_kernel(float* qn, KV* kcache, KV* vcache, float* qstats, float* kstats,
                                     const float* qkv, const float* qw, const float* qb, const float* kw,
                                     const float* kb, int B, int Tn, const int32_t* pos_dev, const int32_t* slot_dev,
                                     int slots, int Tcache, int H, int D, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= static_cast<int64_t>(B) * Tn * H) return;  // warp-uniform
  const int h = static_cast<int>(row % H);
  const int64_t bt = row / H;  // b * Tn + i
  const int i = static_cast<int>(bt % Tn);
  const int b = static_cast<int>(bt / Tn);
  const int p0 = kCache ? pos_dev[b] : 0, sl = kCache ? slot_dev[b] : b;
  const int C = H * D;
  const float* src = qkv + bt * 3 * C + h * D;
  const int64_t hrow = (static_cast<int64_t>(b) * H + h) * Tn + i;  // (b, h, i)
  head_layernorm(qn + hrow * D, src, qw, qb, D, eps, lane, qstats ? qstats + 2 * hrow : nullptr);
  const int pos = p0 + i;
  if (pos < 0 || pos >= Tcache || sl < 0 || sl >= slots) return;  // a bad device-side position or slot
  const int64_t dst = ((static_cast<int64_t>(sl) * H + h) * Tcache + pos) * D;
  head_layernorm(kcache + dst, src + C, kw, kb, D, eps, lane, kstats ? kstats + 2 * hrow : nullptr);
  for (int d = lane; d < D; d += 32) vcache[dst + d] = from_float<KV>(src[2 * C + d]);
}

constexpr int kPrologueWarps = 8;

template <typename KV, bool kCache>
void launch_prologue(float* qn, KV* kcache, KV* vcache, float* qstats, float* kstats, const float* qkv,
                     const float* qw, const float* qb, const float* kw, const float* kb, int B, int Tn,
                     const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D, float eps,
                     cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(B) * H * Tn;
  attn_prologue_kernel<KV, kCache><<<static_cast<unsigned>(ceil_div(rows, kPrologueWarps)), 32 * kPrologueWarps, 0,
                                     stream>>>(qn, kcache, vcache, qstats, kstats, qkv, qw, qb, kw, kb, B, Tn, pos,
                                               slot, slots, Tcache, H, D, eps);
  CUDA_LAUNCH_CHECK();
}

// ---- 2a. prefill / training: tiled flash attention ----

constexpr int kFaBQ = 32, kFaBK = 32, kFaThreads = 256;

__host__ __device__ inline size_t prefill_smem_floats(int D) {
  return static_cast<size_t>(kFaBQ) * (D + 1) + static_cast<size_t>(kFaBK) * (D + 1) + static_cast<size_t>(kFaBK) * D +
         static_cast<size_t>(kFaBQ) * (kFaBK + 1);
}

// Dropout of the training forward (kDrop): keep element index iff dropout_bits >= threshold.
struct FlashDrop {
  uint32_t threshold = 0;
  float keep_scale = 1.f;
  uint64_t seed = 0, site = 0;
};

template <typename KV, bool kCache, bool kLse, bool kDrop>
__global__ void __launch_bounds__(kFaThreads)
    attn_flash_kernel(float* out, float* lse, const float* qn, const KV* kcache, const KV* vcache, int B, int Tn,
                      const int32_t* pos_dev, const int32_t* slot_dev, int slots, int Tcache, int H, int D,
                      float scale, FlashDrop drop) {
  extern __shared__ float sm[];
  const int ldk = D + 1;
  float* Qs = sm;                  // [BQ][D+1] queries pre-scaled by 1/sqrt(D)
  float* Ks = Qs + kFaBQ * ldk;    // [BK][D+1]
  float* Vs = Ks + kFaBK * ldk;    // [BK][D]
  float* Ps = Vs + kFaBK * D;      // [BQ][BK+1]
  const int bh = blockIdx.x;
  const int b = bh / H, h = bh % H;
  const int q0 = blockIdx.y * kFaBQ;
  const int p0 = kCache ? pos_dev[b] : 0;
  // a bad slot reads a wrong row, never out of bounds
  const int sl = kCache ? min(max(slot_dev[b], 0), slots - 1) : b;
  const int tid = threadIdx.x, qi = tid >> 3, l8 = tid & 7;
  const float* qsrc = qn + static_cast<int64_t>(bh) * Tn * D;
  const KV* kb = kcache + (static_cast<int64_t>(sl) * H + h) * Tcache * D;
  const KV* vb = vcache + (static_cast<int64_t>(sl) * H + h) * Tcache * D;

  for (int idx = tid; idx < kFaBQ * D; idx += kFaThreads) {
    int r = idx / D, d = idx - r * D;
    int i = q0 + r;
    Qs[r * ldk + d] = i < Tn ? qsrc[static_cast<int64_t>(i) * D + d] * scale : 0.f;
  }
  const int qg = q0 + qi;                       // this row's query index in 0..Tn-1 (or padding)
  const int qlim = p0 + min(qg, Tn - 1);        // last key it sees (padding rows: a valid limit)
  const int kend = min(p0 + min(q0 + kFaBQ, Tn), Tcache);  // keys needed by the tile: 0..kend-1
  // dropout index of (b, h, qg, j) is dbase + j (training: p0 = 0, Tcache = Tn = T)
  const uint64_t dbase = (static_cast<uint64_t>(bh) * Tn + min(qg, Tn - 1)) * Tn;

  float m = -INFINITY;
  double l = 0;  // the softmax denominator, in double across key tiles (as the CPU's)
  float acc[16];
#pragma unroll
  for (int e = 0; e < 16; e++) acc[e] = 0.f;

  for (int k0 = 0; k0 < kend; k0 += kFaBK) {
    __syncthreads();  // Q stored (first tile) / previous K, V tile consumed
    for (int idx = tid; idx < kFaBK * D; idx += kFaThreads) {
      int r = idx / D, d = idx - r * D;
      int j = k0 + r;
      bool ok = j < kend;  // beyond: zeros, so stale cache rows (maybe NaN) never meet p = 0
      int64_t g = static_cast<int64_t>(j) * D + d;
      Ks[r * ldk + d] = ok ? to_float(kb[g]) : 0.f;
      Vs[r * D + d] = ok ? to_float(vb[g]) : 0.f;
    }
    __syncthreads();

    float s[4];
    float tmax = -INFINITY;
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int kj = l8 + 8 * u;
      const float* qr = Qs + qi * ldk;
      const float* kr = Ks + kj * ldk;
      float dot = 0.f;
      for (int d = 0; d < D; d++) dot = fmaf(qr[d], kr[d], dot);
      s[u] = (k0 + kj <= qlim) ? dot : -INFINITY;
      tmax = fmaxf(tmax, s[u]);
    }
    // the 8 lanes of a row are consecutive lanes of one warp
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 4));
    // key 0 is visible to every row, so after the first tile mnew is finite
    const float mnew = fmaxf(m, tmax);
    const float corr = expf(m - mnew);  // m = -inf on the first tile: 0
    float rs = 0.f;
#pragma unroll
    for (int u = 0; u < 4; u++) {
      const int kj = l8 + 8 * u;
      float pr = expf(s[u] - mnew);
      rs += pr;
      if constexpr (kDrop)
        if (k0 + kj <= qlim)
          pr *= dropout_bits_dev(drop.seed, drop.site, dbase + k0 + kj) >= drop.threshold ? drop.keep_scale : 0.f;
      Ps[qi * (kFaBK + 1) + kj] = pr;
    }
    rs += __shfl_xor_sync(0xffffffffu, rs, 1);
    rs += __shfl_xor_sync(0xffffffffu, rs, 2);
    rs += __shfl_xor_sync(0xffffffffu, rs, 4);
    l = l * corr + rs;  // corr, rs: fp32
    m = mnew;
#pragma unroll
    for (int e = 0; e < 16; e++) acc[e] *= corr;
    __syncwarp();  // Ps row written by this warp's lanes, read below by the same warp
    for (int kj = 0; kj < kFaBK; kj++) {
      const float pr = Ps[qi * (kFaBK + 1) + kj];
      const float* vr = Vs + kj * D;
#pragma unroll
      for (int e = 0; e < 16; e++) {
        int d = l8 + 8 * e;
        if (d < D) acc[e] = fmaf(pr, vr[d], acc[e]);
      }
    }
  }
  if (qg < Tn) {
    const int C = H * D;
    float* o = out + (static_cast<int64_t>(b) * Tn + qg) * C + h * D;
    const float inv = static_cast<float>(1.0 / l);
#pragma unroll
    for (int e = 0; e < 16; e++) {
      int d = l8 + 8 * e;
      if (d < D) o[d] = acc[e] * inv;
    }
    if constexpr (kLse)
      if (l8 == 0) lse[static_cast<int64_t>(bh) * Tn + qg] = m + static_cast<float>(log(l));
  }
}

template <typename KV, bool kCache, bool kLse, bool kDrop>
void launch_flash(float* out, float* lse, const float* qn, const KV* kcache, const KV* vcache, int B, int Tn,
                  const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D, FlashDrop drop,
                  cudaStream_t stream) {
  const float scale = 1.f / sqrtf(static_cast<float>(D));
  dim3 grid(static_cast<unsigned>(static_cast<int64_t>(B) * H), static_cast<unsigned>(ceil_div(Tn, kFaBQ)));
  const size_t smem = prefill_smem_floats(D) * sizeof(float);
  attn_flash_kernel<KV, kCache, kLse, kDrop><<<grid, kFaThreads, smem, stream>>>(
      out, lse, qn, kcache, vcache, B, Tn, pos, slot, slots, Tcache, H, D, scale, drop);
  CUDA_LAUNCH_CHECK();
}

template <typename KV, bool kCache, bool kLse, bool kDrop>
void init_flash() {
  CUDA_CHECK(cudaFuncSetAttribute(attn_flash_kernel<KV, kCache, kLse, kDrop>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(prefill_smem_floats(kMaxD) * sizeof(float))));
}

// ---- 2b. decode: flash-decoding over the cache length ----

constexpr int kDecThreads = 128;
constexpr int kDecWarps = kDecThreads / 32;
constexpr int kDecMaxChunk = 4096;

// 8 lanes' share of q . k for one key row: float4 loads (fp32 cache, D % 4 == 0), 8-wide
// 16-byte loads (16-bit cache, D % 8 == 0), or scalar.
template <typename KV, bool VEC>
__device__ __forceinline__ float partial_dot(const float* qs, const KV* kr, int D, int l8) {
  float dot = 0.f;
  if constexpr (VEC && sizeof(KV) == 4) {
    const float4* k4 = reinterpret_cast<const float4*>(kr);
    const float4* q4 = reinterpret_cast<const float4*>(qs);
    for (int d4 = l8; d4 < D / 4; d4 += 8) {
      float4 kv = __ldg(k4 + d4), qv = q4[d4];
      dot = fmaf(qv.x, kv.x, dot);
      dot = fmaf(qv.y, kv.y, dot);
      dot = fmaf(qv.z, kv.z, dot);
      dot = fmaf(qv.w, kv.w, dot);
    }
  } else if constexpr (VEC) {
    for (int c = l8; c < D / 8; c += 8) {
      float kv[8];
      load8_aligned(kr + 8 * c, kv);
#pragma unroll
      for (int e = 0; e < 8; e++) dot = fmaf(qs[8 * c + e], kv[e], dot);
    }
  } else {
    for (int d = l8; d < D; d += 8) dot = fmaf(qs[d], to_float(kr[d]), dot);
  }
  return dot;
}

template <typename KV, bool VEC>
__global__ void __launch_bounds__(kDecThreads)
    attn_decode_kernel(float* out, float* part, const float* qn, const KV* kcache, const KV* vcache, int H, int D,
                       int Tcache, const int32_t* pos_dev, const int32_t* slot_dev, int slots, int S, int chunk,
                       float scale) {
  extern __shared__ float sm[];
  float* qs = sm;                 // [kMaxD]
  float* red = qs + kMaxD;        // [32]     block reductions
  float* acc_s = red + 32;        // [kDecWarps][kMaxD]
  float* sc = acc_s + kDecWarps * kMaxD;  // [chunk] scores, then probabilities
  const int bh = blockIdx.x, split = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bq = bh / H, hq = bh % H;
  const int p0 = pos_dev[bq];
  const int sl = min(max(slot_dev[bq], 0), slots - 1);  // a bad slot reads a wrong row, never out of bounds
  const int len = min(p0 + 1, Tcache);  // keys 0..p0
  const int lo = split * chunk;
  const int hi = min(lo + chunk, len);
  const int n = max(hi - lo, 0);
  const KV* kb = kcache + (static_cast<int64_t>(sl) * H + hq) * Tcache * D;
  const KV* vb = vcache + (static_cast<int64_t>(sl) * H + hq) * Tcache * D;

  for (int d = tid; d < D; d += kDecThreads) qs[d] = qn[static_cast<int64_t>(bh) * D + d];
  __syncthreads();

  // scores: 8 lanes per key, 4 keys per warp per step; the trip count is warp-uniform
  const int l8 = lane & 7, sub = lane >> 3;
  for (int jb = warp * 4; jb < n; jb += kDecWarps * 4) {
    const int jj = jb + sub;
    float dot = 0.f;
    if (jj < n) dot = partial_dot<KV, VEC>(qs, kb + static_cast<int64_t>(lo + jj) * D, D, l8);
    dot += __shfl_xor_sync(0xffffffffu, dot, 1);
    dot += __shfl_xor_sync(0xffffffffu, dot, 2);
    dot += __shfl_xor_sync(0xffffffffu, dot, 4);
    if (jj < n && l8 == 0) sc[jj] = dot * scale;
  }
  __syncthreads();

  float mx = -INFINITY;
  for (int j = tid; j < n; j += kDecThreads) mx = fmaxf(mx, sc[j]);
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int j = tid; j < n; j += kDecThreads) {
    float pr = expf(sc[j] - mx);
    sc[j] = pr;
    sum += pr;
  }
  sum = block_sum(sum, red);  // its barriers also publish sc

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int j = warp; j < n; j += kDecWarps) {
    const float pr = sc[j];
    const KV* vr = vb + static_cast<int64_t>(lo + j) * D;
#pragma unroll
    for (int e = 0; e < 4; e++) {
      int d = lane + 32 * e;
      if (d < D) acc[e] = fmaf(pr, to_float(vr[d]), acc[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < 4; e++) {
    int d = lane + 32 * e;
    if (d < D) acc_s[warp * kMaxD + d] = acc[e];
  }
  __syncthreads();
  for (int d = tid; d < D; d += kDecThreads) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kDecWarps; w++) o += acc_s[w * kMaxD + d];
    if (S == 1) {
      const int b = bh / H, h = bh % H;
      out[static_cast<int64_t>(b) * H * D + h * D + d] = o * (1.f / sum);
    } else {
      float* pp = part + (static_cast<int64_t>(bh) * S + split) * (D + 2);
      pp[d] = o;
      if (d == 0) {
        pp[D] = mx;      // -inf for an empty chunk
        pp[D + 1] = sum;  // 0 for an empty chunk
      }
    }
  }
}

__global__ void attn_decode_combine_kernel(float* out, const float* part, int H, int D, int S) {
  const int bh = blockIdx.x;
  const float* pp = part + static_cast<int64_t>(bh) * S * (D + 2);
  float M = -INFINITY;
  for (int s = 0; s < S; s++) M = fmaxf(M, pp[s * (D + 2) + D]);  // chunk 0 is never empty
  float L = 0.f;
  for (int s = 0; s < S; s++) {
    float ls = pp[s * (D + 2) + D + 1];
    if (ls > 0.f) L += ls * expf(pp[s * (D + 2) + D] - M);
  }
  const int b = bh / H, h = bh % H;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < S; s++) {
      float ls = pp[s * (D + 2) + D + 1];
      if (ls > 0.f) o += pp[s * (D + 2) + d] * expf(pp[s * (D + 2) + D] - M);
    }
    out[static_cast<int64_t>(b) * H * D + h * D + d] = o / L;
  }
}

template <typename KV>
void init_for() {
  init_flash<KV, true, false, false>();
  const int dec_max = static_cast<int>((kMaxD + 32 + kDecWarps * kMaxD + kDecMaxChunk) * sizeof(float));
  CUDA_CHECK(cudaFuncSetAttribute(attn_decode_kernel<KV, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, dec_max));
  CUDA_CHECK(cudaFuncSetAttribute(attn_decode_kernel<KV, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, dec_max));
}

template <typename KV>
void launch(float* out, KV* kcache, KV* vcache, const float* qkv, const float* q_norm_w, const float* q_norm_b,
            const float* k_norm_w, const float* k_norm_b, int B, int Tn, const int32_t* pos, const int32_t* slot,
            int slots, int Tcache, int H, int D, float eps, int num_sms, ScratchProvider& sp, cudaStream_t stream) {
  const int64_t BH = static_cast<int64_t>(B) * H;
  const int64_t rows = BH * Tn;
  float* qn = static_cast<float*>(sp.scratch(kScratchAttnQ, static_cast<size_t>(rows) * D * sizeof(float)));
  launch_prologue<KV, true>(qn, kcache, vcache, nullptr, nullptr, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, Tn,
                            pos, slot, slots, Tcache, H, D, eps, stream);
  if (Tn > 1) {
    launch_flash<KV, true, false, false>(out, nullptr, qn, kcache, vcache, B, Tn, pos, slot, slots, Tcache, H, D,
                                         FlashDrop{}, stream);
    return;
  }
  const float scale = 1.f / sqrtf(static_cast<float>(D));
  // Split the cache so that about two blocks per SM run, but keep chunks >= 32 keys;
  // chunks never exceed kDecMaxChunk (shared memory). Depends on Tcache only, not pos.
  int64_t S = 1;
  const int64_t want = 2LL * (num_sms > 0 ? num_sms : 108);
  if (BH < want) S = ceil_div(want, BH);
  S = std::min<int64_t>(S, std::max<int64_t>(1, Tcache / 32));
  S = std::max<int64_t>(S, ceil_div(Tcache, kDecMaxChunk));
  const int chunk = static_cast<int>(ceil_div(Tcache, S));
  S = ceil_div(Tcache, chunk);
  float* part = nullptr;
  if (S > 1)
    part = static_cast<float*>(sp.scratch(kScratchAttnPart, static_cast<size_t>(BH * S) * (D + 2) * sizeof(float)));
  const size_t smem = (kMaxD + 32 + kDecWarps * kMaxD + static_cast<size_t>(chunk)) * sizeof(float);
  dim3 grid(static_cast<unsigned>(BH), static_cast<unsigned>(S));
  // 16-byte loads of key rows: 4 floats or 8 half-size values per load
  const bool vec = D % (16 / static_cast<int>(sizeof(KV))) == 0 && aligned16(kcache) && aligned16(vcache);
  if (vec) {
    attn_decode_kernel<KV, true><<<grid, kDecThreads, smem, stream>>>(out, part, qn, kcache, vcache, H, D, Tcache, pos,
                                                                      slot, slots, static_cast<int>(S), chunk, scale);
  } else {
    attn_decode_kernel<KV, false><<<grid, kDecThreads, smem, stream>>>(out, part, qn, kcache, vcache, H, D, Tcache,
                                                                       pos, slot, slots, static_cast<int>(S), chunk,
                                                                       scale);
  }
  CUDA_LAUNCH_CHECK();
  if (S > 1) {
    attn_decode_combine_kernel<<<static_cast<unsigned>(BH), 128, 0, stream>>>(out, part, H, D, static_cast<int>(S));
    CUDA_LAUNCH_CHECK();
  }
}

// ---- 3. backward (training) ----

constexpr int kThreads = 256;  // the backward kernels' block size (>= D)

// What both backward passes read, by value. Layout: (B*H, T, D) per-head copies (bh =
// b*H + h) qn, kn, vv (the prologue's, kCache = false); dout (B, T, H*D); lse, Dbuf (B*H, T).
struct PdS {
  float pt, ds;  // p~ (the dropped probability) and ds of one (i, j)
};
struct BwdArgs {
  const float *dout, *lse, *qn, *kn, *vv;
  float* Dbuf;  // Di = dO_i . O_i: written by the dQ pass, read by the dK/dV pass
  int H, T, D;
  float sm, keep_scale;
  uint32_t threshold;
  bool drop;
  uint64_t seed, site;

  __device__ const float* dout_row(int64_t bh, int i) const {
    return dout + (bh / H * T + i) * static_cast<int64_t>(H) * D + bh % H * D;
  }
  // The recomputation of element (bh, i, j): s = sum_d (q_i[d] * qmul) k_j[d] in d order
  // (the dQ pass passes q already scaled by 1/sqrt(D), qmul 1; the dK/dV pass scales on
  // the fly, qmul 1/sqrt(D): both are the flash forward's scores bit for bit), p =
  // exp(s - lse_i), the dropout mask of index ((bh*T) + i)*T + j.
  __device__ __forceinline__ PdS elem(const float* qi, float qmul, const float* kj, const float* doi, const float* vj,
                                      float Di, int64_t bh, int i, int j) const {
    float s = 0.f, dp = 0.f;
    for (int d = 0; d < D; d++) {
      s = fmaf(qi[d] * qmul, kj[d], s);
      dp = fmaf(doi[d], vj[d], dp);
    }
    const float p = expf(s - lse[bh * T + i]);
    float mask = 1.f;
    if (drop) {
      mask = dropout_bits_dev(seed, site, (static_cast<uint64_t>(bh) * T + i) * T + j) >= threshold ? keep_scale : 0.f;
      dp *= mask;
    }
    PdS r;
    r.pt = drop ? p * mask : p;
    r.ds = p * (dp - Di) * sm;
    return r;
  }
};

// dQ, one block per (bh, i): Di = dO_i . O_i (saved for the dK/dV pass), then per chunk
// of blockDim keys the ds_j into shared memory, then dq_i[d] = sum_j ds_j k_j[d] in j order.
__global__ void attn_bwd_dq_kernel(float* __restrict__ dqn, const float* __restrict__ out, const BwdArgs a) {
  __shared__ float qs[kMaxD], dos[kMaxD];
  __shared__ float dss[kThreads];
  __shared__ float redf[32];
  const int T = a.T, D = a.D;
  const int64_t bh = blockIdx.x / T;
  const int i = static_cast<int>(blockIdx.x - bh * T);
  const float* doi = a.dout_row(bh, i);
  const float* oi = out + (doi - a.dout);
  float di = 0.f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    qs[d] = a.qn[(bh * T + i) * D + d] * a.sm;
    dos[d] = doi[d];
    di = fmaf(doi[d], oi[d], di);
  }
  const float Di = block_sum(di, redf);  // contains __syncthreads: qs/dos are visible after it
  if (threadIdx.x == 0) a.Dbuf[bh * T + i] = Di;
  float acc = 0.f;  // thread d < D
  for (int j0 = 0; j0 <= i; j0 += blockDim.x) {
    const int j = j0 + threadIdx.x;
    dss[threadIdx.x] = j <= i ? a.elem(qs, 1.f, a.kn + (bh * T + j) * D, dos, a.vv + (bh * T + j) * D, Di, bh, i, j).ds
                              : 0.f;
    __syncthreads();
    const int cnt = min(static_cast<int>(blockDim.x), i + 1 - j0);
    if (threadIdx.x < D)
      for (int t = 0; t < cnt; t++) acc = fmaf(dss[t], a.kn[(bh * T + j0 + t) * D + threadIdx.x], acc);
    __syncthreads();
  }
  if (threadIdx.x < D) dqn[(bh * T + i) * D + threadIdx.x] = acc;
}

// dK/dV, one block per (bh, j): over queries i >= j in chunks, ds_ij and p~_ij into
// shared memory, then dk_j[d] = sum_i ds_ij q_i[d], dv_j[d] = sum_i p~_ij dO_i[d] in i order.
__global__ void attn_bwd_dkv_kernel(float* __restrict__ dkn, float* __restrict__ dvv, const BwdArgs a) {
  __shared__ float ks[kMaxD], vs[kMaxD];
  __shared__ float dss[kThreads], pts[kThreads];
  const int T = a.T, D = a.D;
  const int64_t bh = blockIdx.x / T;
  const int j = static_cast<int>(blockIdx.x - bh * T);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    ks[d] = a.kn[(bh * T + j) * D + d];
    vs[d] = a.vv[(bh * T + j) * D + d];
  }
  __syncthreads();
  float dk = 0.f, dv = 0.f;
  for (int i0 = j; i0 < T; i0 += blockDim.x) {
    const int i = i0 + threadIdx.x;
    PdS e{0.f, 0.f};
    if (i < T) e = a.elem(a.qn + (bh * T + i) * D, a.sm, ks, a.dout_row(bh, i), vs, a.Dbuf[bh * T + i], bh, i, j);
    dss[threadIdx.x] = e.ds;
    pts[threadIdx.x] = e.pt;
    __syncthreads();
    const int cnt = min(static_cast<int>(blockDim.x), T - i0);
    if (threadIdx.x < D)
      for (int t = 0; t < cnt; t++) {
        const int ii = i0 + t;
        dk = fmaf(dss[t], a.qn[(bh * T + ii) * D + threadIdx.x], dk);
        dv = fmaf(pts[t], a.dout_row(bh, ii)[threadIdx.x], dv);
      }
    __syncthreads();
  }
  if (threadIdx.x < D) {
    dkn[(bh * T + j) * D + threadIdx.x] = dk;
    dvv[(bh * T + j) * D + threadIdx.x] = dv;
  }
}

// LayerNorm backward over D for q and k (one warp per (bh, t)), v passes through.
__global__ void attn_ln_bwd_kernel(float* __restrict__ dqkv, const float* __restrict__ dqn,
                                   const float* __restrict__ dkn, const float* __restrict__ dvv,
                                   const float* __restrict__ qstats, const float* __restrict__ kstats,
                                   const float* __restrict__ qkv, const float* __restrict__ qw,
                                   const float* __restrict__ kw, int B, int T, int H, int D) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<int64_t>(B) * H * T) return;
  const int64_t bh = row / T;
  const int t = static_cast<int>(row - bh * T);
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  const float* src_row = qkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
  float* drow = dqkv + (static_cast<int64_t>(b) * T + t) * 3 * C;
  for (int which = 0; which < 2; which++) {
    const float* src = src_row + which * C + h * D;
    const float* dn = (which == 0 ? dqn : dkn) + row * D;
    const float* w = which == 0 ? qw : kw;
    const float* st = which == 0 ? qstats : kstats;
    const float mean = st[2 * row], rstd = st[2 * row + 1];
    double s1 = 0, s2 = 0;
    for (int d = lane; d < D; d += 32) {
      const float xh = (src[d] - mean) * rstd;
      const float g = dn[d] * (w ? w[d] : 1.f);
      s1 += g;
      s2 += static_cast<double>(g) * xh;
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    const float m1 = static_cast<float>(s1 / D), m2 = static_cast<float>(s2 / D);
    float* dst = drow + which * C + h * D;
    for (int d = lane; d < D; d += 32) {
      const float xh = (src[d] - mean) * rstd;
      const float g = dn[d] * (w ? w[d] : 1.f);
      dst[d] = rstd * (g - m1 - xh * m2);
    }
  }
  for (int d = lane; d < D; d += 32) drow[2 * C + h * D + d] = dvv[row * D + d];
}

// Per-bh partials of the q/k norm affine gradients: part[(which*2 + wb) * BH * D + bh * D + d],
// which 0 = q, 1 = k; wb 0 = weight (sum dn * xhat), 1 = bias (sum dn), t in order.
__global__ void attn_norm_partials_kernel(float* __restrict__ part, const float* __restrict__ dqn,
                                          const float* __restrict__ dkn, const float* __restrict__ qstats,
                                          const float* __restrict__ kstats, const float* __restrict__ qkv, int B,
                                          int T, int H, int D) {
  const int64_t bh = blockIdx.x;
  const int d = threadIdx.x;
  if (d >= D) return;
  const int64_t BH = static_cast<int64_t>(B) * H;
  const int b = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
  const int C = H * D;
  for (int which = 0; which < 2; which++) {
    const float* dn = which == 0 ? dqn : dkn;
    const float* st = which == 0 ? qstats : kstats;
    float aw = 0.f, ab = 0.f;
    for (int t = 0; t < T; t++) {
      const int64_t row = bh * T + t;
      const float x = qkv[(static_cast<int64_t>(b) * T + t) * 3 * C + which * C + h * D + d];
      const float xh = (x - st[2 * row]) * st[2 * row + 1];
      const float g = dn[row * D + d];
      aw += g * xh;
      ab += g;
    }
    part[(which * 2 + 0) * BH * D + bh * D + d] = aw;
    part[(which * 2 + 1) * BH * D + bh * D + d] = ab;
  }
}

// dst_k[d] += sum_bh part[k][bh][d] (double, bh in order) for the 4 outputs (null skipped).
__global__ void attn_norm_reduce_kernel(float* dqw, float* dqb, float* dkw, float* dkb, const float* __restrict__ part,
                                        int64_t BH, int D) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= 4 * D) return;
  const int k = idx / D, d = idx - k * D;
  float* dst = k == 0 ? dqw : k == 1 ? dqb : k == 2 ? dkw : dkb;
  if (!dst) return;
  double s = 0;
  for (int64_t bh = 0; bh < BH; bh++) s += part[k * BH * D + bh * D + d];
  dst[d] += static_cast<float>(s);
}

struct AttnScratch {
  float *qn, *kn, *vv, *qstats, *kstats, *dqn, *dkn, *dvv, *Dbuf, *part;
};
AttnScratch attn_scratch(ScratchProvider& sp, int B, int T, int H, int D, bool backward) {
  const int64_t BHT = static_cast<int64_t>(B) * H * T, BHTD = BHT * D, BH = static_cast<int64_t>(B) * H;
  int64_t total = 3 * BHTD;
  if (backward) total += 3 * BHTD + 4 * BHT + BHT + 4 * BH * D;
  float* p = static_cast<float*>(sp.scratch(kScratchTrain, static_cast<size_t>(total) * sizeof(float)));
  AttnScratch s{};
  s.qn = p;
  s.kn = p + BHTD;
  s.vv = p + 2 * BHTD;
  if (backward) {
    s.dqn = p + 3 * BHTD;
    s.dkn = p + 4 * BHTD;
    s.dvv = p + 5 * BHTD;
    s.qstats = p + 6 * BHTD;
    s.kstats = s.qstats + 2 * BHT;
    s.Dbuf = s.kstats + 2 * BHT;
    s.part = s.Dbuf + BHT;
  }
  return s;
}
}  // namespace

void attention_init() {
  init_for<float>();
  init_for<__half>();
  init_for<__nv_bfloat16>();
  init_flash<float, false, true, false>();
  init_flash<float, false, true, true>();
}

void attention_forward(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv,
                       const float* q_norm_w, const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                       int B, int Tn, const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D,
                       float eps, int num_sms, ScratchProvider& sp, cudaStream_t stream) {
  switch (cache_dtype) {
    case DType::F32:
      launch(out, static_cast<float*>(kcache), static_cast<float*>(vcache), qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b,
             B, Tn, pos, slot, slots, Tcache, H, D, eps, num_sms, sp, stream);
      break;
    case DType::F16:
      launch(out, static_cast<__half*>(kcache), static_cast<__half*>(vcache), qkv, q_norm_w, q_norm_b, k_norm_w,
             k_norm_b, B, Tn, pos, slot, slots, Tcache, H, D, eps, num_sms, sp, stream);
      break;
    case DType::BF16:
      launch(out, static_cast<__nv_bfloat16*>(kcache), static_cast<__nv_bfloat16*>(vcache), qkv, q_norm_w, q_norm_b,
             k_norm_w, k_norm_b, B, Tn, pos, slot, slots, Tcache, H, D, eps, num_sms, sp, stream);
      break;
    default:
      fail("attention", "KV cache dtype must be F32, F16 or BF16");
  }
}

void train_attention_forward(float* out, float* lse, const float* qkv, const float* q_norm_w, const float* q_norm_b,
                             const float* k_norm_w, const float* k_norm_b, int B, int T, int H, int D, float eps,
                             float p_drop, uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream) {
  AttnScratch s = attn_scratch(sp, B, T, H, D, false);
  launch_prologue<float, false>(s.qn, s.kn, s.vv, nullptr, nullptr, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T,
                                nullptr, nullptr, B, T, H, D, eps, stream);
  if (p_drop > 0.f) {
    const FlashDrop drop{dropout_threshold(p_drop), 1.f / (1.f - p_drop), seed, site};
    launch_flash<float, false, true, true>(out, lse, s.qn, s.kn, s.vv, B, T, nullptr, nullptr, B, T, H, D, drop,
                                           stream);
  } else {
    launch_flash<float, false, true, false>(out, lse, s.qn, s.kn, s.vv, B, T, nullptr, nullptr, B, T, H, D, FlashDrop{},
                                            stream);
  }
}

void train_attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                              const float* dout, const float* out, const float* lse, const float* qkv,
                              const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                              const float* k_norm_b, int B, int T, int H, int D, float eps, float p_drop,
                              uint64_t seed, uint64_t site, ScratchProvider& sp, cudaStream_t stream) {
  AttnScratch s = attn_scratch(sp, B, T, H, D, true);
  const int64_t BHT = static_cast<int64_t>(B) * H * T, BH = static_cast<int64_t>(B) * H;
  launch_prologue<float, false>(s.qn, s.kn, s.vv, s.qstats, s.kstats, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B,
                                T, nullptr, nullptr, B, T, H, D, eps, stream);
  const bool drop = p_drop > 0.f;
  const BwdArgs a{dout, lse, s.qn, s.kn, s.vv, s.Dbuf, H, T, D, 1.f / std::sqrt(static_cast<float>(D)),
                  drop ? 1.f / (1.f - p_drop) : 1.f, dropout_threshold(p_drop), drop, seed, site};
  // blockDim = kThreads (>= D, the d threads of the accumulation loops)
  attn_bwd_dq_kernel<<<static_cast<unsigned>(BHT), kThreads, 0, stream>>>(s.dqn, out, a);
  CUDA_LAUNCH_CHECK();
  attn_bwd_dkv_kernel<<<static_cast<unsigned>(BHT), kThreads, 0, stream>>>(s.dkn, s.dvv, a);
  CUDA_LAUNCH_CHECK();
  const unsigned ln_blocks = static_cast<unsigned>(ceil_div(BHT, kPrologueWarps));
  attn_ln_bwd_kernel<<<ln_blocks, 32 * kPrologueWarps, 0, stream>>>(dqkv, s.dqn, s.dkn, s.dvv, s.qstats, s.kstats, qkv,
                                                                    q_norm_w, k_norm_w, B, T, H, D);
  CUDA_LAUNCH_CHECK();
  if (dq_norm_w || dq_norm_b || dk_norm_w || dk_norm_b) {
    attn_norm_partials_kernel<<<static_cast<unsigned>(BH), kMaxD, 0, stream>>>(s.part, s.dqn, s.dkn, s.qstats, s.kstats,
                                                                               qkv, B, T, H, D);
    CUDA_LAUNCH_CHECK();
    attn_norm_reduce_kernel<<<static_cast<unsigned>(ceil_div(4 * D, 128)), 128, 0, stream>>>(
        dq_norm_w, dq_norm_b, dk_norm_w, dk_norm_b, s.part, BH, D);
    CUDA_LAUNCH_CHECK();
  }
}

}  // namespace cuda
}  // namespace rargen
