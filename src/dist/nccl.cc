// NCCL for GPU ranks (src/dist/nccl.h). Compiled, not run: no multi-GPU machine has
// run this file yet; the CPU tests cover the library probe and its messages only.
//
// NCCL is dlopen'ed (libnccl.so.2, or RARGEN_NCCL_LIB); we include no nccl.h. The ABI
// used is NCCL 2's, stable since 2.0: ncclComm_t is a pointer, ncclUniqueId a struct
// of 128 bytes passed by value, the enums are ints (ncclFloat32 = 7, ncclAvg = 4 since
// NCCL 2.10; ncclSuccess = 0, ncclInProgress = 7). As in llm.c, rank 0 calls
// ncclGetUniqueId and broadcasts the id over MPI; every rank then calls
// ncclCommInitRank on its own device (the trainer's, cuda:$LOCAL_RANK, chosen by
// lib/dist.ts). The all-reduce runs on a stream of its own, in buckets: each bucket is
// begun once its gradients are final on the compute stream (an event recorded there
// with Backend::event_record, which NCCL's stream waits on with cudaStreamWaitEvent: no
// host synchronisation of the device), so the reduction of one bucket overlaps the
// compute that follows; finish() polls (cudaStreamQuery + ncclCommGetAsyncError)
// against the hang watch's deadline; on timeout the communicator is aborted and the
// job ended naming the missing ranks (src/binding_dist.cc). mean_grads is the one-call
// form: buckets of RARGEN_DIST_BUCKET_MB over the whole buffer, then finish.
#include "dist/nccl.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "dist/mpi.h"

#ifdef RARGEN_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rargen::dist::nccl {
namespace {

using Comm = void*;  // ncclComm_t
struct UniqueId {    // ncclUniqueId
  char internal[128];
};
constexpr int kSuccess = 0, kInProgress = 7;  // ncclResult_t
constexpr int kFloat32 = 7;                   // ncclDataType_t
constexpr int kAvg = 4;                       // ncclRedOp_t (NCCL >= 2.10)
constexpr int kMinVersion = 21000;            // 2.10.0: ncclAvg

struct Lib {
  void* h = nullptr;
  int (*GetVersion)(int*) = nullptr;
  int (*GetUniqueId)(UniqueId*) = nullptr;
  int (*CommInitRank)(Comm*, int, UniqueId, int) = nullptr;
  int (*AllReduce)(const void*, void*, size_t, int, int, Comm, void*) = nullptr;
  int (*GroupStart)() = nullptr;
  int (*GroupEnd)() = nullptr;
  int (*CommGetAsyncError)(Comm, int*) = nullptr;
  int (*CommAbort)(Comm) = nullptr;
  int (*CommDestroy)(Comm) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
  int version = 0;
};
Lib L;
Comm comm = nullptr;
[[maybe_unused]] void* stream = nullptr;  // cudaStream_t
[[maybe_unused]] int device = -1;
int64_t g_bucket_bytes = int64_t(25) << 20;
// The buckets begun and not yet finished: their events (destroyed by finish) and the
// start of the first (the hang watch's t0).
struct Pending {
  Backend* be = nullptr;
  std::vector<Event*> events;
  double t0 = 0;
};
[[maybe_unused]] Pending pending;

const char* kInstall =
    "install NCCL 2.10 or newer (Debian/Ubuntu with NVIDIA's CUDA repository: `apt-get install libnccl2`; pip: "
    "`pip install nvidia-nccl-cu12`, then RARGEN_NCCL_LIB=<site-packages>/nvidia/nccl/lib/libnccl.so.2; conda: "
    "`conda install -c nvidia nccl`), or set RARGEN_DIST_BACKEND=mpi to reduce GPU gradients through host memory over MPI "
    "(slower)";

template <class F>
void sym(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(L.h, name));
  if (!f) throw std::runtime_error(std::string("rargen: the NCCL library has no symbol ") + name + " (is it NCCL 2?); " + kInstall);
}

void open_lib() {
  if (L.h) return;
  const char* env = std::getenv("RARGEN_NCCL_LIB");
  std::vector<std::string> names;
  if (env && *env)
    names.push_back(env);
  else
    names = {"libnccl.so.2", "libnccl.so"};
  std::string errs;
  void* h = nullptr;
  for (const auto& n : names) {
    h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) break;
    const char* e = dlerror();
    errs += "\n  " + n + ": " + (e ? e : "not found");
  }
  if (!h) throw std::runtime_error("rargen: cannot load NCCL (libnccl.so.2), which GPU ranks use for the gradient all-reduce:" + errs + "\n" + kInstall);
  L.h = h;
  try {
    sym(L.GetVersion, "ncclGetVersion");
    sym(L.GetUniqueId, "ncclGetUniqueId");
    sym(L.CommInitRank, "ncclCommInitRank");
    sym(L.AllReduce, "ncclAllReduce");
    sym(L.GroupStart, "ncclGroupStart");
    sym(L.GroupEnd, "ncclGroupEnd");
    sym(L.CommGetAsyncError, "ncclCommGetAsyncError");
    sym(L.CommAbort, "ncclCommAbort");
    sym(L.CommDestroy, "ncclCommDestroy");
    sym(L.GetErrorString, "ncclGetErrorString");
    int v = 0;
    if (L.GetVersion(&v) != kSuccess) throw std::runtime_error("rargen: ncclGetVersion failed");
    if (v < kMinVersion)
      throw std::runtime_error("rargen: NCCL " + std::to_string(v) + " is too old (ncclAvg needs 2.10, version code 21000); " + kInstall);
    L.version = v;
  } catch (...) {
    dlclose(h);
    L = Lib{};
    throw;
  }
}

[[maybe_unused]] void check(int rc, const char* what) {
  if (rc != kSuccess && rc != kInProgress)
    throw std::runtime_error(std::string("rargen: ") + what + " failed: " + (L.GetErrorString ? L.GetErrorString(rc) : "NCCL error") +
                             " (ncclResult_t " + std::to_string(rc) + ")");
}

#ifdef RARGEN_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("rargen: ") + what + ": " + cudaGetErrorString(e));
}

int device_of(Backend& be) {
  const std::string n = be.name();  // "cuda:N"
  if (n.rfind("cuda:", 0) != 0) throw std::runtime_error("rargen: NCCL all-reduce on a backend that is not CUDA (" + n + ")");
  return std::atoi(n.c_str() + 5);
}

void init(Backend& be) {
  open_lib();
  device = device_of(be);
  cuda_check(cudaSetDevice(device), "cudaSetDevice (NCCL)");
  UniqueId id{};
  if (rargen::dist::rank() == 0) check(L.GetUniqueId(&id), "ncclGetUniqueId");
  rargen::dist::bcast_bytes(&id, sizeof id, 0, "broadcast of the NCCL unique id");
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate (NCCL)");
  stream = s;
  check(L.CommInitRank(&comm, rargen::dist::size(), id, rargen::dist::rank()), "ncclCommInitRank");
}
#endif

}  // namespace

int probe() {
  open_lib();
  return L.version;
}

bool built() {
#ifdef RARGEN_CUDA
  return true;
#else
  return false;
#endif
}

void set_bucket_bytes(int64_t bytes) { g_bucket_bytes = bytes; }
int64_t bucket_bytes() { return g_bucket_bytes; }
bool active() { return comm != nullptr; }

void begin_bucket(Backend& be, float* data, int64_t n) {
#ifdef RARGEN_CUDA
  if (!comm) init(be);
  if (pending.be && pending.be != &be)
    throw std::runtime_error("rargen: NCCL all-reduce: a bucket of another backend is still in flight (finish it first)");
  if (n <= 0) return;
  cuda_check(cudaSetDevice(device), "cudaSetDevice (NCCL)");
  // The gradients of this bucket are final once the compute stream reaches this point:
  // NCCL's stream waits for that, not the host for the whole device.
  Event* ev = be.event_create();
  try {
    be.event_record(ev);
    cuda_check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), reinterpret_cast<cudaEvent_t>(ev), 0),
               "cudaStreamWaitEvent (NCCL stream on the compute stream)");
  } catch (...) {
    be.event_destroy(ev);
    throw;
  }
  if (pending.events.empty()) pending.t0 = rargen::dist::begin_collective("NCCL all-reduce (gradients)");
  pending.be = &be;
  pending.events.push_back(ev);
  const int64_t per = std::max<int64_t>(1, g_bucket_bytes / 4);  // NCCL counts are size_t; RARGEN_DIST_BUCKET_MB caps
  check(L.GroupStart(), "ncclGroupStart");
  for (int64_t off = 0; off < n; off += per)
    check(L.AllReduce(data + off, data + off, static_cast<size_t>(std::min(per, n - off)), kFloat32, kAvg, comm, stream),
          "ncclAllReduce");
  check(L.GroupEnd(), "ncclGroupEnd");
#else
  (void)be;
  (void)data;
  (void)n;
  throw std::runtime_error("rargen: this build of the addon has no CUDA, so no NCCL all-reduce");
#endif
}

void finish(Backend& be) {
#ifdef RARGEN_CUDA
  if (pending.events.empty()) return;
  cuda_check(cudaSetDevice(device), "cudaSetDevice (NCCL)");
  auto s = static_cast<cudaStream_t>(stream);
  auto release = [&] {
    for (Event* e : pending.events) pending.be->event_destroy(e);
    pending = Pending{};
  };
  try {
    for (long it = 0;; ++it) {
      const cudaError_t q = cudaStreamQuery(s);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) cuda_check(q, "the NCCL all-reduce's stream");
      if ((it & 255) == 255) {
        int async = kSuccess;
        L.CommGetAsyncError(comm, &async);
        if (async != kSuccess && async != kInProgress) {
          L.CommAbort(comm);
          comm = nullptr;
          check(async, "ncclAllReduce (asynchronous error)");
        }
        // ends the job (MPI_Abort kills every rank, NCCL's threads included) once the deadline has passed
        rargen::dist::poll_watch(pending.t0);
      }
      if (it > 2000) sched_yield();
    }
  } catch (...) {
    release();
    throw;
  }
  release();
  (void)be;
#else
  (void)be;
#endif
}

void mean_grads(Backend& be, float* grads, int64_t n) {
  const int64_t per = std::max<int64_t>(1, g_bucket_bytes / 4);
  for (int64_t off = 0; off < n; off += per) begin_bucket(be, grads + off, std::min(per, n - off));
  finish(be);
}

void finalize() {
#ifdef RARGEN_CUDA
  if (comm) L.CommDestroy(comm);
  comm = nullptr;
  if (stream) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  stream = nullptr;
#endif
}

}  // namespace rargen::dist::nccl
