// Threading: OpenMP everywhere (OpenBLAS is the OpenMP build), so BLAS calls and
// braid's own loops share one pool and never oversubscribe the cores.
#pragma once
#include <cstdint>
#include <exception>
#include <vector>

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

// Runs f(t) for t in [0, P), each on its own thread of a team of P (inline when P == 1).
// An exception thrown by any f(t) is rethrown here after all have finished (the lowest t's
// first), so a worker's error reaches the caller instead of terminating the process.
template <class F>
void run_on_threads(int P, F&& f) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(P > 0 ? P : 0));
  auto guarded = [&](int t) {
    try {
      f(t);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  };
  if (P == 1) {
    guarded(0);
  } else {
#pragma omp parallel for num_threads(P) schedule(static, 1)
    for (int t = 0; t < P; ++t) guarded(t);
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace braid
