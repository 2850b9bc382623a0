// Multi-process (data-parallel) support over MPI: the N-API functions distInit,
// distAllreduce, distAllgather, distFinalize (lib/train/dist.ts wraps
// them) and the float all-reduce that binding_train.cc's trainAllreduceGrads uses.
//
// MPI is opened with dlopen at run time, never linked: the addon must load on a
// machine without MPI. We include no mpi.h either (so the build needs no MPI headers)
// and declare the handful of prototypes by hand. That ties us to one ABI: Open MPI's,
// whose handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are the addresses of global
// objects (ompi_mpi_comm_world, ompi_mpi_float, ompi_mpi_op_sum, ...) found with dlsym.
// MPICH and its derivatives use integer handles instead; they are detected (no
// ompi_mpi_comm_world symbol) and refused with a message. Open MPI loads its
// components as plugins that resolve symbols of libmpi itself, so it must be opened
// RTLD_GLOBAL.
//
// All MPI calls happen on the JS main thread (MPI_THREAD_FUNNELED).
#include <dlfcn.h>
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/mpi.h"
#include "napi_util.h"

namespace {

using Handle = void*;  // MPI_Comm, MPI_Datatype, MPI_Op: pointers in Open MPI

struct Mpi {
  void* lib = nullptr;
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Comm_rank)(Handle, int*) = nullptr;
  int (*Comm_size)(Handle, int*) = nullptr;
  int (*Allreduce)(const void*, void*, int, Handle, Handle, Handle) = nullptr;
  int (*Allgather)(const void*, int, Handle, void*, int, Handle, Handle) = nullptr;
  int (*Finalize)() = nullptr;
  Handle comm_world = nullptr, t_float = nullptr, t_double = nullptr, t_byte = nullptr, op_sum = nullptr,
         op_max = nullptr;
  bool up = false;
  int rank = 0, size = 1;
};
Mpi g;

constexpr int kThreadFunneled = 1;  // Open MPI's MPI_THREAD_FUNNELED
constexpr int kSuccess = 0;         // MPI_SUCCESS
const char* kInstall =
    "install Open MPI (Debian/Ubuntu: `apt-get install openmpi-bin libopenmpi-dev`; Fedora: `dnf install openmpi`) "
    "and launch with `mpirun -np N rargen train ...`";

void check(int rc, const char* what) {
  if (rc != kSuccess) throw std::runtime_error(std::string("rargen: ") + what + " failed (MPI error code " + std::to_string(rc) + ")");
}

template <class F>
void sym(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(g.lib, name));
  if (!f) throw std::runtime_error(std::string("rargen: the MPI library has no symbol ") + name + "; " + kInstall);
}
Handle obj(const char* name) {
  void* p = dlsym(g.lib, name);
  if (!p) throw std::runtime_error(std::string("rargen: the MPI library has no symbol ") + name);
  return p;
}

void open_mpi() {
  if (g.lib) return;
  std::string errs;
  const char* env = std::getenv("RARGEN_MPI_LIB");
  std::vector<std::string> names;
  if (env && *env) {
    names.push_back(env);  // exactly this library
  } else {
    names.push_back("libmpi.so.40");
    names.push_back("libmpi.so");
  }
  for (const auto& n : names) {
    g.lib = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (g.lib) break;
    const char* e = dlerror();
    errs += "\n  " + n + ": " + (e ? e : "not found");
  }
  if (!g.lib) throw std::runtime_error(std::string("rargen: cannot load the MPI library (Open MPI's libmpi.so.40):") + errs + "\n" + kInstall);
  if (!dlsym(g.lib, "ompi_mpi_comm_world")) {
    dlclose(g.lib);
    g.lib = nullptr;
    throw std::runtime_error(
        "rargen: the MPI library found is not Open MPI (no ompi_mpi_comm_world symbol; MPICH, Intel MPI and MVAPICH "
        "are not supported yet); " + std::string(kInstall) + " (or point RARGEN_MPI_LIB at Open MPI's libmpi.so.40)");
  }
  sym(g.Init_thread, "MPI_Init_thread");
  sym(g.Initialized, "MPI_Initialized");
  sym(g.Finalized, "MPI_Finalized");
  sym(g.Comm_rank, "MPI_Comm_rank");
  sym(g.Comm_size, "MPI_Comm_size");
  sym(g.Allreduce, "MPI_Allreduce");
  sym(g.Allgather, "MPI_Allgather");
  sym(g.Finalize, "MPI_Finalize");
  g.comm_world = obj("ompi_mpi_comm_world");
  g.t_float = obj("ompi_mpi_float");
  g.t_double = obj("ompi_mpi_double");
  g.t_byte = obj("ompi_mpi_byte");
  g.op_sum = obj("ompi_mpi_op_sum");
  g.op_max = obj("ompi_mpi_op_max");
}

void require_up(const char* fn) {
  if (!g.up) throw std::runtime_error(std::string("rargen: ") + fn + ": MPI is not initialised (call distInit first)");
}

// Buckets of at most 1<<24 elements: MPI counts are int, and smaller messages let
// the library pipeline.
constexpr int64_t kBucket = int64_t(1) << 24;

template <class T>
void allreduce_inplace(T* data, int64_t n, Handle type, Handle op, const char* what) {
  std::vector<T> tmp(static_cast<size_t>(n < kBucket ? n : kBucket));
  for (int64_t off = 0; off < n; off += kBucket) {
    const int c = static_cast<int>(n - off < kBucket ? n - off : kBucket);
    check(g.Allreduce(data + off, tmp.data(), c, type, op, g.comm_world), what);
    std::memcpy(data + off, tmp.data(), sizeof(T) * static_cast<size_t>(c));
  }
}

using namespace rargen::napi;

Napi::Value DistInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g.up) {
    // Only inside a job that an MPI launcher started: MPI_Init in a plain process would
    // start an Open MPI "singleton" (and a stray call from user code must not do that).
    const char* const launched[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    bool any = false;
    for (const char* v : launched) any = any || (std::getenv(v) && *std::getenv(v));
    if (!any)
      throw std::runtime_error(
          "rargen: distInit: this process was not started by mpirun (no OMPI_COMM_WORLD_SIZE / PMIX_RANK in its "
          "environment); launch data-parallel training with `mpirun -np N rargen train ...`");
    open_mpi();
    int inited = 0;
    check(g.Initialized(&inited), "MPI_Initialized");
    if (!inited) {
      int provided = 0;
      check(g.Init_thread(nullptr, nullptr, kThreadFunneled, &provided), "MPI_Init_thread");
    }
    check(g.Comm_rank(g.comm_world, &g.rank), "MPI_Comm_rank");
    check(g.Comm_size(g.comm_world, &g.size), "MPI_Comm_size");
    g.up = true;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", g.rank);
  o.Set("size", g.size);
  o.Set("library", "Open MPI");
  return o;
}

// distAllreduceSum(Float64Array, op?: 'sum' | 'max'): in place.
Napi::Value DistAllreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_up("distAllreduce");
  if (!is_typed_array(info[0], napi_float64_array)) type_error(env, "distAllreduce: data must be a Float64Array");
  std::string op = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  if (op != "sum" && op != "max") range_error(env, "distAllreduce: op must be 'sum' or 'max' but received '" + op + "'");
  Napi::Float64Array a = info[0].As<Napi::Float64Array>();
  allreduce_inplace(a.Data(), static_cast<int64_t>(a.ElementLength()), g.t_double, op == "sum" ? g.op_sum : g.op_max,
                    "MPI_Allreduce");
  return env.Undefined();
}

// distAllgather(Uint8Array of L bytes, the same L on every rank) -> Uint8Array(L * size).
Napi::Value DistAllgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_up("distAllgather");
  if (!is_typed_array(info[0], napi_uint8_array)) type_error(env, "distAllgather: data must be a Uint8Array");
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  const size_t L = a.ElementLength();
  if (L > (size_t(1) << 30)) range_error(env, "distAllgather: at most 1 GiB per rank");
  Napi::Uint8Array out = Napi::Uint8Array::New(env, L * static_cast<size_t>(g.size));
  check(g.Allgather(a.Data(), static_cast<int>(L), g.t_byte, out.Data(), static_cast<int>(L), g.t_byte, g.comm_world),
        "MPI_Allgather");
  return out;
}

Napi::Value DistFinalize(const Napi::CallbackInfo& info) {
  if (g.up) {
    int fin = 0;
    g.Finalized(&fin);
    if (!fin) check(g.Finalize(), "MPI_Finalize");
    g.up = false;
  }
  return info.Env().Undefined();
}

}  // namespace

namespace rargen::dist {

bool active() { return g.up; }
int rank() { return g.rank; }
int size() { return g.size; }
void allreduce_sum_f32(float* data, int64_t n) {
  require_up("allreduce");
  allreduce_inplace(data, n, g.t_float, g.op_sum, "MPI_Allreduce (gradients)");
}

}  // namespace rargen::dist

namespace rargen {

// Called from register_train (src/binding_train.cc).
void register_dist(Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, napi::guarded<DistInit>));
  exports.Set("distAllreduce", Napi::Function::New(env, napi::guarded<DistAllreduce>));
  exports.Set("distAllgather", Napi::Function::New(env, napi::guarded<DistAllgather>));
  exports.Set("distFinalize", Napi::Function::New(env, napi::guarded<DistFinalize>));
}

}  // namespace rargen
