// LayerNorm, LayerNorm + adaLN modulate (with a row map into the modulation table),
// and the gated residual. One warp per row: C (<= a few thousand) is read three times
// (mean, variance about the mean, normalise), the re-reads hitting L1, which keeps the
// statistics two-pass like the CPU reference (which uses double; fp32 two-pass agrees
// to ~1e-6 relative). 1/sqrtf rather than rsqrtf for the same reason.
#include "ops.cuh"

namespace rargen {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

__global__ void __launch_bounds__(kThreads)
    layernorm_modulate_kernel(float* out, const float* inp, const float* __restrict__ ln_w,
                              const float* __restrict__ ln_b, const float* shift, const float* scale,
                              int64_t mod_stride, const int32_t* __restrict__ row_map, int64_t rows, int C,
                              float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps leave together
  const float* x = inp + r * C;
  float mean, rstd;
  warp_mean_rstd<float>(x, C, eps, lane, mean, rstd);
  const int64_t m = row_map ? static_cast<int64_t>(row_map[r]) : r;
  const float* sh = shift ? shift + m * mod_stride : nullptr;
  const float* sc = scale ? scale + m * mod_stride : nullptr;
  float* y = out + r * C;
  for (int c = lane; c < C; c += 32) {
    float t = (x[c] - mean) * rstd;
    if (ln_w) t *= ln_w[c];
    if (ln_b) t += ln_b[c];
    if (sc) t = t * (1.f + sc[c]);
    if (sh) t += sh[c];
    y[c] = t;
  }
}

__global__ void gated_residual_kernel(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ gate,
                                      int64_t mod_stride, const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / C;
    int c = static_cast<int>(i - r * C);
    int64_t m = row_map ? static_cast<int64_t>(row_map[r]) : r;
    x[i] += gate[m * mod_stride + c] * y[i];
  }
}

// ---------------- backward (training) ----------------

// One block per row: mean/rstd (saved to stats for the column pass), dy =
// dout*(1+scale[m])*ln_w (in dynamic shared memory, C floats), dinp += rstd*(dy -
// mean(dy) - xhat*mean(dy*xhat)); without a row map (m = r: every row owns its
// modulation row) also dshift/dscale +=.
__global__ void lnmod_bwd_dinp_kernel(float* __restrict__ dinp, float* __restrict__ dshift, float* __restrict__ dscale,
                                      float* __restrict__ stats, const float* __restrict__ dout,
                                      const float* __restrict__ inp, const float* __restrict__ ln_w,
                                      const float* __restrict__ ln_b, const float* __restrict__ scale,
                                      int64_t mod_stride, const int32_t* __restrict__ row_map, int C, float eps) {
  extern __shared__ float dy[];
  __shared__ double red[32];
  const int64_t r = blockIdx.x;
  const int64_t m = row_map ? row_map[r] : r;
  const float* x = inp + r * C;
  const float* go = dout + r * C;
  double s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
  const double md = block_sum(s, red) / C;
  double v = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double dd = x[c] - md;
    v += dd * dd;
  }
  v = block_sum(v, red) / C;
  const float mean = static_cast<float>(md);
  const float rstd = static_cast<float>(1.0 / sqrt(v + static_cast<double>(eps)));
  if (threadIdx.x == 0) {
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  const float* sc = scale ? scale + m * mod_stride : nullptr;
  double s1 = 0, s2 = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (x[c] - mean) * rstd;
    const float g = go[c];
    if (!row_map) {  // m = r: this block owns the modulation row
      float y = xh;
      if (ln_w) y *= ln_w[c];
      if (ln_b) y += ln_b[c];
      if (dshift) dshift[m * mod_stride + c] += g;
      if (dscale) dscale[m * mod_stride + c] += g * y;
    }
    float d = sc ? g * (1.f + sc[c]) : g;
    if (ln_w) d *= ln_w[c];
    dy[c] = d;
    s1 += d;
    s2 += static_cast<double>(d) * xh;
  }
  s1 = block_sum(s1, red);
  s2 = block_sum(s2, red);
  const float m1 = static_cast<float>(s1 / C), m2 = static_cast<float>(s2 / C);
  if (!dinp) return;
  float* gx = dinp + r * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xh = (x[c] - mean) * rstd;
    gx[c] += rstd * (dy[c] - m1 - xh * m2);
  }
}

// One thread per column, rows in order: dln_w/dln_b (double), and with a row map the
// dshift/dscale rows (float +=, as the CPU). Uses the stats of the row pass.
__global__ void lnmod_bwd_col_kernel(float* __restrict__ dln_w, float* __restrict__ dln_b, float* __restrict__ dshift,
                                     float* __restrict__ dscale, const float* __restrict__ stats,
                                     const float* __restrict__ dout, const float* __restrict__ inp,
                                     const float* __restrict__ ln_w, const float* __restrict__ ln_b,
                                     const float* __restrict__ scale, int64_t mod_stride,
                                     const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const bool mod = row_map && (dshift || dscale);
  double aw = 0, ab = 0;
  for (int64_t r = 0; r < rows; r++) {
    const float xh = (inp[r * C + c] - stats[2 * r]) * stats[2 * r + 1];
    const float g = dout[r * C + c];
    const int64_t m = row_map ? row_map[r] : r;
    if (mod) {
      float y = xh;
      if (ln_w) y *= ln_w[c];
      if (ln_b) y += ln_b[c];
      if (dshift) dshift[m * mod_stride + c] += g;
      if (dscale) dscale[m * mod_stride + c] += g * y;
    }
    const float d = scale ? g * (1.f + scale[m * mod_stride + c]) : g;
    if (ln_w) aw += static_cast<double>(d * xh);
    if (ln_w || ln_b) ab += d;
  }
  if (dln_w) dln_w[c] += static_cast<float>(aw);
  if (dln_b) dln_b[c] += static_cast<float>(ab);
}

// dy[i] = gate[m][c] * dx[i]; without a row map also dgate[r][c] += dx*y.
__global__ void gated_bwd_kernel(float* __restrict__ dy, float* __restrict__ dgate, const float* dx,
                                 const float* __restrict__ y, const float* __restrict__ gate, int64_t mod_stride,
                                 const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int64_t n = rows * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C;
    const int c = static_cast<int>(i - r * C);
    const int64_t m = row_map ? row_map[r] : r;
    const float d = dx[i];
    if (!row_map && dgate) dgate[m * mod_stride + c] += d * y[i];
    dy[i] = gate[m * mod_stride + c] * d;  // may alias dx: read above
  }
}

// With a row map: dgate[m][c] += dx*y, one thread per column, rows in order.
__global__ void gated_bwd_col_kernel(float* __restrict__ dgate, const float* __restrict__ dx,
                                     const float* __restrict__ y, int64_t mod_stride,
                                     const int32_t* __restrict__ row_map, int64_t rows, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < rows; r++) dgate[static_cast<int64_t>(row_map[r]) * mod_stride + c] += dx[r * C + c] * y[r * C + c];
}

}  // namespace

void layernorm_modulate_forward(float* out, const float* inp, const float* ln_weight, const float* ln_bias,
                                const float* shift, const float* scale, int64_t mod_stride, const int32_t* row_map,
                                int64_t rows, int C, float eps, cudaStream_t stream) {
  if (rows <= 0) return;
  int64_t blocks = ceil_div(rows, kRowsPerBlock);
  if (blocks > 0x7fffffffLL) fail("layernorm", "too many rows");
  layernorm_modulate_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      out, inp, ln_weight, ln_bias, shift, scale, mod_stride, row_map, rows, C, eps);
  CUDA_LAUNCH_CHECK();
}

void gated_residual_forward(float* x, const float* y, const float* gate, int64_t mod_stride, const int32_t* row_map,
                            int64_t rows, int C, cudaStream_t stream) {
  if (rows <= 0) return;
  gated_residual_kernel<<<grid_for(rows * C, kThreads), kThreads, 0, stream>>>(x, y, gate, mod_stride, row_map, rows, C);
  CUDA_LAUNCH_CHECK();
}

void train_layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                       const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                       const float* scale, int64_t mod_stride, const int32_t* row_map, int64_t rows,
                                       int C, float eps, ScratchProvider& sp, cudaStream_t stream) {
  if (rows <= 0) return;
  float* stats = static_cast<float*>(sp.scratch(kScratchTrain, static_cast<size_t>(rows) * 2 * sizeof(float)));
  const int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 128;
  lnmod_bwd_dinp_kernel<<<static_cast<unsigned>(rows), threads, static_cast<size_t>(C) * sizeof(float), stream>>>(
      dinp, row_map ? nullptr : dshift, row_map ? nullptr : dscale, stats, dout, inp, ln_w, ln_b, scale, mod_stride,
      row_map, C, eps);
  CUDA_LAUNCH_CHECK();
  // the column pass (LN affine; row-mapped dshift/dscale) uses the row statistics
  if (dln_w || dln_b || (row_map && (dshift || dscale))) {
    lnmod_bwd_col_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(
        dln_w, dln_b, row_map ? dshift : nullptr, row_map ? dscale : nullptr, stats, dout, inp, ln_w, ln_b, scale,
        mod_stride, row_map, rows, C);
    CUDA_LAUNCH_CHECK();
  }
}

void train_gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                                   int64_t mod_stride, const int32_t* row_map, int64_t rows, int C,
                                   cudaStream_t stream) {
  if (rows <= 0) return;
  if (row_map && dgate) {  // before dy is written (dy may alias dx)
    gated_bwd_col_kernel<<<static_cast<unsigned>(ceil_div(C, 128)), 128, 0, stream>>>(dgate, dx, y, mod_stride, row_map,
                                                                                    rows, C);
    CUDA_LAUNCH_CHECK();
  }
  gated_bwd_kernel<<<grid_for(rows * C, kThreads), kThreads, 0, stream>>>(dy, dgate, dx, y, gate, mod_stride, row_map,
                                                                          rows, C);
  CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace rargen
