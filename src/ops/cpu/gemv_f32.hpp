// f32 matrix times B vectors for decoding (ops::matvec_batch): the AVX-512 path's kernel,
// compiled for those instructions in its own translation unit.
#pragma once
#include <cstdint>

namespace braid::ops::gemv {

// y[b * ldy + r] (+)= A[r, :] . x[b, :] for rows [0, rows) of a row-major A. Each value is
// the same sum whichever rows and inputs share its block: per value four 16-lane FMA chains
// over 64 columns at a time, one chain over the next 16s, a tree sum of the lanes, then the
// last columns one at a time. Fewer than six inputs: blocks of 3 rows x 2 inputs keep 24 sums
// (all four chains) in registers. Six or more: blocks of 4 rows x 6 inputs run one chain of
// every value at a time, 24 sums, each loaded vector of A used six times and of x four.
void rows_avx512(const float* A, const float* x, int64_t B, int64_t rows, int64_t cols, bool accumulate,
                 float* y, int64_t ldy);

}  // namespace braid::ops::gemv
