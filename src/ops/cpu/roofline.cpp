#include "ops/cpu/roofline.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/buffer.hpp"
#include "core/timer.hpp"
#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid::ops {

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

namespace {

// The sum of p[0, n), n a multiple of 32, in 32 independent integer sums, so the loop
// vectorises at the CPU's widest width and issues loads faster than memory can serve them
// (a baseline 16-byte loop is limited by instructions, not memory, on a slow or throttled core).
BRAID_DISPATCH uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t acc[32] = {};
  for (size_t i = 0; i < n; i += 32)
    for (int k = 0; k < 32; ++k) acc[k] += p[i + k];
  uint64_t s = 0;
  for (uint64_t a : acc) s += a;
  return s;
}

}  // namespace

double measure_read_bandwidth(size_t bytes, int reps) {
  const size_t n =
      std::max<size_t>(bytes / sizeof(uint64_t) / 256, 1) * 256;  // whole 32-word steps per thread
  auto mem = aligned_alloc_shared(n * sizeof(uint64_t));
  auto* p = static_cast<uint64_t*>(mem.get());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] = i;
  std::vector<double> rates;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps + 1; ++r) {
    Timer t;
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const size_t nt = size_t(omp_get_num_threads()), t = size_t(omp_get_thread_num());
      const size_t b = n / 32 * t / nt * 32, e = n / 32 * (t + 1) / nt * 32;
      total += sum_words(p + b, e - b);
    }
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
