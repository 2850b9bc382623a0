// Data-parallel collectives over MPI, opened at run time (src/binding_dist.cc).
// The addon links no MPI library and includes no MPI header: libmpi.so.40 (Open MPI)
// is dlopen'ed by dist_init() only when a run is launched by mpirun, so a plain
// `rargen train` and the prebuilt addon never need MPI.
#pragma once
#include <cstdint>

namespace rargen::dist {

// True after a successful init (and before finalize).
bool active();
int rank();
int size();
// In-place sum of n floats over all ranks, in buckets (MPI counts are int). Throws
// std::runtime_error when MPI is not initialised or a call fails.
void allreduce_sum_f32(float* data, int64_t n);

}  // namespace rargen::dist
