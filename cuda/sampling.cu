// Sampling on the device: CFG combine, temperature, top-k / top-p, then greedy argmax
// or the inverse-CDF multinomial draw with the caller's uniforms; only the token ids
// go back to the host. One block per image row; V <= kSampleMaxV (RAR: V = 1024).
//
// Semantics are the CPU backend's (src/cpu/cpu_backend.cc), step for step:
// - l = cfg ? u + (c - u) * cfg_scale : c; greedy -> argmax of l, ties -> lowest index
//   (no temperature, no filtering: they cannot move the argmax).
// - l /= temperature. Rank order: value descending, ties by index ascending (a stable
//   sort; here a bitonic sort on (value, index) pairs).
// - top-k keeps exactly the first top_k ranks. top-p, over those, keeps the shortest
//   prefix whose cumulative softmax mass (in double) reaches top_p (>= top_p), at
//   least one token.
// - p[v] = exp(l[v] - max kept) for kept tokens, 0 otherwise; target = u * sum(p) in
//   double; the token is the first index (index order) whose running sum exceeds the
//   target, else the last index with p > 0.
// Sums run per lane over contiguous chunks then across lanes, so they differ from the
// CPU's sequential double sums only in the last bits.
#include <climits>

#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Inclusive prefix sum over the warp's lanes.
__device__ __forceinline__ double warp_scan_d(double v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    double y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += y;
  }
  return v;
}
__device__ __forceinline__ int warp_min_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_max_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// (value, index) pair a goes before b: larger value first, ties by smaller index.
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// Number of ranks top-p keeps among the first `kept` (run by one whole warp).
__device__ int top_p_count(const float* sval, int kept, float top_p, int lane) {
  const float mx = sval[0];
  const int per = (kept + 31) / 32;
  const int a = min(lane * per, kept), e = min(a + per, kept);
  double t = 0.0;
  for (int r = a; r < e; r++) t += exp(static_cast<double>(sval[r] - mx));
  const double tot = warp_sum_d(t);
  double cs = 0.0;
  for (int r = a; r < e; r++) cs += exp(static_cast<double>(sval[r] - mx)) / tot;
  const double incl = warp_scan_d(cs, lane);
  double cum = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) cum = 0.0;
  int cand = INT_MAX;
  for (int r = a; r < e; r++) {
    cum += exp(static_cast<double>(sval[r] - mx)) / tot;
    if (cum >= static_cast<double>(top_p)) {
      cand = r + 1;
      break;
    }
  }
  cand = warp_min_i(cand);
  return cand == INT_MAX ? kept : cand;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(int32_t* tokens, const float* logits, const float* uniforms, int B, int V, int P, bool cfg,
                  float cfg_scale, float temperature, int top_k, float top_p, bool greedy) {
  extern __shared__ float sm[];
  float* vals = sm;                                // [V] logits after CFG (and temperature)
  float* sval = vals + V;                          // [P] sorted values, later probabilities
  int* sidx = reinterpret_cast<int*>(sval + P);    // [P] sorted indices
  __shared__ float red_v[32];
  __shared__ int red_i[32];
  __shared__ int s_kept;
  const int b = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* c = logits + static_cast<int64_t>(b) * V;
  const float* u = logits + static_cast<int64_t>(B + b) * V;
  for (int v = tid; v < V; v += kThreads) {
    float x = c[v];
    if (cfg) {
      float uv = u[v];
      x = uv + (x - uv) * cfg_scale;
    }
    vals[v] = greedy ? x : x / temperature;
  }
  __syncthreads();

  if (greedy) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int v = tid; v < V; v += kThreads) {
      float x = vals[v];
      if (bi == INT_MAX || x > bv) {
        bv = x;
        bi = v;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi != INT_MAX && (bi == INT_MAX || ranks_before(ov, oi, bv, bi))) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      red_v[warp] = bv;
      red_i[warp] = bi;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kThreads / 32; w++) {
        if (red_i[w] != INT_MAX && (bi == INT_MAX || ranks_before(red_v[w], red_i[w], bv, bi))) {
          bv = red_v[w];
          bi = red_i[w];
        }
      }
      tokens[b] = bi == INT_MAX ? 0 : bi;
    }
    return;
  }

  const bool use_k = top_k > 0 && top_k < V;
  if (use_k || top_p < 1.f) {
    for (int i = tid; i < P; i += kThreads) {
      sval[i] = i < V ? vals[i] : -INFINITY;
      sidx[i] = i;  // padding has indices >= V: it ranks after every real entry
    }
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1) {
      for (int j = k >> 1; j > 0; j >>= 1) {
        for (int i = tid; i < P; i += kThreads) {
          int ixj = i ^ j;
          if (ixj > i) {
            float vi = sval[i], vj = sval[ixj];
            int ii = sidx[i], ij = sidx[ixj];
            bool in_order = ranks_before(vi, ii, vj, ij);
            bool up = (i & k) == 0;
            if (up != in_order) {
              sval[i] = vj;
              sval[ixj] = vi;
              sidx[i] = ij;
              sidx[ixj] = ii;
            }
          }
        }
        __syncthreads();
      }
    }
    int kept = use_k ? top_k : V;
    if (top_p < 1.f) {
      if (warp == 0) {
        int r = top_p_count(sval, kept, top_p, lane);
        if (lane == 0) s_kept = max(1, min(kept, r));
      }
      __syncthreads();
      kept = s_kept;
    }
    for (int r = kept + tid; r < V; r += kThreads) vals[sidx[r]] = -INFINITY;
    __syncthreads();
  }

  float mx = -INFINITY;
  for (int v = tid; v < V; v += kThreads) mx = fmaxf(mx, vals[v]);
  mx = block_max(mx, red_v);
  float* p = sval;  // reuse: probabilities in index order
  for (int v = tid; v < V; v += kThreads) {
    float x = vals[v];
    p[v] = x == -INFINITY ? 0.f : expf(x - mx);
  }
  __syncthreads();
  if (warp != 0) return;
  const int per = (V + 31) / 32;
  const int a = min(lane * per, V), e = min(a + per, V);
  double cs = 0.0;
  int last = -1;
  for (int v = a; v < e; v++) {
    if (p[v] > 0.f) {
      cs += p[v];
      last = v;
    }
  }
  const double incl = warp_scan_d(cs, lane);
  const double total = __shfl_sync(0xffffffffu, incl, 31);
  double cum = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) cum = 0.0;
  const double target = static_cast<double>(uniforms[b]) * total;
  int found = INT_MAX;
  for (int v = a; v < e; v++) {
    if (p[v] <= 0.f) continue;
    cum += p[v];
    if (cum > target) {
      found = v;
      break;
    }
  }
  found = warp_min_i(found);
  last = warp_max_i(last);
  if (lane == 0) tokens[b] = found != INT_MAX ? found : max(last, 0);
}

int pow2_at_least(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

size_t sample_smem(int V) { return (static_cast<size_t>(V) + 2 * static_cast<size_t>(pow2_at_least(V))) * 4; }

}  // namespace

void sampling_init() {
  CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(sample_smem(kSampleMaxV))));
}

void sample_forward(int32_t* tokens_dev, const float* logits, const float* uniforms_dev, int B, int V, bool cfg,
                    float cfg_scale, float temperature, int top_k, float top_p, bool greedy, cudaStream_t stream) {
  if (B <= 0) return;
  if (V < 1 || V > kSampleMaxV)
    fail("sample", "V must be in 1.." + std::to_string(kSampleMaxV) + ", got " + std::to_string(V));
  sample_kernel<<<B, kThreads, sample_smem(V), stream>>>(tokens_dev, logits, uniforms_dev, B, V, pow2_at_least(V), cfg,
                                                         cfg_scale, temperature, top_k, top_p, greedy);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
