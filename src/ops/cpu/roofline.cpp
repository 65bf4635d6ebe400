#include "ops/cpu/roofline.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/buffer.hpp"
#include "core/timer.hpp"
#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid::ops {

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

namespace {

// Sums of p[0, n), n a multiple of 32, in L independent lanes, each word first mixed with
// itself M times; Ahead > 0: each 64 bytes read asks for the line Ahead bytes further on, as
// the weight kernels read where the hardware prefetcher alone falls short (wdot.hpp). Which
// loop reads fastest depends on the CPU and the moment: the widest vectors at full rate can
// run ahead of the hardware prefetcher, and a few instructions between loads, narrower
// vectors, or the request ahead sometimes read more (seen: 20-30% more on one host, 5-10% for
// the request ahead on another).
template <int L, int M, int64_t Ahead = 0>
inline uint64_t sum_lanes(const uint64_t* p, size_t n) {
  uint64_t acc[L] = {};
  for (size_t i = 0; i < n; i += L) {
    if constexpr (Ahead > 0)
      for (int k = 0; k < L; k += 8) prefetch_stream(p + i + k, Ahead);
    for (int k = 0; k < L; ++k) {
      uint64_t v = p[i + k];
      for (int m = 0; m < M; ++m) v ^= v >> 1;
      acc[k] += v;
    }
  }
  uint64_t s = 0;
  for (uint64_t a : acc) s += a;
  return s;
}

BRAID_DISPATCH uint64_t sum_wide(const uint64_t* p, size_t n) { return sum_lanes<32, 0>(p, n); }
BRAID_DISPATCH uint64_t sum_prefetched(const uint64_t* p, size_t n) {
  return sum_lanes<32, 0, kIntelStreamPrefetch>(p, n);
}
BRAID_DISPATCH uint64_t sum_mixed(const uint64_t* p, size_t n) { return sum_lanes<16, 1>(p, n); }
__attribute__((target("avx2"))) uint64_t sum_256(const uint64_t* p, size_t n) {
  return sum_lanes<16, 0>(p, n);
}

using SumLoop = uint64_t (*)(const uint64_t*, size_t);

// Words to read: pieces of whole 32-word steps, read as one sequence split evenly over the
// threads.
struct Pieces {
  std::vector<const uint64_t*> p;
  std::vector<size_t> n;
  size_t total = 0;
  void add(const uint64_t* q, size_t words) {
    if (words == 0) return;
    p.push_back(q), n.push_back(words), total += words;
  }
};

// Bytes per second of one all-thread pass of `sum` over the pieces.
double read_rate(SumLoop sum, const Pieces& w, volatile uint64_t& sink) {
  Timer t;
  uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
    const size_t b = w.total / 32 * id / nt * 32, e = w.total / 32 * (id + 1) / nt * 32;
    size_t at = 0;
    for (size_t i = 0; i < w.p.size() && at < e; at += w.n[i], ++i) {
      const size_t lo = std::max(b, at), hi = std::min(e, at + w.n[i]);
      if (lo < hi) total += sum(w.p[i] + (lo - at), hi - lo);
    }
  }
  const double sec = t.seconds();
  sink = sink + total;
  return double(w.total * sizeof(uint64_t)) / sec;
}

// The best of several read loops (each the median of its passes, the loops taking turns
// so each sees the same minutes of a drifting machine): a limit is what some way of reading
// the bytes reaches, and no one loop reaches it on every CPU.
double best_read_rate(const Pieces& w, int reps) {
  std::vector<SumLoop> loops = {sum_wide, sum_mixed, sum_prefetched};
  if (__builtin_cpu_supports("avx2")) loops.push_back(sum_256);
  std::vector<std::vector<double>> rates(loops.size());
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps + 1; ++r)
    for (size_t l = 0; l < loops.size(); ++l) {
      const double rate = read_rate(loops[l], w, sink);
      if (r > 0) rates[l].push_back(rate);  // the first pass warms up
    }
  double best = 0;
  for (const auto& v : rates) best = std::max(best, median(v));
  return best;
}

}  // namespace

double measure_read_bandwidth(size_t bytes, int reps) {
  const size_t n =
      std::max<size_t>(bytes / sizeof(uint64_t) / 256, 1) * 256;  // whole 32-word steps per thread
  auto mem = aligned_alloc_shared(n * sizeof(uint64_t));
  auto* p = static_cast<uint64_t*>(mem.get());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] = i;
  Pieces w;
  w.add(p, n);
  return best_read_rate(w, reps);
}

double measure_read_bandwidth_in_place(const std::vector<std::pair<const void*, size_t>>& ranges, int reps) {
  Pieces w;
  for (const auto& [data, bytes] : ranges) {  // each range's whole 256-byte steps from a 64-byte line
    const auto begin = reinterpret_cast<uintptr_t>(data), first = (begin + 63) / 64 * 64;
    if (first >= begin + bytes) continue;
    w.add(reinterpret_cast<const uint64_t*>(first), (begin + bytes - first) / 256 * 32);
  }
  return w.total == 0 ? 0.0 : best_read_rate(w, reps);
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
