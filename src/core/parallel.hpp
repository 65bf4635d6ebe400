// Threading: OpenMP everywhere (OpenBLAS is the OpenMP build), so BLAS calls and
// braid's own loops share one pool and never oversubscribe the cores.
#pragma once
#include <cstdint>

namespace braid {

// Sets the thread count for braid's loops and for BLAS (0 = all cores).
void set_num_threads(int n);
int num_threads();

// Runs f(i) for i in [0, n) across the OpenMP team; static schedule.
template <class F>
void parallel_for(int64_t n, F&& f) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace braid
