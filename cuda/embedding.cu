// Embedding gathers: out[r] = table[ids[r]] (or +=); a negative id writes zeros (or
// adds nothing), as the CPU backend. One thread per output element, so consecutive
// threads write consecutive channels of a row (coalesced); ids come from device
// memory, which keeps the op usable inside a captured CUDA graph.
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(float* __restrict__ out, const float* __restrict__ table, const int32_t* __restrict__ ids,
                                 int64_t rows, int C, bool accumulate) {
  const int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / C;
    int c = static_cast<int>(i - r * C);
    int32_t id = ids[r];
    if (accumulate) {
      if (id >= 0) out[i] += table[static_cast<int64_t>(id) * C + c];
    } else {
      out[i] = id >= 0 ? table[static_cast<int64_t>(id) * C + c] : 0.f;
    }
  }
}

// ---------------- backward (training) ----------------

// dtable[ids[r]][c] += dout[r][c]: one thread per column c, rows in order.
__global__ void embedding_bwd_kernel(float* __restrict__ dtable, const float* __restrict__ dout,
                                     const int32_t* __restrict__ ids, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < rows; r++) {
    const int32_t id = ids[r];
    if (id < 0) continue;
    dtable[static_cast<int64_t>(id) * C + c] += dout[r * C + c];
  }
}

}  // namespace

void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t rows, int C, bool accumulate,
                       cudaStream_t stream) {
  if (rows <= 0) return;
  embedding_kernel<<<grid_for(rows * C, kThreads), kThreads, 0, stream>>>(out, table, ids, rows, C, accumulate);
  CUDA_LAUNCH_CHECK();
}

void train_embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C,
                              cudaStream_t stream) {
  if (rows <= 0) return;
  embedding_bwd_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(dtable, dout, ids, rows, C);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
