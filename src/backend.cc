// The Backend contract (src/backend.h): every public op checks its arguments here,
// once for every backend, then asks supports(op, dtype) and calls the backend's _impl.
// One check function per op (check_<op>), one wording for all of them:
//   rargen: <backend> <op>: Expected <what> for <arg> but received <value>
// (src/napi_util.h words the native boundary's checks the same way). What a check
// cannot see from the host (positions and slots in backend memory, a kernel's own
// limits) stays in the backend, worded the same through Backend::fail_arg.
#include "backend.h"

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>

namespace rargen {

// ---------------- names ----------------

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "unknown dtype";
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32})
    if (name == dtype_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

const char* op_name(Op op) {
  switch (op) {
#define RARGEN_OP_NAME(name, kind) \
  case Op::name: return #name;
    RARGEN_BACKEND_OPS(RARGEN_OP_NAME)
#undef RARGEN_OP_NAME
  }
  return "unknown op";
}

OpKind op_kind(Op op) {
  switch (op) {
#define RARGEN_OP_KIND(name, kind) \
  case Op::name: return OpKind::kind;
    RARGEN_BACKEND_OPS(RARGEN_OP_KIND)
#undef RARGEN_OP_KIND
  }
  return OpKind::Forward;
}

bool op_from_name(const std::string& name, Op* out) {
  for (int i = 0; i < kOpCount; i++)
    if (name == op_name(static_cast<Op>(i))) {
      *out = static_cast<Op>(i);
      return true;
    }
  return false;
}

bool reference_supports(Op op, DType dtype) {
  const bool weight_dtype = dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
  switch (op) {
    case Op::upload_weight:
    case Op::linear:
    case Op::conv2d:
    case Op::conv3x3_fused:
      return weight_dtype;
    default:
      break;
  }
  switch (op_kind(op)) {
    case OpKind::Memory:
    case OpKind::Event:
      return true;  // dtype-free
    case OpKind::Graph:
      return false;
    case OpKind::Forward:
    case OpKind::Training:
      return dtype == DType::F32;
  }
  return false;
}

// ---------------- the errors ----------------

void Backend::fail_arg(Op op, const std::string& what, const std::string& arg, const std::string& value) const {
  throw Error(std::string("rargen: ") + name() + " " + op_name(op) + ": Expected " + what + " for " + arg +
              " but received " + value);
}

void Backend::unsupported(Op op, DType dtype) const {
  const std::string n = name(), o = op_name(op), d = dtype_name(dtype);
  std::string have;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32})
    if (supports(op, t)) have += std::string(have.empty() ? "" : ", ") + dtype_name(t);
  std::string how;
  if (!have.empty())
    how = n + " runs " + o + " for " + have + "; pass one of those, or use a device that supports " + d;
  else if (n != "cpu" && reference_supports(op, dtype))
    how = "use device cpu (the reference backend runs " + o + " for " + d + ")";
  else
    how = n + " has no " + o + "; ask supports(op, dtype) first (JS: backendSupports(device, op, dtype))";
  throw Error("rargen: " + n + " does not support " + o + " for " + d + ": " + how);
}

namespace {

std::string num(int64_t v) { return std::to_string(v); }
std::string fnum(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

// The checks of one call of `op` on `be`.
struct Args {
  const Backend& be;
  Op op;

  [[noreturn]] void fail(const std::string& what, const std::string& arg, const std::string& value) const {
    be.fail_arg(op, what, arg, value);
  }
  void at_least(const char* arg, int64_t v, int64_t lo) const {
    if (v < lo) fail("an integer >= " + num(lo), arg, num(v));
  }
  void dim(const char* arg, int64_t v) const { at_least(arg, v, 1); }    // positive
  void count(const char* arg, int64_t v) const { at_least(arg, v, 0); }  // non-negative
  void in_range(const char* arg, int64_t v, int64_t lo, int64_t hi) const {
    if (v < lo || v > hi) fail("an integer in " + num(lo) + ".." + num(hi), arg, num(v));
  }
  void at_most(const char* arg, int64_t v, const char* bound_name, int64_t bound) const {
    if (v > bound) fail("an integer <= " + std::string(bound_name) + " (" + num(bound) + ")", arg, num(v));
  }
  void multiple(const char* arg, int64_t v, const char* of_name, int64_t of) const {
    if (of > 0 && v % of) fail("a multiple of " + std::string(of_name) + " (" + num(of) + ")", arg, num(v));
  }
  void even(const char* arg, int64_t v, const char* why) const {
    if (v % 2) fail(std::string("an even integer (") + why + ")", arg, num(v));
  }
  // Required pointers: backend memory unless `host`; checked when `needed` (the tensor is not empty).
  void ptr(const char* arg, const void* p, bool needed = true) const {
    if (needed && !p) fail("a non-null pointer to backend memory", arg, "null");
  }
  void host_ptr(const char* arg, const void* p, bool needed = true) const {
    if (needed && !p) fail("a non-null pointer to host memory", arg, "null");
  }
  void positive(const char* arg, double v) const {
    if (!(v > 0) || !std::isfinite(v)) fail("a finite number > 0", arg, fnum(v));
  }
  void non_negative(const char* arg, double v) const {
    if (!(v >= 0) || !std::isfinite(v)) fail("a finite number >= 0", arg, fnum(v));
  }
  void finite(const char* arg, double v) const {
    if (!std::isfinite(v)) fail("a finite number", arg, fnum(v));
  }
  void unit_interval(const char* arg, double v) const {  // [0, 1)
    if (!(v >= 0 && v < 1)) fail("a number in [0, 1)", arg, fnum(v));
  }
  // The element count of a tensor, the product of `factors` (each already >= 0), which
  // must fit in int64 also as bytes of `elsize` each (products of int dims overflow int
  // first; every backend indexes with int64).
  int64_t numel(const char* arg, std::initializer_list<int64_t> factors, int64_t elsize = 4) const {
    int64_t p = 1;
    bool over = false;
    std::string shown;
    for (int64_t f : factors) {
      shown += (shown.empty() ? "" : "*") + num(f);
      if (!over && __builtin_mul_overflow(p, f, &p)) over = true;
    }
    int64_t bytes = 0;
    if (over || __builtin_mul_overflow(p, elsize, &bytes))
      fail("sizes whose product (" + num(elsize) + "-byte elements) fits in 64 bits", arg, shown);
    return p;
  }
  // A product of int dims that the op keeps in an int (a row stride such as 3*C).
  void fits_int(const char* arg, std::initializer_list<int64_t> factors) const {
    int64_t p = 1;
    std::string shown;
    for (int64_t f : factors) {
      shown += (shown.empty() ? "" : "*") + num(f);
      if (p <= INT_MAX) p *= f;  // at most INT_MAX * INT_MAX: no int64 overflow
    }
    if (p > INT_MAX) fail("sizes whose product fits in a 32-bit int", arg, shown);
  }
  void dtype(DType dt) const {
    if (!be.supports(op, dt)) be.unsupported(op, dt);
  }
  // The shape of the row-wise ops: `rows` (>= 0) rows of `C` (>= 1) float32 elements.
  void rows_of(int64_t rows, const char* c_name, int64_t C) const {
    count("rows", rows);
    dim(c_name, C);
    numel((std::string("rows*") + c_name).c_str(), {rows, C});
  }
};

// ---------------- one check per op ----------------

void check_copy(const Backend& be, Op op, const void* dst, const void* src, size_t bytes, bool dst_host,
                bool src_host) {
  Args a{be, op};
  if (bytes > static_cast<size_t>(INT64_MAX)) a.fail("a byte count that fits in int64", "bytes", std::to_string(bytes));
  if (!bytes) return;
  dst_host ? a.host_ptr("dst", dst) : a.ptr("dst", dst);
  src_host ? a.host_ptr("src", src) : a.ptr("src", src);
}

void check_fill(const Backend& be, const float* dst, int64_t n) {
  Args a{be, Op::fill};
  a.count("n", n);
  a.numel("n", {n});
  a.ptr("dst", dst, n > 0);
}

void check_upload_weight(const Backend& be, const float* host, int64_t n, DType dtype) {
  Args a{be, Op::upload_weight};
  a.count("n", n);
  a.dtype(dtype);
  a.numel("n", {n});
  a.host_ptr("host", host, n > 0);
}

void check_linear(const Backend& be, const float* out, const float* inp, Weight w, int64_t M, int N, int K) {
  Args a{be, Op::linear};
  a.count("M", M);
  a.dim("N", N);
  a.dim("K", K);
  a.dtype(w.dtype);
  a.numel("M*K (inp)", {M, K});
  a.numel("M*N (out)", {M, N});
  a.numel("N*K (w)", {N, K}, static_cast<int64_t>(dtype_size(w.dtype)));
  a.ptr("w.data", w.data);
  a.ptr("out", out, M > 0);
  a.ptr("inp", inp, M > 0);
}

void check_layernorm(const Backend& be, Op op, const float* out, const float* inp, int64_t mod_stride, int64_t rows,
                     int C, float eps) {
  Args a{be, op};
  a.rows_of(rows, "C", C);
  a.count("mod_stride", mod_stride);
  a.positive("eps", eps);
  a.ptr("out", out, rows > 0);
  a.ptr("inp", inp, rows > 0);
}

void check_gated_residual(const Backend& be, const float* x, const float* y, const float* gate, int64_t mod_stride,
                          int64_t rows, int C) {
  Args a{be, Op::gated_residual};
  a.rows_of(rows, "C", C);
  a.count("mod_stride", mod_stride);
  a.ptr("x", x, rows > 0);
  a.ptr("y", y, rows > 0);
  a.ptr("gate", gate, rows > 0);
}

void check_elementwise(const Backend& be, Op op, const float* out, const char* out_name, const float* a0,
                       const char* a0_name, const float* a1, const char* a1_name, int64_t n) {
  Args a{be, op};
  a.count("n", n);
  a.numel("n", {n});
  a.ptr(out_name, out, n > 0);
  a.ptr(a0_name, a0, n > 0);
  if (a1_name) a.ptr(a1_name, a1, n > 0);
}

void check_embedding(const Backend& be, Op op, const float* out, const char* out_name, const float* table,
                     const char* table_name, const int32_t* ids, int64_t rows, int C) {
  Args a{be, op};
  a.rows_of(rows, "C", C);
  a.ptr(out_name, out, rows > 0);
  a.ptr(table_name, table, rows > 0);
  a.ptr("ids", ids, rows > 0);
}

// The dims every attention op shares: H heads of D, 3*H*D floats per qkv row.
void check_heads(const Args& a, int H, int D, float eps) {
  a.dim("H", H);
  a.in_range("D", D, 1, 128);
  a.fits_int("3*H*D (qkv row)", {3, H, D});
  a.positive("eps", eps);
}

void check_attention(const Backend& be, const float* out, const void* kcache, const void* vcache, DType cache_dtype,
                     const float* qkv, const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                     const float* k_norm_b, int R, int Tn, const int32_t* pos, const int32_t* slot, int slots,
                     int Tcache, int H, int D, float eps) {
  Args a{be, Op::attention};
  a.count("R", R);
  a.dim("Tn", Tn);
  a.dim("Tcache", Tcache);
  a.dim("slots", slots);
  check_heads(a, H, D, eps);
  a.at_most("Tn", Tn, "Tcache", Tcache);
  a.at_most("R", R, "slots", slots);  // rows name distinct slots
  a.dtype(cache_dtype);
  a.numel("slots*H*Tcache*D (kcache, vcache)", {slots, H, Tcache, D}, static_cast<int64_t>(dtype_size(cache_dtype)));
  a.numel("R*Tn*3*H*D (qkv)", {R, Tn, 3, H, D});
  const bool any = R > 0;
  a.ptr("out", out, any);
  a.ptr("kcache", kcache, any);
  a.ptr("vcache", vcache, any);
  a.ptr("qkv", qkv, any);
  a.ptr("q_norm_w", q_norm_w, any);
  a.ptr("q_norm_b", q_norm_b, any);
  a.ptr("k_norm_w", k_norm_w, any);
  a.ptr("k_norm_b", k_norm_b, any);
  a.ptr("pos", pos, any);
  a.ptr("slot", slot, any);
}

void check_sample(const Backend& be, const int32_t* tokens_out, const float* logits, int B, int V, bool cfg,
                  float cfg_scale, float temperature, int top_k, float top_p, bool greedy, const float* uniforms) {
  Args a{be, Op::sample};
  a.count("B", B);
  a.dim("V", V);
  a.numel("(cfg ? 2B : B)*V (logits)", {cfg ? 2 * static_cast<int64_t>(B) : B, V});
  if (cfg) a.finite("cfg_scale", cfg_scale);
  if (!greedy) {
    a.positive("temperature", temperature);
    a.count("top_k", top_k);
    if (!(top_p > 0.f && top_p <= 1.f)) a.fail("a number in (0, 1]", "top_p", fnum(top_p));
    if (B > 0 && !uniforms) a.fail("uniforms in [0, 1) (host memory, B of them) unless greedy", "uniforms", "null");
    for (int b = 0; b < B; b++)
      if (!(uniforms[b] >= 0.f && uniforms[b] < 1.f))
        a.fail("a number in [0, 1)", "uniforms[" + num(b) + "]", fnum(uniforms[b]));
  }
  a.host_ptr("tokens_out", tokens_out, B > 0);
  a.ptr("logits", logits, B > 0);
}

void check_conv2d(const Backend& be, const float* out, const float* inp, Weight w, int B, int Cin, int H, int W,
                  int Cout, int kh, int kw, int sh, int sw, int ph, int pw) {
  Args a{be, Op::conv2d};
  a.dim("B", B);
  a.dim("Cin", Cin);
  a.dim("H", H);
  a.dim("W", W);
  a.dim("Cout", Cout);
  a.dim("kh", kh);
  a.dim("kw", kw);
  a.dim("stride_h", sh);
  a.dim("stride_w", sw);
  a.count("pad_h", ph);
  a.count("pad_w", pw);
  const int64_t Hp = static_cast<int64_t>(H) + 2 * static_cast<int64_t>(ph);
  const int64_t Wp = static_cast<int64_t>(W) + 2 * static_cast<int64_t>(pw);
  if (Hp < kh || Wp < kw)
    a.fail("an input that covers the " + num(kh) + "x" + num(kw) + " kernel with padding " + num(ph) + "x" + num(pw),
           "H x W", num(H) + "x" + num(W));
  const int64_t Ho = (Hp - kh) / sh + 1, Wo = (Wp - kw) / sw + 1;
  a.dtype(w.dtype);
  a.fits_int("Cin*kh*kw", {Cin, kh, kw});
  a.numel("B*Cin*H*W (inp)", {B, Cin, H, W});
  a.numel("B*Cout*Ho*Wo (out)", {B, Cout, Ho, Wo});
  a.numel("Cout*Cin*kh*kw (w)", {Cout, Cin, kh, kw}, static_cast<int64_t>(dtype_size(w.dtype)));
  a.ptr("w.data", w.data);
  a.ptr("out", out);
  a.ptr("inp", inp);
}

void check_groupnorm(const Backend& be, const float* out, const float* inp, const float* weight, const float* bias,
                     int B, int C, int64_t HW, int G, float eps) {
  Args a{be, Op::groupnorm};
  a.count("B", B);
  a.dim("C", C);
  a.dim("HW", HW);
  a.dim("G", G);
  a.multiple("C", C, "G", G);
  a.positive("eps", eps);
  a.numel("B*C*HW", {B, C, HW});
  a.ptr("out", out, B > 0);
  a.ptr("inp", inp, B > 0);
  a.ptr("weight", weight, B > 0);
  a.ptr("bias", bias, B > 0);
}

void check_resample(const Backend& be, Op op, const float* out, const float* inp, int B, int C, int H, int W) {
  Args a{be, op};
  a.count("B", B);
  a.dim("C", C);
  a.dim("H", H);
  a.dim("W", W);
  a.numel("B*C*(2H)*(2W)", {B, C, 2 * static_cast<int64_t>(H), 2 * static_cast<int64_t>(W)});
  a.ptr("out", out, B > 0);
  a.ptr("inp", inp, B > 0);
}

void check_pool(const Backend& be, Op op, const float* out, const float* inp, int B, int C, int H, int W, int k,
                int stride, int pad) {
  Args a{be, op};
  a.count("B", B);
  a.dim("C", C);
  a.dim("H", H);
  a.dim("W", W);
  a.dim("k", k);
  a.dim("stride", stride);
  a.in_range("pad", pad, 0, k - 1);  // every window touches the image
  a.at_least("H + 2*pad", static_cast<int64_t>(H) + 2 * pad, k);
  a.at_least("W + 2*pad", static_cast<int64_t>(W) + 2 * pad, k);
  a.numel("B*C*H*W (inp)", {B, C, H, W});
  a.ptr("out", out, B > 0);
  a.ptr("inp", inp, B > 0);
}

void check_copy_channels(const Backend& be, const float* dst, int Cdst, int dst_off, const float* src, int Csrc,
                         int src_off, int B, int C, int64_t HW) {
  Args a{be, Op::copy_channels};
  a.count("B", B);
  a.count("C", C);
  a.count("HW", HW);
  a.dim("Cdst", Cdst);
  a.dim("Csrc", Csrc);
  a.at_most("C", C, "Cdst", Cdst);
  a.at_most("C", C, "Csrc", Csrc);
  a.in_range("dst_off", dst_off, 0, static_cast<int64_t>(Cdst) - C);
  a.in_range("src_off", src_off, 0, static_cast<int64_t>(Csrc) - C);
  a.numel("B*Cdst*HW (dst)", {B, Cdst, HW});
  a.numel("B*Csrc*HW (src)", {B, Csrc, HW});
  const bool any = B > 0 && C > 0 && HW > 0;
  a.ptr("dst", dst, any);
  a.ptr("src", src, any);
}

void check_conv3x3_fused(const Backend& be, const float* out, const float* inp, Weight w, int B, int Cin, int H,
                         int W, int Cout, const float* gn_weight, const float* gn_bias, int G, float eps,
                         bool upsample2x) {
  Args a{be, Op::conv3x3_fused};
  a.dim("B", B);
  a.dim("Cin", Cin);
  a.dim("H", H);
  a.dim("W", W);
  a.dim("Cout", Cout);
  if (upsample2x) {
    a.even("H", H, "upsample2x: the output is twice the input");
    a.even("W", W, "upsample2x: the output is twice the input");
  }
  if (gn_weight) {
    a.dim("G", G);
    a.multiple("Cin", Cin, "G", G);
    a.positive("eps", eps);
    a.ptr("gn_bias", gn_bias);
  }
  a.dtype(w.dtype);
  a.fits_int("Cin*3*3", {Cin, 9});
  a.numel("B*Cin*H*W (inp)", {B, Cin, H, W});
  a.numel("B*Cout*H*W (out)", {B, Cout, H, W});
  a.numel("Cout*Cin*3*3 (w)", {Cout, Cin, 9}, static_cast<int64_t>(dtype_size(w.dtype)));
  a.ptr("w.data", w.data);
  a.ptr("out", out);
  a.ptr("inp", inp);
  if (inp == out) a.fail("an input buffer other than out (only residual may alias out)", "inp", "out");
}

void check_codebook(const Backend& be, Op op, const void* dst, const char* dst_name, const void* src,
                    const char* src_name, const float* codebook, int B, int Cz, int64_t HW, int K) {
  Args a{be, op};
  a.count("B", B);
  a.dim("Cz", Cz);
  a.count("HW", HW);
  if (op == Op::codebook_nearest) a.dim("K", K);
  a.numel("B*Cz*HW", {B, Cz, HW});
  const bool any = B > 0 && HW > 0;
  a.ptr(dst_name, dst, any);
  a.ptr(src_name, src, any);
  a.ptr("codebook", codebook, any);
}

void check_linear_backward(const Backend& be, const float* dinp, const float* dweight, const float* dout,
                           const float* inp, const float* weight, int64_t M, int N, int K) {
  Args a{be, Op::linear_backward};
  a.count("M", M);
  a.dim("N", N);
  a.dim("K", K);
  a.dtype(DType::F32);
  a.numel("M*K (inp)", {M, K});
  a.numel("M*N (dout)", {M, N});
  a.numel("N*K (weight)", {N, K});
  a.ptr("dout", dout, M > 0);
  a.ptr("weight (for dinp)", weight, M > 0 && dinp);
  a.ptr("inp (for dweight)", inp, M > 0 && dweight);
}

void check_layernorm_modulate_backward(const Backend& be, const float* dinp, const float* dout, const float* inp,
                                       int64_t mod_stride, int64_t rows, int C, float eps) {
  Args a{be, Op::layernorm_modulate_backward};
  a.rows_of(rows, "C", C);
  a.count("mod_stride", mod_stride);
  a.positive("eps", eps);
  a.dtype(DType::F32);
  a.ptr("dinp", dinp, rows > 0);
  a.ptr("dout", dout, rows > 0);
  a.ptr("inp", inp, rows > 0);
}

void check_gated_residual_backward(const Backend& be, const float* dy, const float* dgate, const float* dx,
                                   const float* y, const float* gate, int64_t mod_stride, int64_t rows, int C) {
  Args a{be, Op::gated_residual_backward};
  a.rows_of(rows, "C", C);
  a.count("mod_stride", mod_stride);
  a.dtype(DType::F32);
  a.ptr("dy", dy, rows > 0);
  a.ptr("dx", dx, rows > 0);
  a.ptr("gate", gate, rows > 0);
  a.ptr("y (for dgate)", y, rows > 0 && dgate);
}

void check_train_attention(const Backend& be, Op op, const void* grad_out, const char* grad_out_name, const float* lse,
                           const float* qkv, const float* dout, const float* out, int B, int T, int H, int D, float eps,
                           float p_drop) {
  Args a{be, op};
  a.dim("B", B);
  a.dim("T", T);
  check_heads(a, H, D, eps);
  a.unit_interval("p_drop", p_drop);
  a.dtype(DType::F32);
  a.numel("B*T*3*H*D (qkv)", {B, T, 3, H, D});
  a.numel("B*H*T*T (dropout mask indices)", {B, H, T, T});
  a.ptr(grad_out_name, grad_out);
  a.ptr("lse", lse);
  a.ptr("qkv", qkv);
  if (op == Op::attention_backward) {
    a.ptr("dout", dout);
    a.ptr("out", out);
  }
}

void check_cross_entropy(const Backend& be, const float* dlogits, const float* logits, const int32_t* targets,
                         int64_t rows, int V) {
  Args a{be, Op::cross_entropy};
  a.rows_of(rows, "V", V);
  a.dtype(DType::F32);
  a.ptr("dlogits", dlogits, rows > 0);
  a.ptr("logits", logits, rows > 0);
  a.ptr("targets", targets, rows > 0);
}

void check_adamw(const Backend& be, const float* param, const float* grad, const float* m, const float* v, int64_t n,
                 float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
  Args a{be, Op::adamw};
  a.count("n", n);
  a.dim("step", step);
  a.non_negative("lr", lr);
  a.unit_interval("beta1", beta1);
  a.unit_interval("beta2", beta2);
  a.positive("eps", eps);
  a.non_negative("weight_decay", weight_decay);
  a.finite("grad_scale", grad_scale);
  a.dtype(DType::F32);
  a.numel("n", {n});
  a.ptr("param", param, n > 0);
  a.ptr("grad", grad, n > 0);
  a.ptr("m", m, n > 0);
  a.ptr("v", v, n > 0);
}

void check_event(const Backend& be, Op op, const Event* e) {
  if (!e) Args{be, op}.fail("an event from event_create()", "e", "null");
}

}  // namespace

// ---------------- the public ops: check, then the backend's _impl ----------------

void Backend::upload(void* dst, const void* host_src, size_t bytes) {
  check_copy(*this, Op::upload, dst, host_src, bytes, false, true);
  upload_impl(dst, host_src, bytes);
}
void Backend::download(void* host_dst, const void* src, size_t bytes) {
  check_copy(*this, Op::download, host_dst, src, bytes, true, false);
  download_impl(host_dst, src, bytes);
}
void Backend::copy(void* dst, const void* src, size_t bytes) {
  check_copy(*this, Op::copy, dst, src, bytes, false, false);
  copy_impl(dst, src, bytes);
}
void Backend::fill(float* dst, float value, int64_t n) {
  check_fill(*this, dst, n);
  fill_impl(dst, value, n);
}
Weight Backend::upload_weight(const float* host, int64_t n, DType dtype) {
  check_upload_weight(*this, host, n, dtype);
  return upload_weight_impl(host, n, dtype);
}

void Backend::linear(float* out, const float* inp, Weight w, const float* bias, int64_t M, int N, int K,
                     bool accumulate) {
  check_linear(*this, out, inp, w, M, N, K);
  linear_impl(out, inp, w, bias, M, N, K, accumulate);
}

void Backend::layernorm(float* out, const float* inp, const float* weight, const float* bias, int64_t rows, int C,
                        float eps) {
  check_layernorm(*this, Op::layernorm, out, inp, 0, rows, C, eps);
  Args{*this, Op::layernorm}.dtype(DType::F32);
  layernorm_impl(out, inp, weight, bias, rows, C, eps);
}
void Backend::layernorm_modulate(float* out, const float* inp, const float* ln_weight, const float* ln_bias,
                                 const float* shift, const float* scale, int64_t mod_stride, const int32_t* row_map,
                                 int64_t rows, int C, float eps) {
  check_layernorm(*this, Op::layernorm_modulate, out, inp, mod_stride, rows, C, eps);
  Args{*this, Op::layernorm_modulate}.dtype(DType::F32);
  layernorm_modulate_impl(out, inp, ln_weight, ln_bias, shift, scale, mod_stride, row_map, rows, C, eps);
}
void Backend::gated_residual(float* x, const float* y, const float* gate, int64_t mod_stride, const int32_t* row_map,
                             int64_t rows, int C) {
  check_gated_residual(*this, x, y, gate, mod_stride, rows, C);
  Args{*this, Op::gated_residual}.dtype(DType::F32);
  gated_residual_impl(x, y, gate, mod_stride, row_map, rows, C);
}
void Backend::gelu(float* out, const float* inp, int64_t n) {
  check_elementwise(*this, Op::gelu, out, "out", inp, "inp", nullptr, nullptr, n);
  Args{*this, Op::gelu}.dtype(DType::F32);
  gelu_impl(out, inp, n);
}
void Backend::silu(float* out, const float* inp, int64_t n) {
  check_elementwise(*this, Op::silu, out, "out", inp, "inp", nullptr, nullptr, n);
  Args{*this, Op::silu}.dtype(DType::F32);
  silu_impl(out, inp, n);
}
void Backend::add(float* out, const float* a, const float* b, int64_t n) {
  check_elementwise(*this, Op::add, out, "out", a, "a", b, "b", n);
  Args{*this, Op::add}.dtype(DType::F32);
  add_impl(out, a, b, n);
}

void Backend::embedding(float* out, const float* table, const int32_t* ids, int64_t rows, int C, bool accumulate) {
  check_embedding(*this, Op::embedding, out, "out", table, "table", ids, rows, C);
  Args{*this, Op::embedding}.dtype(DType::F32);
  embedding_impl(out, table, ids, rows, C, accumulate);
}

void Backend::attention(float* out, void* kcache, void* vcache, DType cache_dtype, const float* qkv,
                        const float* q_norm_w, const float* q_norm_b, const float* k_norm_w, const float* k_norm_b,
                        int R, int Tn, const int32_t* pos, const int32_t* slot, int slots, int Tcache, int H, int D,
                        float eps) {
  check_attention(*this, out, kcache, vcache, cache_dtype, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, R, Tn, pos,
                  slot, slots, Tcache, H, D, eps);
  attention_impl(out, kcache, vcache, cache_dtype, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, R, Tn, pos, slot,
                 slots, Tcache, H, D, eps);
}

void Backend::sample(int32_t* tokens_out, const float* logits, int B, int V, bool cfg, float cfg_scale,
                     float temperature, int top_k, float top_p, bool greedy, const float* uniforms) {
  check_sample(*this, tokens_out, logits, B, V, cfg, cfg_scale, temperature, top_k, top_p, greedy, uniforms);
  Args{*this, Op::sample}.dtype(DType::F32);
  sample_impl(tokens_out, logits, B, V, cfg, cfg_scale, temperature, top_k, top_p, greedy, uniforms);
}

void Backend::conv2d(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
                     int Cout, int kh, int kw, int stride_h, int stride_w, int pad_h, int pad_w) {
  check_conv2d(*this, out, inp, w, B, Cin, H, W, Cout, kh, kw, stride_h, stride_w, pad_h, pad_w);
  conv2d_impl(out, inp, w, bias, B, Cin, H, W, Cout, kh, kw, stride_h, stride_w, pad_h, pad_w);
}
void Backend::groupnorm(float* out, const float* inp, const float* weight, const float* bias, int B, int C,
                        int64_t HW, int G, float eps, bool silu_after) {
  check_groupnorm(*this, out, inp, weight, bias, B, C, HW, G, eps);
  Args{*this, Op::groupnorm}.dtype(DType::F32);
  groupnorm_impl(out, inp, weight, bias, B, C, HW, G, eps, silu_after);
}
void Backend::upsample_nearest2x(float* out, const float* inp, int B, int C, int H, int W) {
  check_resample(*this, Op::upsample_nearest2x, out, inp, B, C, H, W);
  Args{*this, Op::upsample_nearest2x}.dtype(DType::F32);
  upsample_nearest2x_impl(out, inp, B, C, H, W);
}
void Backend::conv3x3_fused(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H, int W,
                            int Cout, const float* gn_weight, const float* gn_bias, int G, float eps, bool silu,
                            bool upsample2x, const float* residual) {
  check_conv3x3_fused(*this, out, inp, w, B, Cin, H, W, Cout, gn_weight, gn_bias, G, eps, upsample2x);
  conv3x3_fused_impl(out, inp, w, bias, B, Cin, H, W, Cout, gn_weight, gn_bias, G, eps, silu, upsample2x, residual);
}
void Backend::avgpool2x2(float* out, const float* inp, int B, int C, int H, int W) {
  check_resample(*this, Op::avgpool2x2, out, inp, B, C, H, W);
  Args{*this, Op::avgpool2x2}.dtype(DType::F32);
  avgpool2x2_impl(out, inp, B, C, H, W);
}
void Backend::relu(float* out, const float* inp, int64_t n) {
  check_elementwise(*this, Op::relu, out, "out", inp, "inp", nullptr, nullptr, n);
  Args{*this, Op::relu}.dtype(DType::F32);
  relu_impl(out, inp, n);
}
void Backend::maxpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad) {
  check_pool(*this, Op::maxpool2d, out, inp, B, C, H, W, k, stride, pad);
  Args{*this, Op::maxpool2d}.dtype(DType::F32);
  maxpool2d_impl(out, inp, B, C, H, W, k, stride, pad);
}
void Backend::avgpool2d(float* out, const float* inp, int B, int C, int H, int W, int k, int stride, int pad,
                        bool count_include_pad) {
  check_pool(*this, Op::avgpool2d, out, inp, B, C, H, W, k, stride, pad);
  Args{*this, Op::avgpool2d}.dtype(DType::F32);
  avgpool2d_impl(out, inp, B, C, H, W, k, stride, pad, count_include_pad);
}
void Backend::copy_channels(float* dst, int Cdst, int dst_off, const float* src, int Csrc, int src_off, int B, int C,
                            int64_t HW, bool relu) {
  check_copy_channels(*this, dst, Cdst, dst_off, src, Csrc, src_off, B, C, HW);
  Args{*this, Op::copy_channels}.dtype(DType::F32);
  copy_channels_impl(dst, Cdst, dst_off, src, Csrc, src_off, B, C, HW, relu);
}
void Backend::codebook_nearest(int32_t* tokens, const float* z, const float* codebook, int B, int Cz, int64_t HW,
                               int K) {
  check_codebook(*this, Op::codebook_nearest, tokens, "tokens", z, "z", codebook, B, Cz, HW, K);
  Args{*this, Op::codebook_nearest}.dtype(DType::F32);
  codebook_nearest_impl(tokens, z, codebook, B, Cz, HW, K);
}
void Backend::codebook_lookup(float* out, const int32_t* tokens, const float* codebook, int B, int Cz, int64_t HW) {
  check_codebook(*this, Op::codebook_lookup, out, "out", tokens, "tokens", codebook, B, Cz, HW, 1);
  Args{*this, Op::codebook_lookup}.dtype(DType::F32);
  codebook_lookup_impl(out, tokens, codebook, B, Cz, HW);
}

// The default fused 3x3 convolution: the plain public ops, with temporaries.
void Backend::conv3x3_fused_impl(float* out, const float* inp, Weight w, const float* bias, int B, int Cin, int H,
                                 int W, int Cout, const float* gn_weight, const float* gn_bias, int G, float eps,
                                 bool silu, bool upsample2x, const float* residual) {
  struct Tmp {  // freed on every exit, exceptions included
    Backend* be;
    float* p = nullptr;
    float* get(size_t n) { return p = static_cast<float*>(be->alloc(n * 4)); }
    ~Tmp() {
      if (p) be->free(p);
    }
  } t_norm{this}, t_up{this}, t_out{this};
  const int Hi = upsample2x ? H / 2 : H, Wi = upsample2x ? W / 2 : W;
  const float* x = inp;
  if (gn_weight) {
    float* y = t_norm.get(static_cast<size_t>(B) * Cin * Hi * Wi);
    groupnorm(y, x, gn_weight, gn_bias, B, Cin, static_cast<int64_t>(Hi) * Wi, G, eps, silu);
    x = y;
  }
  if (upsample2x) {
    float* y = t_up.get(static_cast<size_t>(B) * Cin * H * W);
    upsample_nearest2x(y, x, B, Cin, Hi, Wi);
    x = y;
  }
  if (!residual) {
    conv2d(out, x, w, bias, B, Cin, H, W, Cout, 3, 3, 1, 1, 1, 1);
    return;
  }
  const int64_t n = static_cast<int64_t>(B) * Cout * H * W;
  float* y = t_out.get(static_cast<size_t>(n));
  conv2d(y, x, w, bias, B, Cin, H, W, Cout, 3, 3, 1, 1, 1, 1);
  add(out, residual, y, n);
}

// ---------------- events ----------------

// A synchronous backend's event: nothing to record or wait for, so one shared non-null
// handle (Event stays incomplete: a backend's events are its own handles, cast, e.g.
// cudaEvent_t); event_destroy is a no-op by default, so it is never freed.
namespace {
char g_sync_event;
}
Event* Backend::event_create_impl() { return reinterpret_cast<Event*>(&g_sync_event); }
void Backend::event_record(Event* e) {
  check_event(*this, Op::event_record, e);
  event_record_impl(e);
}
void Backend::event_synchronize(Event* e) {
  check_event(*this, Op::event_synchronize, e);
  event_synchronize_impl(e);
}

// ---------------- training ----------------

void Backend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                              const float* weight, int64_t M, int N, int K, bool accumulate_dinp) {
  check_linear_backward(*this, dinp, dweight, dout, inp, weight, M, N, K);
  linear_backward_impl(dinp, dweight, dbias, dout, inp, weight, M, N, K, accumulate_dinp);
}
void Backend::layernorm_modulate_backward(float* dinp, float* dln_w, float* dln_b, float* dshift, float* dscale,
                                          const float* dout, const float* inp, const float* ln_w, const float* ln_b,
                                          const float* scale, int64_t mod_stride, const int32_t* row_map,
                                          int64_t rows, int C, float eps) {
  check_layernorm_modulate_backward(*this, dinp, dout, inp, mod_stride, rows, C, eps);
  layernorm_modulate_backward_impl(dinp, dln_w, dln_b, dshift, dscale, dout, inp, ln_w, ln_b, scale, mod_stride,
                                   row_map, rows, C, eps);
}
void Backend::gated_residual_backward(float* dy, float* dgate, const float* dx, const float* y, const float* gate,
                                      int64_t mod_stride, const int32_t* row_map, int64_t rows, int C) {
  check_gated_residual_backward(*this, dy, dgate, dx, y, gate, mod_stride, rows, C);
  gated_residual_backward_impl(dy, dgate, dx, y, gate, mod_stride, row_map, rows, C);
}
void Backend::gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  check_elementwise(*this, Op::gelu_backward, dinp, "dinp", dout, "dout", inp, "inp", n);
  Args{*this, Op::gelu_backward}.dtype(DType::F32);
  gelu_backward_impl(dinp, dout, inp, n);
}
void Backend::silu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  check_elementwise(*this, Op::silu_backward, dinp, "dinp", dout, "dout", inp, "inp", n);
  Args{*this, Op::silu_backward}.dtype(DType::F32);
  silu_backward_impl(dinp, dout, inp, n);
}
void Backend::dropout(float* x, int64_t n, float p, uint64_t seed, uint64_t site) {
  Args a{*this, Op::dropout};
  a.count("n", n);
  a.unit_interval("p", p);
  a.dtype(DType::F32);
  a.numel("n", {n});
  a.ptr("x", x, n > 0);
  dropout_impl(x, n, p, seed, site);
}
void Backend::attention_train_forward(float* out, float* lse, const float* qkv, const float* q_norm_w,
                                      const float* q_norm_b, const float* k_norm_w, const float* k_norm_b, int B,
                                      int T, int H, int D, float eps, float p_drop, uint64_t seed, uint64_t site) {
  check_train_attention(*this, Op::attention_train_forward, out, "out", lse, qkv, nullptr, nullptr, B, T, H, D, eps,
                        p_drop);
  attention_train_forward_impl(out, lse, qkv, q_norm_w, q_norm_b, k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed,
                               site);
}
void Backend::attention_backward(float* dqkv, float* dq_norm_w, float* dq_norm_b, float* dk_norm_w, float* dk_norm_b,
                                 const float* dout, const float* out, const float* lse, const float* qkv,
                                 const float* q_norm_w, const float* q_norm_b, const float* k_norm_w,
                                 const float* k_norm_b, int B, int T, int H, int D, float eps, float p_drop,
                                 uint64_t seed, uint64_t site) {
  check_train_attention(*this, Op::attention_backward, dqkv, "dqkv", lse, qkv, dout, out, B, T, H, D, eps, p_drop);
  attention_backward_impl(dqkv, dq_norm_w, dq_norm_b, dk_norm_w, dk_norm_b, dout, out, lse, qkv, q_norm_w, q_norm_b,
                          k_norm_w, k_norm_b, B, T, H, D, eps, p_drop, seed, site);
}
void Backend::embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t rows, int C) {
  check_embedding(*this, Op::embedding_backward, dtable, "dtable", dout, "dout", ids, rows, C);
  Args{*this, Op::embedding_backward}.dtype(DType::F32);
  embedding_backward_impl(dtable, dout, ids, rows, C);
}
void Backend::cross_entropy(float* dlogits, float* losses, int32_t* correct, const float* logits,
                            const int32_t* targets, int64_t rows, int V, float grad_scale) {
  check_cross_entropy(*this, dlogits, logits, targets, rows, V);
  Args{*this, Op::cross_entropy}.finite("grad_scale", grad_scale);
  cross_entropy_impl(dlogits, losses, correct, logits, targets, rows, V, grad_scale);
}
double Backend::sum_squares(const float* x, int64_t n) {
  check_elementwise(*this, Op::sum_squares, x, "x", x, "x", nullptr, nullptr, n);
  Args{*this, Op::sum_squares}.dtype(DType::F32);
  return sum_squares_impl(x, n);
}
void Backend::adamw(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
  check_adamw(*this, param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, step);
  adamw_impl(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, step);
}

// The training defaults: a backend without them answers false in supports(), so the
// wrapper throws before getting here; these say the same if supports() claims them.
void Backend::linear_backward_impl(float*, float*, float*, const float*, const float*, const float*, int64_t, int,
                                   int, bool) {
  unsupported(Op::linear_backward, DType::F32);
}
void Backend::layernorm_modulate_backward_impl(float*, float*, float*, float*, float*, const float*, const float*,
                                               const float*, const float*, const float*, int64_t, const int32_t*,
                                               int64_t, int, float) {
  unsupported(Op::layernorm_modulate_backward, DType::F32);
}
void Backend::gated_residual_backward_impl(float*, float*, const float*, const float*, const float*, int64_t,
                                           const int32_t*, int64_t, int) {
  unsupported(Op::gated_residual_backward, DType::F32);
}
void Backend::gelu_backward_impl(float*, const float*, const float*, int64_t) {
  unsupported(Op::gelu_backward, DType::F32);
}
void Backend::silu_backward_impl(float*, const float*, const float*, int64_t) {
  unsupported(Op::silu_backward, DType::F32);
}
void Backend::dropout_impl(float*, int64_t, float, uint64_t, uint64_t) { unsupported(Op::dropout, DType::F32); }
void Backend::attention_train_forward_impl(float*, float*, const float*, const float*, const float*, const float*,
                                           const float*, int, int, int, int, float, float, uint64_t, uint64_t) {
  unsupported(Op::attention_train_forward, DType::F32);
}
void Backend::attention_backward_impl(float*, float*, float*, float*, float*, const float*, const float*,
                                      const float*, const float*, const float*, const float*, const float*,
                                      const float*, int, int, int, int, float, float, uint64_t, uint64_t) {
  unsupported(Op::attention_backward, DType::F32);
}
void Backend::embedding_backward_impl(float*, const float*, const int32_t*, int64_t, int) {
  unsupported(Op::embedding_backward, DType::F32);
}
void Backend::cross_entropy_impl(float*, float*, int32_t*, const float*, const int32_t*, int64_t, int, float) {
  unsupported(Op::cross_entropy, DType::F32);
}
double Backend::sum_squares_impl(const float*, int64_t) { unsupported(Op::sum_squares, DType::F32); }
void Backend::adamw_impl(float*, const float*, float*, float*, int64_t, float, float, float, float, float, float,
                         int64_t) {
  unsupported(Op::adamw, DType::F32);
}

}  // namespace rargen
