// NCCL for GPU ranks, opened at run time (src/dist/nccl.cc): no NCCL header and no
// link; the few functions and enums used are declared by hand, as src/dist/mpi.h's MPI
// is. Bootstrapped over MPI as llm.c does: rank 0 creates the unique id and broadcasts
// it (rargen::dist::bcast_bytes); each process makes one communicator on its device
// and a stream of its own. Compiled, not run: no multi-GPU machine has run it yet.
#pragma once
#include <cstdint>
#include <string>

namespace rargen {
class Backend;
}

namespace rargen::dist::nccl {

// Opens libnccl.so.2 (or RARGEN_NCCL_LIB) and returns its version (e.g. 22304), or
// throws std::runtime_error saying how to install NCCL. Needs neither MPI nor a GPU.
int probe();
// Whether this build has the CUDA half (RARGEN_CUDA); without it mean_grads throws.
bool built();
// Bucket size in bytes of the gradient all-reduce (RARGEN_DIST_BUCKET_MB, set by distInit).
void set_bucket_bytes(int64_t bytes);
int64_t bucket_bytes();
// The bucketed all-reduce: begin_bucket(be, data, n) once the n floats at data (device
// memory of `be`) are final on be's compute stream (issued, not necessarily run): NCCL's
// stream waits on an event recorded there (Backend::event_record; no host sync) and
// reduces them to their mean over all ranks; it returns at once. finish(be) waits for
// every bucket begun (polled against the hang watch). Every rank must begin the same
// buckets in the same order. The first begin creates the communicator (collective).
void begin_bucket(Backend& be, float* data, int64_t n);
void finish(Backend& be);
// grads (n floats) <- their mean over all ranks: buckets of RARGEN_DIST_BUCKET_MB, then finish.
void mean_grads(Backend& be, float* grads, int64_t n);
bool active();
// Destroys the communicator (before MPI_Finalize).
void finalize();

}  // namespace rargen::dist::nccl
