// Causal self-attention with q/k LayerNorm over the head dim and a KV cache
// (B, H, Tcache, D), for any D in 1..128 (48, 80, 88 included), in three kernels:
//
// Row b (of B) has its own first position pos[b] and cache slot slot[b] (device int32
// arrays read when the kernels run); kcache/vcache are (slots, H, Tcache, D).
// 1. prologue: one warp per (b, new position i, head h) normalises q (to a scratch
//    buffer (B, H, Tn, D)) and k (into slot[b]'s cache at pos[b]+i), and copies v.
//    The q/k LayerNorm is thereby fused into the attention's first pass over qkv.
// 2a. Tn > 1 (training, prefill): flash-style tiled attention in fp32: a block owns 32
//    queries of one (b, h), walks 32-key tiles of the cache up to the causal limit with
//    an online softmax, never materialising the (T x T) scores. 256 threads: 8 per query
//    row, each holding D/8 accumulators.
// 2b. Tn == 1 (the decode step): flash-decoding. The cache length is split into S chunks
//    (S chosen from Tcache and the number of (b, h) pairs so the GPU is full even for a
//    small batch); each block scores its chunk (8 lanes per key, float4 when D % 4 == 0),
//    softmaxes it locally and writes (max, sum, unnormalised output); a combine kernel
//    merges the S partials. With S == 1 the block writes the output directly.
//
// Arithmetic is fp32. The cache is fp32 or bf16/f16 (template parameter KV): values are
// rounded when the prologue stores them and widened when loaded, halving the decode
// step's dominant memory traffic. Positions and slots come from device memory, so the
// same launches serve every step of a captured CUDA graph; grid sizes depend only on
// B, Tn, H, D and Tcache.
#include <algorithm>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kMaxD = 128;

// ---- 1. prologue ----

// LayerNorm of one head vector src[0..D) by a warp (lane holds d = lane + 32e).
template <typename T>
__device__ __forceinline__ void head_layernorm(T* dst, const float* src, const float* w, const float* b, int D,
                                               float eps, int lane) {
  float x[4];
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < 4; e++) {
    int d = lane + 32 * e;
    x[e] = d < D ? src[d] : 0.f;
    s += x[e];
  }
  const float mean = warp_sum(s) / D;
  float v = 0.f;
#pragma unroll
  for (int e = 0; e < 4; e++) {
    int d = lane + 32 * e;
    float t = d < D ? x[e] - mean : 0.f;
    v += t * t;
  }
  const float rstd = 1.f / sqrtf(warp_sum(v) / D + eps);
#pragma unroll
  for (int e = 0; e < 4; e++) {
    int d = lane + 32 * e;
    if (d < D) dst[d] = from_float<T>((x[e] - mean) * rstd * w[d] + b[d]);
  }
}

template <typename KV>
__global__ void attn_prologue_kernel(float* qn, KV* kcache, KV* vcache, const float* qkv, const float* qw,
                                     const float* qb, const float* kw, const float* kb, int B, int Tn,
                                     const int32_t* pos_dev, const int32_t* slot_dev, int slots, int Tcache, int H,
                                     int D, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= static_cast<int64_t>(B) * Tn * H) return;  // warp-uniform
  const int h = static_cast<int>(row % H);
  const int64_t bt = row / H;  // b * Tn + i
  const int i = static_cast<int>(bt % Tn);
  const int b = static_cast<int>(bt / Tn);
  const int p0 = pos_dev[b], sl = slot_dev[b];
  const int C = H * D;
  const float* src = qkv + bt * 3 * C + h * D;
  const int64_t bh = static_cast<int64_t>(b) * H + h;
  head_layernorm(qn + (bh * Tn + i) * D, src, qw, qb, D, eps, lane);
  const int pos = p0 + i;
  if (pos < 0 || pos >= Tcache || sl < 0 || sl >= slots) return;  // a bad device-side position or slot
  const int64_t dst = ((static_cast<int64_t>(sl) * H + h) * Tcache + pos) * D;
  head_layernorm(kcache + dst, src + C, kw, kb, D, eps, lane);
  for (int d = lane; d < D; d += 32) vcache[dst + d] = from_float<KV>(src[2 * C + d]);
}

// ---- 2a. prefill / training: tiled flash attention ----

constexpr int kFaBQ = 32, kFaBK = 32, kFaThreads = 256;

__host__ __device__ inline size_t prefill_smem_floats(int D) {
  return static_cast<size_t>(kFaBQ) * (D + 1) + static_cast<size_t>(kFaBK) * (D + 1) + static_cast<size_t>(kFaBK) * D +
         static_cast<size_t>(kFaBQ) * (kFaBK + 1);
}

template <typename KV>
__global__ void __launch_bounds__(kFaThreads)
    attn_prefill_kernel(float* out, const float* qn, const KV* kcache, const KV* vcache, int B, int Tn,
                        const int32_t* pos_dev, const int32_t* slot_dev, int slots, int Tcache, int H, int D,
                        float scale) {
  extern __shared__ float sm[];
  const int ldk = D + 1;
  float* Qs = sm;                  // [BQ][D+1]
  float* Ks = Qs + kFaBQ * ldk;    // [BK][D+1]
  float* Vs = Ks + kFaBK * ldk;    // [BK][D]
  float* Ps = Vs + kFaBK * D;      // [BQ][BK+1]
  const int bh = blockIdx.x;
  const int b = bh / H, h = bh % H;
  const int q0 = blockIdx.y * kFaBQ;
  const int p0 = pos_dev[b];
  const int sl = min(max(slot_dev[b], 0), slots - 1);  // a bad slot reads a wrong row, never out of bounds
  const int tid = threadIdx.x, qi = tid >> 3, l8 = tid & 7;
  const float* qsrc = qn + static_cast<int64_t>(bh) * Tn * D;
  const KV* kb = kcache + (static_cast<int64_t>(sl) * H + h) * Tcache * D;
  const KV* vb = vcache + (static_cast<int64_t>(sl) * H + h) * Tcache * D;

  for (int idx = tid; idx < kFaBQ * D; idx += kFaThreads) {
    int r = idx / D, d = idx - r * D;
    int i = q0 + r;
    Qs[r * ldk + d] = i < Tn ? qsrc[static_cast<int64_t>(i) * D + d] : 0.f;
  }
  const int qg = q0 + qi;                       // this row's query index in 0..Tn-1 (or padding)
  const int qlim = p0 + min(qg, Tn - 1);        // last key it sees (padding rows: a valid limit)
  const int kend = min(p0 + min(q0 + kFaBQ, Tn), Tcache);  // keys needed by the tile: 0..kend-1

  float m = -INFINITY, l = 0.f;
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
      s[u] = (k0 + kj <= qlim) ? dot * scale : -INFINITY;
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
      float pr = expf(s[u] - mnew);
      Ps[qi * (kFaBK + 1) + l8 + 8 * u] = pr;
      rs += pr;
    }
    rs += __shfl_xor_sync(0xffffffffu, rs, 1);
    rs += __shfl_xor_sync(0xffffffffu, rs, 2);
    rs += __shfl_xor_sync(0xffffffffu, rs, 4);
    l = l * corr + rs;
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
    const float inv = 1.f / l;
#pragma unroll
    for (int e = 0; e < 16; e++) {
      int d = l8 + 8 * e;
      if (d < D) o[d] = acc[e] * inv;
    }
  }
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
  CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(prefill_smem_floats(kMaxD) * sizeof(float))));
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
  const float scale = 1.f / sqrtf(static_cast<float>(D));

  {
    const int threads = 256, per_block = threads / 32;
    attn_prologue_kernel<KV><<<static_cast<unsigned>(ceil_div(rows, per_block)), threads, 0, stream>>>(
        qn, kcache, vcache, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, Tn, pos, slot, slots, Tcache, H, D, eps);
    CUDA_LAUNCH_CHECK();
  }

  if (Tn > 1) {
    dim3 grid(static_cast<unsigned>(BH), static_cast<unsigned>(ceil_div(Tn, kFaBQ)));
    size_t smem = prefill_smem_floats(D) * sizeof(float);
    attn_prefill_kernel<KV><<<grid, kFaThreads, smem, stream>>>(out, qn, kcache, vcache, B, Tn, pos, slot, slots,
                                                                Tcache, H, D, scale);
    CUDA_LAUNCH_CHECK();
    return;
  }

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

}  // namespace

void attention_init() {
  init_for<float>();
  init_for<__half>();
  init_for<__nv_bfloat16>();
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

}  // namespace cuda
}  // namespace rargen
