// Limits measured on this machine in the same run as a benchmark, so results can be
// quoted as a fraction of what the hardware does: read bandwidth and SGEMM peak.
#pragma once
#include <cstddef>

namespace braid::ops {

// Bytes per second reading a buffer of `bytes` with all threads: the best of a few read
// loops, each the median of `reps` passes.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int reps = 5);
// FLOP/s of a square SGEMM of size n through the same BLAS the model uses; median.
double measure_sgemm_peak(int n = 1024, int reps = 5);

}  // namespace braid::ops
