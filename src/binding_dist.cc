// Multi-process (data-parallel) support over MPI: the N-API functions distInit,
// distAllreduce, distAllgather, distGatherF32, distBarrier, distHeartbeat,
// distFinalize and distNcclProbe (lib/dist.ts wraps them), and the collectives that
// binding_train.cc's trainAllreduceGrads and src/dist/nccl.cc use (src/dist/mpi.h).
//
// MPI is opened with dlopen at run time, never linked: the addon must load on a
// machine without MPI. We include no mpi.h either (so the build needs no MPI headers)
// and declare the handful of prototypes by hand. That ties us to one ABI: Open MPI's,
// whose handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_Request...) are pointers, the
// predefined ones the addresses of global objects (ompi_mpi_comm_world, ompi_mpi_float,
// ompi_mpi_op_sum, ...) found with dlsym; MPI_IN_PLACE is (void*)1 and
// MPI_STATUS_IGNORE a null pointer. MPICH and its derivatives use integer handles
// instead; they are detected (no ompi_mpi_comm_world symbol) and refused with a
// message. Open MPI loads its components as plugins that resolve symbols of libmpi
// itself, so it must be opened RTLD_GLOBAL.
//
// Every collective is non-blocking and polled against a deadline (the hang watch of
// src/dist/mpi.h): Open MPI has no collective timeout, and a rank stopped by SIGSTOP,
// a deadlocked rank or a dead node would otherwise hang every other rank forever.
// All MPI calls happen on the JS main thread (MPI_THREAD_FUNNELED).
#include <dlfcn.h>
#include <napi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "dist/mpi.h"
#include "dist/nccl.h"
#include "napi_util.h"

namespace {

using Handle = void*;  // MPI_Comm, MPI_Datatype, MPI_Op, MPI_Request: pointers in Open MPI
void* const kInPlace = reinterpret_cast<void*>(1);  // Open MPI's MPI_IN_PLACE

struct Mpi {
  void* lib = nullptr;
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Comm_rank)(Handle, int*) = nullptr;
  int (*Comm_size)(Handle, int*) = nullptr;
  int (*Comm_idup)(Handle, Handle*, Handle*) = nullptr;
  int (*Comm_free)(Handle*) = nullptr;
  int (*Iallreduce)(const void*, void*, int, Handle, Handle, Handle, Handle*) = nullptr;
  int (*Iallgather)(const void*, int, Handle, void*, int, Handle, Handle, Handle*) = nullptr;
  int (*Igatherv)(const void*, int, Handle, void*, const int*, const int*, Handle, int, Handle, Handle*) = nullptr;
  int (*Ibcast)(void*, int, Handle, int, Handle, Handle*) = nullptr;
  int (*Ibarrier)(Handle, Handle*) = nullptr;
  int (*Isend)(const void*, int, Handle, int, int, Handle, Handle*) = nullptr;
  int (*Irecv)(void*, int, Handle, int, int, Handle, Handle*) = nullptr;
  int (*Test)(Handle*, int*, void*) = nullptr;
  int (*Wait)(Handle*, void*) = nullptr;
  int (*Cancel)(Handle*) = nullptr;
  int (*Request_free)(Handle*) = nullptr;
  int (*Abort)(Handle, int) = nullptr;
  int (*Finalize)() = nullptr;
  Handle comm_world = nullptr, t_float = nullptr, t_double = nullptr, t_byte = nullptr, t_int64 = nullptr,
         op_sum = nullptr, op_max = nullptr;
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
  sym(g.Comm_idup, "MPI_Comm_idup");
  sym(g.Comm_free, "MPI_Comm_free");
  sym(g.Iallreduce, "MPI_Iallreduce");
  sym(g.Iallgather, "MPI_Iallgather");
  sym(g.Igatherv, "MPI_Igatherv");
  sym(g.Ibcast, "MPI_Ibcast");
  sym(g.Ibarrier, "MPI_Ibarrier");
  sym(g.Isend, "MPI_Isend");
  sym(g.Irecv, "MPI_Irecv");
  sym(g.Test, "MPI_Test");
  sym(g.Wait, "MPI_Wait");
  sym(g.Cancel, "MPI_Cancel");
  sym(g.Request_free, "MPI_Request_free");
  sym(g.Abort, "MPI_Abort");
  sym(g.Finalize, "MPI_Finalize");
  g.comm_world = obj("ompi_mpi_comm_world");
  g.t_float = obj("ompi_mpi_float");
  g.t_double = obj("ompi_mpi_double");
  g.t_byte = obj("ompi_mpi_byte");
  g.t_int64 = obj("ompi_mpi_int64_t");
  g.op_sum = obj("ompi_mpi_op_sum");
  g.op_max = obj("ompi_mpi_op_max");
}

void require_up(const char* fn) {
  if (!g.up) throw std::runtime_error(std::string("rargen: ") + fn + ": MPI is not initialised (call distInit first)");
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string fmt_s(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", s);
  return b;
}

// ---------------------------------------------------------------------------------
// The hang watch (src/dist/mpi.h). Messages go over a duplicate of MPI_COMM_WORLD so
// that they never match anything else: one int64 each, the sender's collective count.

constexpr int kTagToRoot = 1, kTagFromRoot = 2;

struct Watch {
  double timeout = 300;   // RARGEN_DIST_TIMEOUT
  double beat = 10;       // heartbeat interval: timeout / 5, between 0.1 and 10 s
  double grace = 60;      // extra wait of ranks != 0, so that rank 0 (which can name the culprit) ends the job
  Handle comm = nullptr;  // MPI_Comm_idup(MPI_COMM_WORLD)
  int64_t seq = 0;        // collectives entered by this rank
  std::string what;       // the one being waited for
  double last_sent = 0;
  // rank 0: per rank, the last collective count it announced and when it was last heard from
  std::vector<int64_t> seen, rbuf;
  std::vector<double> heard;
  std::vector<Handle> rreq;
  // ranks != 0: rank 0's heartbeats
  int64_t root_buf = 0;
  Handle root_req = nullptr;
  double root_heard = 0;
  struct Send {
    std::unique_ptr<int64_t> buf;
    Handle req;
  };
  std::deque<Send> sends;
};
Watch w;

void post_recv(int from) {
  if (g.rank == 0)
    check(g.Irecv(&w.rbuf[from], 1, g.t_int64, from, kTagToRoot, w.comm, &w.rreq[from]), "MPI_Irecv (hang watch)");
  else
    check(g.Irecv(&w.root_buf, 1, g.t_int64, 0, kTagFromRoot, w.comm, &w.root_req), "MPI_Irecv (hang watch)");
}

void send_seq(int to, int tag) {
  Watch::Send s{std::make_unique<int64_t>(w.seq), nullptr};
  check(g.Isend(s.buf.get(), 1, g.t_int64, to, tag, w.comm, &s.req), "MPI_Isend (hang watch)");
  w.sends.push_back(std::move(s));
}

// Completed sends are dropped; received messages update seen/heard.
void drain() {
  while (!w.sends.empty()) {
    int flag = 0;
    check(g.Test(&w.sends.front().req, &flag, nullptr), "MPI_Test (hang watch)");
    if (!flag) break;
    w.sends.pop_front();
  }
  const double t = now_s();
  if (g.rank == 0) {
    for (int r = 1; r < g.size; r++)
      for (;;) {
        int flag = 0;
        check(g.Test(&w.rreq[r], &flag, nullptr), "MPI_Test (hang watch)");
        if (!flag) break;
        w.seen[r] = std::max(w.seen[r], w.rbuf[r]);
        w.heard[r] = t;
        post_recv(r);
      }
  } else {
    for (;;) {
      int flag = 0;
      check(g.Test(&w.root_req, &flag, nullptr), "MPI_Test (hang watch)");
      if (!flag) break;
      w.root_heard = t;
      post_recv(0);
    }
  }
}

// A heartbeat when one is due (force: now), then drain.
void beat(bool force) {
  const double t = now_s();
  if (force || t - w.last_sent >= w.beat) {
    w.last_sent = t;
    if (g.rank == 0)
      for (int r = 1; r < g.size; r++) send_seq(r, kTagFromRoot);
    else
      send_seq(0, kTagToRoot);
  }
  drain();
}

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "\nrargen: rank %d of %d: %s\n", g.rank, g.size, msg.c_str());
  std::fflush(stderr);
  g.Abort(g.comm_world, 3);
  std::_Exit(3);  // MPI_Abort does not return
}

std::string ranks_list(const std::vector<int>& v) {
  std::string s = v.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s;
}

const char* kAfter =
    "stopping every rank. Checkpoints already written are intact (they are written to a temp folder and renamed); "
    "fix or replace the rank's node and run the same command to resume";

// Called while waiting for collective w.seq that started at t0; aborts the job when
// its rules say so. patient: ranks may legitimately arrive late (a barrier after
// work of different lengths): only silence (no heartbeat for the timeout) counts.
void watch(double t0, bool patient) {
  beat(false);
  const double t = now_s();
  const double waited = t - t0;
  const std::string head = "the " + w.what + " (collective #" + std::to_string(w.seq) + ") ";
  if (g.rank == 0) {
    // silent: no message for 3 heartbeat intervals (stopped, wherever it is); late: alive
    // but not at this collective yet
    std::vector<int> late, silent;
    bool dead = false;  // silent for the whole timeout: ends even a patient wait
    for (int r = 1; r < g.size; r++) {
      if (t - w.heard[r] > 3 * w.beat) silent.push_back(r);
      else if (w.seen[r] < w.seq) late.push_back(r);
      dead = dead || t - w.heard[r] > w.timeout;
    }
    if (dead || (!patient && waited > w.timeout)) {
      std::string m = head + "did not complete within RARGEN_DIST_TIMEOUT=" + fmt_s(w.timeout) + " s: ";
      if (!silent.empty()) {
        m += ranks_list(silent) + (silent.size() == 1 ? " has" : " have") + " sent nothing for " + fmt_s(3 * w.beat) +
             " s or more (heartbeats are every " + fmt_s(w.beat) + " s; ";
        for (size_t i = 0; i < silent.size(); i++)
          m += (i ? "; " : "") + std::string("rank ") + std::to_string(silent[i]) + ": last heard " +
               fmt_s(t - w.heard[silent[i]]) + " s ago, at collective #" + std::to_string(w.seen[silent[i]]);
        m += "): hung or stopped (SIGSTOP, a deadlock, a dead node)";
        if (!late.empty()) m += "; " + ranks_list(late) + " also had not reached it";
      } else if (!late.empty()) {
        m += ranks_list(late) + (late.size() == 1 ? " has" : " have") + " not reached it (";
        for (size_t i = 0; i < late.size(); i++)
          m += (i ? "; " : "") + std::string("rank ") + std::to_string(late[i]) + " is at collective #" +
               std::to_string(w.seen[late[i]]);
        m += ", still alive: stuck outside the collectives, e.g. in a GPU kernel or a slow filesystem)";
      } else {
        m += "every rank reached it and is alive, but it did not complete (the network or the MPI library is stuck)";
      }
      fail(m + "; " + kAfter);
    }
  } else {
    const double limit = w.timeout + w.grace;
    if (t - w.root_heard > limit)
      fail(head + "did not complete: rank 0 has sent nothing for " + fmt_s(t - w.root_heard) +
           " s (RARGEN_DIST_TIMEOUT=" + fmt_s(w.timeout) + " s + " + fmt_s(w.grace) +
           " s): rank 0 is hung or stopped (SIGSTOP, a deadlock, a dead node); " + kAfter);
    if (!patient && waited > limit)
      fail(head + "did not complete within " + fmt_s(limit) + " s (RARGEN_DIST_TIMEOUT=" + fmt_s(w.timeout) + " s + " +
           fmt_s(w.grace) + " s) and rank 0, which names the missing ranks, has not ended the job: rank 0 has not " +
           "reached it (stuck outside the collectives, e.g. in a GPU kernel or a slow filesystem); " + kAfter);
  }
}

double begin(const char* what) {
  require_up(what);
  w.seq++;
  w.what = what;
  if (g.rank != 0) beat(true);  // the arrival: rank 0 learns who reached which collective
  return now_s();
}

constexpr long kSpin = 2000;  // MPI_Test calls before each further one yields the core (oversubscribed nodes)
// Waits for the requests of the collective begun at t0, spinning on MPI_Test (which
// also drives Open MPI's progress), yielding the core after a while.
void wait_all(std::vector<Handle>& reqs, double t0, bool patient = false) {
  size_t done = 0;  // reqs[0..done) have completed
  for (long it = 0; done < reqs.size(); ++it) {
    int flag = 0;
    check(g.Test(&reqs[done], &flag, nullptr), w.what.c_str());
    if (flag) {
      done++;
      continue;
    }
    if ((it & 255) == 255) watch(t0, patient);
    if (it > kSpin) sched_yield();
  }
}
void wait(Handle* req, double t0, bool patient = false) {
  std::vector<Handle> one{*req};
  wait_all(one, t0, patient);
  *req = one[0];
}

// Buckets of at most 1<<20 elements (4 MiB of floats), all in flight at once: MPI
// counts are int, and Open MPI's non-blocking all-reduce (libnbc) pipelines several
// mid-sized requests better than one large one (measured on 2 ranks, shared memory,
// 64 MB: 120 ms in 4 MB buckets, 229 ms as one request, 153-230 ms blocking).
constexpr int64_t kBucket = int64_t(1) << 20;

void allreduce_inplace(void* data, int64_t n, size_t elsize, Handle type, Handle op, const char* what) {
  const double t0 = begin(what);
  std::vector<Handle> reqs;
  for (int64_t off = 0; off < n; off += kBucket) {
    const int c = static_cast<int>(std::min(kBucket, n - off));
    reqs.emplace_back();
    check(g.Iallreduce(kInPlace, static_cast<char*>(data) + off * elsize, c, type, op, g.comm_world, &reqs.back()), what);
  }
  wait_all(reqs, t0);
}

void barrier(bool patient, const char* what) {
  const double t0 = begin(what);
  Handle req = nullptr;
  check(g.Ibarrier(g.comm_world, &req), what);
  wait(&req, t0, patient);
}

using namespace rargen::napi;

// distInit({timeout, bucketMB}): joins the MPI job (only inside one an MPI launcher
// started) and starts the hang watch. lib/dist.ts parses the RARGEN_DIST_* variables.
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double timeout = 300, bucket_mb = 25;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsObject()) type_error(env, "distInit: options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    if (o.Has("timeout")) timeout = get_number(env, o, "timeout", "distInit options");
    if (o.Has("bucketMB")) bucket_mb = get_number(env, o, "bucketMB", "distInit options");
    if (!(timeout > 0 && timeout <= 1e7)) range_error(env, "distInit: timeout must be between 0 and 1e7 seconds");
    if (!(bucket_mb >= 1 && bucket_mb <= 4096)) range_error(env, "distInit: bucketMB must be between 1 and 4096");
  }
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
    w.timeout = timeout;
    w.beat = std::min(10.0, std::max(0.1, timeout / 5));
    w.grace = std::min(60.0, std::max(3.0, timeout / 4));
    // The watch's communicator; a rank that never gets here is caught by the deadline.
    Handle req = nullptr;
    check(g.Comm_idup(g.comm_world, &w.comm, &req), "MPI_Comm_idup");
    const double t0 = now_s();
    for (long it = 0;; ++it) {
      int flag = 0;
      check(g.Test(&req, &flag, nullptr), "MPI_Comm_idup");
      if (flag) break;
      if ((it & 255) == 255 && now_s() - t0 > timeout) {
        g.up = true;  // for fail()
        fail("not every rank joined the job within RARGEN_DIST_TIMEOUT=" + fmt_s(timeout) + " s (MPI_Comm_idup); " + kAfter);
      }
      if (it > 2000) sched_yield();
    }
    const double t = now_s();
    if (g.rank == 0) {
      w.seen.assign(g.size, 0);
      w.rbuf.assign(g.size, 0);
      w.heard.assign(g.size, t);
      w.rreq.assign(g.size, nullptr);
      for (int r = 1; r < g.size; r++) post_recv(r);
    } else {
      w.root_heard = t;
      post_recv(0);
    }
    w.last_sent = t;
    rargen::dist::nccl::set_bucket_bytes(static_cast<int64_t>(bucket_mb * 1024 * 1024));
    g.up = true;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", g.rank);
  o.Set("size", g.size);
  o.Set("library", "Open MPI");
  o.Set("timeout", w.timeout);
  o.Set("heartbeat", w.beat);
  return o;
}

// distAllreduce(Float64Array, op?: 'sum' | 'max'): in place.
Napi::Value DistAllreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_up("distAllreduce");
  if (!is_typed_array(info[0], napi_float64_array)) type_error(env, "distAllreduce: data must be a Float64Array");
  std::string op = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "sum";
  if (op != "sum" && op != "max") range_error(env, "distAllreduce: op must be 'sum' or 'max' but received '" + op + "'");
  Napi::Float64Array a = info[0].As<Napi::Float64Array>();
  allreduce_inplace(a.Data(), static_cast<int64_t>(a.ElementLength()), 8, g.t_double, op == "sum" ? g.op_sum : g.op_max,
                    "all-reduce");
  return env.Undefined();
}

// distAllgather(Uint8Array of L bytes, the same L on every rank) -> Uint8Array(L * size).
Napi::Value DistAllgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_up("distAllgather");
  if (!is_typed_array(info[0], napi_uint8_array)) type_error(env, "distAllgather: data must be a Uint8Array");
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  const size_t L = a.ElementLength();
  if (L > (size_t(1) << 30) / static_cast<size_t>(g.size)) range_error(env, "distAllgather: at most 1 GiB in all");
  Napi::Uint8Array out = Napi::Uint8Array::New(env, L * static_cast<size_t>(g.size));
  const double t0 = begin("all-gather");
  Handle req = nullptr;
  check(g.Iallgather(a.Data(), static_cast<int>(L), g.t_byte, out.Data(), static_cast<int>(L), g.t_byte, g.comm_world, &req),
        "MPI_Iallgather");
  wait(&req, t0);
  return out;
}

// distGatherF32(Float32Array of any length) -> on rank 0 every rank's array, joined in
// rank order; undefined on the other ranks.
Napi::Value DistGatherF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_up("distGatherF32");
  if (!is_typed_array(info[0], napi_float32_array)) type_error(env, "distGatherF32: data must be a Float32Array");
  Napi::Float32Array a = info[0].As<Napi::Float32Array>();
  std::vector<int64_t> counts(static_cast<size_t>(g.size));
  int64_t mine = static_cast<int64_t>(a.ElementLength());
  {
    const double t0 = begin("gather (sizes)");
    Handle req = nullptr;
    check(g.Iallgather(&mine, 1, g.t_int64, counts.data(), 1, g.t_int64, g.comm_world, &req), "MPI_Iallgather");
    wait(&req, t0);
  }
  int64_t total = 0;
  std::vector<int> c(counts.size()), d(counts.size());
  for (size_t r = 0; r < counts.size(); r++) {
    d[r] = static_cast<int>(total);
    c[r] = static_cast<int>(counts[r]);
    total += counts[r];
  }
  // every rank takes the same decision (they all know the counts)
  if (total > INT_MAX) range_error(env, "distGatherF32: at most 2^31-1 floats in all (gather in several calls)");
  Napi::Float32Array out;
  if (g.rank == 0) out = Napi::Float32Array::New(env, static_cast<size_t>(total));
  const double t0 = begin("gather");
  Handle req = nullptr;
  check(g.Igatherv(a.Data(), static_cast<int>(mine), g.t_float, g.rank == 0 ? out.Data() : nullptr, c.data(), d.data(),
                   g.t_float, 0, g.comm_world, &req),
        "MPI_Igatherv");
  wait(&req, t0);
  if (g.rank == 0) return out;
  return env.Undefined();
}

// distBarrier(patient?: boolean): patient waits as long as every rank keeps sending
// heartbeats (ranks that finish their share of work at different times).
Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  require_up("distBarrier");
  const bool patient = info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
  barrier(patient, patient ? "barrier (waiting for every rank to finish its share)" : "barrier");
  return info.Env().Undefined();
}

// distHeartbeat(): lib/dist.ts calls it on a timer, so that a rank busy between
// collectives (a training step on a worker thread, a sampling batch) counts as alive.
Napi::Value DistHeartbeat(const Napi::CallbackInfo& info) {
  if (g.up) beat(false);
  return info.Env().Undefined();
}

Napi::Value DistFinalize(const Napi::CallbackInfo& info) {
  if (g.up) {
    // patient: ranks end at different times (fid's rank 0 computes the metrics alone)
    barrier(true, "final barrier (waiting for every rank to finish)");
    rargen::dist::nccl::finalize();
    // Every rank announced the final barrier before entering it: rank 0 collects those
    // announcements (briefly) so that few messages are left unmatched, then the
    // watch's receives are cancelled and its sends completed.
    const double t0 = now_s();
    if (g.rank == 0)
      while (now_s() - t0 < 2) {
        drain();
        bool all = true;
        for (int r = 1; r < g.size; r++) all = all && w.seen[r] >= w.seq;
        if (all) break;
        sched_yield();
      }
    auto cancel = [](Handle* r) {
      if (*r) {
        g.Cancel(r);
        g.Wait(r, nullptr);
      }
    };
    if (g.rank == 0)
      for (int r = 1; r < g.size; r++) cancel(&w.rreq[r]);
    else
      cancel(&w.root_req);
    while (!w.sends.empty() && now_s() - t0 < 5) {
      drain();
      sched_yield();
    }
    for (auto& s : w.sends) g.Request_free(&s.req);
    w.sends.clear();
    g.Comm_free(&w.comm);
    int fin = 0;
    g.Finalized(&fin);
    if (!fin) check(g.Finalize(), "MPI_Finalize");
    g.up = false;
  }
  return info.Env().Undefined();
}

// distNcclProbe() -> NCCL's version (e.g. 22304), or throws saying how to install it.
// Opens the library only: no GPU, no MPI.
Napi::Value DistNcclProbe(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("built", rargen::dist::nccl::built());
  o.Set("version", rargen::dist::nccl::probe());
  return o;
}

}  // namespace

namespace rargen::dist {

bool active() { return g.up; }
int rank() { return g.rank; }
int size() { return g.size; }
double timeout_seconds() { return w.timeout; }

void allreduce_sum_f32(float* data, int64_t n) {
  require_up("allreduce");
  allreduce_inplace(data, n, 4, g.t_float, g.op_sum, "all-reduce (gradients)");
}

void bcast_bytes(void* data, int64_t n, int root, const char* what) {
  if (n > INT_MAX) throw std::runtime_error(std::string("rargen: ") + what + ": at most 2^31-1 bytes");
  const double t0 = begin(what);
  Handle req = nullptr;
  check(g.Ibcast(data, static_cast<int>(n), g.t_byte, root, g.comm_world, &req), what);
  wait(&req, t0);
}

namespace {

// One data-parallel gradient mean in flight (src/dist/mpi.h): the buckets in the order
// they are begun, how far backward must be for each, and what has been begun so far.
struct GradReduce {
  bool active = false;
  bool nccl = false;
  Backend* be = nullptr;
  float* grads = nullptr;
  int64_t n = 0;
  std::vector<std::pair<int64_t, int64_t>> plan;  // (offset, count)
  std::vector<int> ready_at;                      // plan[i] is final once this many stages are
  size_t next = 0;                                // plan[0..next) begun
  size_t early = 0;                               // of them, begun by grads_overlap_ready (during backward)
  std::vector<float> host;                        // MPI: the host copy reduced in place
  std::vector<Handle> reqs;
  double t0 = 0;
};
GradReduce gr;

int64_t mpi_bucket_floats() {
  const char* e = std::getenv("RARGEN_DIST_MPI_BUCKET");  // floats per MPI bucket (tests use small ones)
  if (e && *e) {
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end || v < 1 || v > kBucket)
      throw std::runtime_error("rargen: RARGEN_DIST_MPI_BUCKET must be an integer in 1.." + std::to_string(kBucket) +
                               " (floats per MPI all-reduce bucket) but is '" + e + "'");
    return v;
  }
  return kBucket;
}

// True for NCCL (device memory), false for MPI through host memory; throws for a bad setting.
bool use_nccl(Backend& be) {
  const char* b = std::getenv("RARGEN_DIST_BACKEND");
  const std::string backend = b && *b ? b : "auto";
  if (backend != "auto" && backend != "nccl" && backend != "mpi")
    throw std::runtime_error("rargen: RARGEN_DIST_BACKEND must be auto, nccl or mpi but is '" + backend + "'");
  if (be.is_gpu() && backend != "mpi") return true;
  if (backend == "nccl" && !be.is_gpu())
    throw std::runtime_error("rargen: RARGEN_DIST_BACKEND=nccl needs --device cuda (this rank trains on the CPU)");
  return false;
}

// Buckets of `per` floats, ordered by the stage after which each is final, then from the
// end of the buffer (backward's direction).
void make_plan(GradReduce& r, const GradStages& stages, int64_t per) {
  const int64_t nb = (r.n + per - 1) / per;
  std::vector<int> ready(static_cast<size_t>(nb), static_cast<int>(stages.size()));
  std::vector<std::pair<int64_t, int64_t>> have;  // the final ranges so far, merged and sorted
  for (size_t s = 0; s < stages.size(); s++) {
    for (const auto& rg : stages[s]) have.push_back(rg);
    std::sort(have.begin(), have.end());
    std::vector<std::pair<int64_t, int64_t>> merged;
    for (const auto& rg : have) {
      if (!merged.empty() && rg.first <= merged.back().second) merged.back().second = std::max(merged.back().second, rg.second);
      else merged.push_back(rg);
    }
    have = merged;
    for (int64_t k = 0; k < nb; k++) {
      if (ready[k] != static_cast<int>(stages.size())) continue;
      const int64_t lo = k * per, hi = std::min(r.n, lo + per);
      auto it = std::upper_bound(have.begin(), have.end(), std::make_pair(lo, INT64_MAX));
      if (it != have.begin() && std::prev(it)->first <= lo && std::prev(it)->second >= hi) ready[k] = static_cast<int>(s) + 1;
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(nb));
  for (int64_t k = 0; k < nb; k++) order[k] = nb - 1 - k;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ready[a] < ready[b]; });
  for (int64_t k : order) {
    r.plan.push_back({k * per, std::min(per, r.n - k * per)});
    r.ready_at.push_back(ready[k]);
  }
}

void begin_next(GradReduce& r) {
  const auto [off, cnt] = r.plan[r.next++];
  if (r.nccl) {
    nccl::begin_bucket(*r.be, r.grads + off, cnt);
    return;
  }
  if (r.reqs.empty()) r.t0 = begin("all-reduce (gradients)");
  r.be->download(r.host.data() + off, r.grads + off, static_cast<size_t>(cnt) * 4);
  r.reqs.emplace_back();
  check(g.Iallreduce(kInPlace, r.host.data() + off, static_cast<int>(cnt), g.t_float, g.op_sum, g.comm_world,
                     &r.reqs.back()),
        "all-reduce (gradients)");
}

void finish(GradReduce& r) {
  const char* rep = std::getenv("RARGEN_DIST_OVERLAP_REPORT");  // tests: how much was overlapped
  if (rep && *rep && std::strcmp(rep, "0") != 0) {
    std::string per;  // how many buckets became final at each stage of backward
    for (size_t i = 0; i < r.plan.size();) {
      size_t j = i;
      while (j < r.plan.size() && r.ready_at[j] == r.ready_at[i]) j++;
      per += " " + std::to_string(r.ready_at[i]) + ":" + std::to_string(j - i);
      i = j;
    }
    std::fprintf(stderr, "rargen: rank %d: gradient all-reduce: %zu of %zu buckets begun during backward (final after stage:%s)\n",
                 g.rank, r.early, r.plan.size(), per.c_str());
  }
  while (r.next < r.plan.size()) begin_next(r);
  if (r.nccl) {
    nccl::finish(*r.be);
  } else {
    if (!r.reqs.empty()) wait_all(r.reqs, r.t0);
    const float inv = 1.f / static_cast<float>(g.size);
    for (float& x : r.host) x *= inv;
    r.be->upload(r.grads, r.host.data(), static_cast<size_t>(r.n) * 4);
    r.be->synchronize();
  }
  r = GradReduce{};
}

}  // namespace

void grads_overlap_begin(Backend& be, float* grads, int64_t n, const GradStages& stages) {
  require_up("trainAllreduceGrads");
  if (gr.active) finish(gr);  // a reduction left pending (its step failed): complete it first
  GradReduce r;
  r.nccl = use_nccl(be);
  r.be = &be;
  r.grads = grads;
  r.n = n;
  make_plan(r, stages, r.nccl ? std::max<int64_t>(1, nccl::bucket_bytes() / 4) : mpi_bucket_floats());
  if (!r.nccl) r.host.assign(static_cast<size_t>(n), 0.f);
  r.active = true;
  gr = std::move(r);
}

void grads_overlap_ready(int done) {
  if (!gr.active) return;
  while (gr.next < gr.plan.size() && gr.ready_at[gr.next] <= done) {
    begin_next(gr);
    gr.early++;
  }
  // Open MPI progresses non-blocking collectives inside MPI calls only: test the pending
  // ones (a completed request becomes MPI_REQUEST_NULL, which wait_all then passes).
  for (Handle& q : gr.reqs) {
    int flag = 0;
    check(g.Test(&q, &flag, nullptr), "all-reduce (gradients)");
  }
}

void allreduce_mean_grads(Backend& be, float* grads, int64_t n, const GradStages& stages) {
  require_up("trainAllreduceGrads");
  if (gr.active && (gr.be != &be || gr.grads != grads || gr.n != n)) finish(gr);  // another trainer's
  if (!gr.active) {
    be.synchronize();  // the backward pass has written every gradient
    grads_overlap_begin(be, grads, n, stages);
  }
  try {
    finish(gr);
  } catch (...) {
    gr = GradReduce{};
    throw;
  }
}

double begin_collective(const char* what) { return begin(what); }
void poll_watch(double t0) { watch(t0, false); }
void abort_job(const char* msg) { fail(msg); }

}  // namespace rargen::dist

namespace rargen {

// Called from register_train (src/binding_train.cc).
void register_dist(Napi::Env env, Napi::Object exports) {
  napi::set_exports(env, exports,
                    {{"distInit", napi::guarded<DistInit>},
                     {"distAllreduce", napi::guarded<DistAllreduce>},
                     {"distAllgather", napi::guarded<DistAllgather>},
                     {"distGatherF32", napi::guarded<DistGatherF32>},
                     {"distBarrier", napi::guarded<DistBarrier>},
                     {"distHeartbeat", napi::guarded<DistHeartbeat>},
                     {"distFinalize", napi::guarded<DistFinalize>},
                     {"distNcclProbe", napi::guarded<DistNcclProbe>}});
}

}  // namespace rargen
