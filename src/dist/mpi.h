// Data-parallel collectives over MPI, opened at run time (src/binding_dist.cc).
// The addon links no MPI library and includes no MPI header: libmpi.so.40 (Open MPI)
// is dlopen'ed by distInit only when a run is launched by mpirun, so a plain
// `rargen train` and the prebuilt addon never need MPI.
//
// Hang watch: Open MPI has no collective timeout, so every collective here is a
// non-blocking one (MPI_Iallreduce, ...) polled with MPI_Test against a deadline
// (RARGEN_DIST_TIMEOUT seconds). Each rank announces to rank 0 every collective it
// enters and, while it waits or works, sends a heartbeat every few seconds; rank 0
// heartbeats to every rank. When a collective has not completed in time, rank 0 names
// the ranks that have not reached it (or went silent inside it) and aborts the job
// (MPI_Abort); a rank that hears nothing from rank 0 names rank 0. See
// docs/distributed-training.md, "Failures".
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace rargen {
class Backend;
}

namespace rargen::dist {

// True after a successful init (and before finalize).
bool active();
int rank();
int size();
// RARGEN_DIST_TIMEOUT as distInit received it.
double timeout_seconds();

// In-place sum of n floats over all ranks, in buckets (MPI counts are int). Throws
// std::runtime_error when MPI is not initialised or a call fails; aborts the job when
// the collective does not complete in time (the hang watch above).
void allreduce_sum_f32(float* data, int64_t n);
// n bytes of `root`'s buffer to every rank.
void bcast_bytes(void* data, int64_t n, int root, const char* what);
// The mean over all ranks of a trainer's flat gradient buffer (backend memory, n
// floats): NCCL on device memory for a GPU backend (src/dist/nccl.h; RARGEN_DIST_BACKEND
// = auto or nccl), else staged through host memory and reduced with MPI.
//
// In buckets (MPI: 4 MiB, or RARGEN_DIST_MPI_BUCKET floats; NCCL: RARGEN_DIST_BUCKET_MB),
// begun in one order that follows backward: `stages` lists the ranges of the buffer
// whose gradients are final after each backward stage (RarTrainer::grad_stages); a
// bucket is ready after the first stage by which all of it is final, and the buckets
// are begun by (ready stage, then from the end of the buffer). Overlapped:
// grads_overlap_begin before backward, grads_overlap_ready(done) as backward reports
// `done` stages final (main thread: every ready bucket not yet begun is begun, in that
// order), then allreduce_mean_grads finishes (begins the rest, waits, averages). Not
// overlapped: allreduce_mean_grads alone begins every bucket after backward, in the same
// order, so both give bit-identical gradients. Every rank must use the same stages.
using GradStages = std::vector<std::vector<std::pair<int64_t, int64_t>>>;
void grads_overlap_begin(Backend& be, float* grads, int64_t n, const GradStages& stages);
void grads_overlap_ready(int done);  // a no-op when no overlapped reduction is pending
void allreduce_mean_grads(Backend& be, float* grads, int64_t n, const GradStages& stages);

// For waits that are not MPI requests (an NCCL stream): announce the operation
// (returns its start time), then call poll_watch while waiting; it heartbeats and
// aborts the job, naming the missing ranks, once the deadline has passed.
double begin_collective(const char* what);
void poll_watch(double t0);
// Prints "rargen: rank R of N: <msg>" to stderr and ends every rank (MPI_Abort).
[[noreturn]] void abort_job(const char* msg);

}  // namespace rargen::dist
