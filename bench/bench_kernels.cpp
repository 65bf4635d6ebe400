// Matrix-vector kernel ceilings per weight format:
// bench_kernels [THREADS] [IN] [OUT] [RUNS] [STREAM_MIB]
// For each format, one [OUT, IN] matrix times one input through ops::linear (the decode GEMV),
// timed with the matrix in cache (the same copy each time: the arithmetic's limit) and
// streamed (copies totalling at least STREAM_MIB, default 512 MiB, read in turn: from memory,
// or from a large last-level cache when STREAM_MIB fits in it), against the read
// probe of the same minutes; and, for the compact formats, the row loop alone on the calling
// thread (the matrix in cache, its input prepared once: `matvec_w_rows`, without the per-call
// input quantisation and thread hand-out; null for F32). Prints one JSON object per format:
// medians of RUNS passes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/quant.hpp"
#include "core/rng.hpp"
#include "core/timer.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/roofline.hpp"
#include "ops/cpu/wdot.hpp"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace braid;
  try {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
    const int64_t in = argc > 2 ? std::atoll(argv[2]) : 768, out = argc > 3 ? std::atoll(argv[3]) : 3072;
    const int runs = argc > 4 ? std::max(1, std::atoi(argv[4])) : 15;
    const int64_t stream_mib = argc > 5 ? std::atoll(argv[5]) : 512;
    check(threads >= 0 && in > 0 && out > 0 && in % kQuantBlock == 0 && stream_mib > 0,
          "usage: bench_kernels [THREADS] [IN (a multiple of 32)] [OUT] [RUNS] [STREAM_MIB (> 0)]");
    set_num_threads(threads);
    Rng rng(1);
    std::vector<float> w(size_t(in * out)), x(static_cast<size_t>(in)), y(static_cast<size_t>(out));
    for (float& v : w) v = float(rng.normal()) * 0.05f;
    for (float& v : x) v = float(rng.normal());
    const double bw =
        ops::measure_read_bandwidth(std::max<size_t>(size_t(stream_mib) << 20, size_t(64) << 20), 5);
    for (DType t : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
      const size_t bytes = row_bytes(t, in) * size_t(out);
      const int64_t copies = std::max<int64_t>(1, int64_t((size_t(stream_mib) << 20) / bytes));
      std::vector<uint8_t> buf(bytes * size_t(copies));
      for (int64_t r = 0; r < out; ++r)
        quantize_row(t, w.data() + r * in, in, buf.data() + size_t(r) * row_bytes(t, in));
      for (int64_t c = 1; c < copies; ++c) std::copy_n(buf.data(), bytes, buf.data() + size_t(c) * bytes);
      auto pass = [&](int64_t n) {  // seconds per product over n copies
        Timer tm;
        for (int64_t c = 0; c < n; ++c)
          ops::linear(x.data(), 1, in, ops::MatRef(buf.data() + size_t(c) * bytes, t), out, nullptr,
                      y.data());
        return tm.seconds() / double(n);
      };
      auto row_loop = [&](const ops::WInputs& prepared) {  // seconds per product, 20 timed together
        Timer tm;
        for (int k = 0; k < 20; ++k) ops::matvec_w_rows(prepared, buf.data(), out, false, y.data(), out);
        return tm.seconds() / 20;
      };
      std::vector<double> hot, cold, loop;
      pass(1);
      for (int r = 0; r < runs; ++r) hot.push_back(pass(1));
      for (int r = 0; r < runs; ++r) cold.push_back(pass(copies));
      char loop_rate[32] = "null";
      if (t != DType::F32) {
        const ops::WInputs prepared = ops::prepare_inputs(t, x.data(), 1, in);
        row_loop(prepared);
        for (int r = 0; r < runs; ++r) loop.push_back(row_loop(prepared));
        std::snprintf(loop_rate, sizeof loop_rate, "%.4g", double(bytes) / median(loop));
      }
      const double h = median(hot), c = median(cold);
      std::printf(
          "{\"format\": \"%s\", \"threads\": %d, \"in\": %lld, \"out\": %lld, \"matrix_bytes\": %zu, "
          "\"cache_bytes_per_s\": %.4g, \"memory_bytes_per_s\": %.4g, \"read_bandwidth_bytes_per_s\": %.4g, "
          "\"memory_fraction_of_read\": %.3f, \"row_loop_bytes_per_s\": %s}\n",
          dtype_name(t), num_threads(), static_cast<long long>(in), static_cast<long long>(out), bytes,
          double(bytes) / h, double(bytes) / c, bw, double(bytes) / c / bw, loop_rate);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
