// Cross-entropy for training (src/backend.h cross_entropy): per-row loss, top-1
// correctness and dlogits = (softmax - onehot) * grad_scale, one block per row, the
// softmax denominator in double as the CPU reference. Ties of the top-1 go to the
// lowest index (the CPU's strict >). Deterministic: no atomics.
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// (best, arg) of the lanes' pairs for the whole warp; arg 0x7fffffff = no element yet.
// Ties: the lowest index.
__device__ __forceinline__ void warp_argmax(float& best, int& arg) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, arg, o);
    if (oi != 0x7fffffff && (arg == 0x7fffffff || ob > best || (ob == best && oi < arg))) {
      best = ob;
      arg = oi;
    }
  }
}

// One block per row. dlogits may alias logits: every read of the row happens before
// the block_sum barrier, every write after it.
__global__ void cross_entropy_kernel(float* dlogits, float* losses, int32_t* correct, const float* logits,
                                     const int32_t* __restrict__ targets, int V, float grad_scale) {
  __shared__ float rv[32];
  __shared__ int ri[32];
  __shared__ double redd[32];
  const int64_t r = blockIdx.x;
  const float* x = logits + r * V;
  float* dl = dlogits + r * V;
  const int32_t t = targets[r];
  if (t < 0) {  // uniform over the block
    if (threadIdx.x == 0) {
      if (losses) losses[r] = 0.f;
      if (correct) correct[r] = 0;
    }
    for (int v = threadIdx.x; v < V; v += blockDim.x) dl[v] = 0.f;
    return;
  }
  const float xt = x[t];
  // max and first argmax (ties: the lowest index, as the CPU's strict >)
  float best = -INFINITY;
  int arg = 0x7fffffff;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float xv = x[v];
    if (arg == 0x7fffffff || xv > best) {
      best = xv;
      arg = v;
    }
  }
  warp_argmax(best, arg);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) {
    rv[warp] = best;
    ri[warp] = arg;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < nw ? rv[lane] : -INFINITY;
    arg = lane < nw ? ri[lane] : 0x7fffffff;
    warp_argmax(best, arg);
    if (lane == 0) {
      rv[0] = best;
      ri[0] = arg;
    }
  }
  __syncthreads();
  const float mx = rv[0];
  const int amax = ri[0];
  double s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) s += exp(static_cast<double>(x[v] - mx));
  s = block_sum(s, redd);  // barrier: all reads of x are done
  const float lse = mx + static_cast<float>(log(s));
  if (threadIdx.x == 0) {
    if (losses) losses[r] = lse - xt;
    if (correct) correct[r] = amax == t ? 1 : 0;
  }
  // x[v] for this thread's v was read by this thread only in the loops above; reread
  // is safe because no other thread writes index v.
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    float d = expf(x[v] - lse) * grad_scale;
    if (v == t) d -= grad_scale;
    dl[v] = d;
  }
}

}  // namespace

void train_cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits, const int32_t* targets,
                         int64_t rows, int V, float grad_scale, cudaStream_t stream) {
  if (rows <= 0) return;
  cross_entropy_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(dlogits, losses, correct, logits, targets, V,
                                                                            grad_scale);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
