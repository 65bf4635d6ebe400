// Limits measured on this machine in the same run as a benchmark, so results can be
// quoted as a fraction of what the hardware does: read bandwidth and SGEMM peak.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

namespace braid::ops {

// Bytes per second reading a buffer of `bytes` with all threads: the best of a few read
// loops, each the median of `reps` passes.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int reps = 5);
// The same loops over bytes already in memory (such as a model's weights, from wherever they
// now lie: a model read every token may stay in a last-level cache that a new buffer of its
// size does not get), read in place: each range's whole 256-byte steps from its first 64-byte
// line. 0 when the ranges hold no such step.
double measure_read_bandwidth_in_place(const std::vector<std::pair<const void*, size_t>>& ranges,
                                       int reps = 5);
// FLOP/s of a square SGEMM of size n through the same BLAS the model uses; median.
double measure_sgemm_peak(int n = 1024, int reps = 5);

}  // namespace braid::ops
