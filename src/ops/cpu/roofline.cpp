#include "ops/cpu/roofline.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/buffer.hpp"
#include "core/timer.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid::ops {

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double measure_read_bandwidth(size_t bytes, int reps) {
  // Integer sums vectorise without reassociating floating point, so the loop is
  // limited by memory, not by add latency.
  const size_t n = bytes / sizeof(uint64_t);
  auto mem = aligned_alloc_shared(n * sizeof(uint64_t));
  auto* p = static_cast<uint64_t*>(mem.get());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] = i;
  std::vector<double> rates;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps + 1; ++r) {
    Timer t;
    uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n; ++i) total += p[i];
    const double sec = t.seconds();
    sink = sink + total;
    if (r > 0) rates.push_back(double(n * sizeof(uint64_t)) / sec);  // first pass warms up
  }
  return median(rates);
}

double measure_sgemm_peak(int n, int reps) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  std::vector<double> rates;
  for (int r = 0; r < reps + 1; ++r) {
    Timer t;
    gemm(n, n, n, 1.0f, a.data(), n, b.data(), n, true, 0.0f, c.data(), n);
    const double sec = t.seconds();
    if (r > 0) rates.push_back(2.0 * double(n) * n * n / sec);
  }
  return median(rates);
}

}  // namespace braid::ops
