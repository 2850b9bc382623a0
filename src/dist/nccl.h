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
// grads (n floats, device memory of `be`) <- their mean over all ranks. The first call
// creates the communicator (collective: every rank must call it).
void mean_grads(Backend& be, float* grads, int64_t n);
bool active();
// Destroys the communicator (before MPI_Finalize).
void finalize();

}  // namespace rargen::dist::nccl
