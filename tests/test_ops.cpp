// Kernels against scalar references in double (random shapes, odd sizes).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.hpp"
#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/recurrence.hpp"
#include "ops/cpu/roofline.hpp"
#include "ops/cpu/wdot.hpp"

using namespace braid;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, double scale = 1.0) {
  Rng r(seed);
  return ::randn(n, r, scale);
}

TEST(Ops, LinearMatchesScalarReference) {
  const int64_t shapes[][3] = {{1, 1, 1},    {1, 37, 53},   {3, 64, 17},
                               {7, 129, 65}, {64, 96, 200}, {1, 1024, 300}};
  for (const auto& s : shapes) {
    const int64_t T = s[0], in = s[1], out = s[2];
    for (bool with_bias : {false, true}) {
      auto x = randn(size_t(T * in), 1), W = randn(size_t(out * in), 2), b = randn(size_t(out), 3);
      std::vector<float> y(size_t(T * out)), r(size_t(T * out));
      ops::linear(x.data(), T, in, W.data(), out, with_bias ? b.data() : nullptr, y.data());
      ops::linear_ref(x.data(), T, in, W.data(), out, with_bias ? b.data() : nullptr, r.data());
      // f32 accumulation of `in` products of N(0,1) values: error ~ eps * sqrt(in) * |x||w|.
      const float tol = 1e-6f * float(in) + 1e-5f;
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], r[i], tol) << T << "x" << in << "x" << out;
    }
  }
}

TEST(Ops, RmsNormMatchesReference) {
  for (int64_t n : {1, 5, 64, 257}) {
    auto x = randn(size_t(3 * n), 4, 3.0), w = randn(size_t(n), 5);
    std::vector<float> y(x.size());
    ops::rmsnorm(x.data(), w.data(), 1e-6f, 3, n, y.data());
    for (int64_t r = 0; r < 3; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += double(x[size_t(r * n + i)]) * x[size_t(r * n + i)];
      const double inv = 1.0 / std::sqrt(ss / double(n) + 1e-6);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[size_t(r * n + i)], double(w[size_t(i)]) * x[size_t(r * n + i)] * inv, 1e-5);
    }
  }
}

TEST(Ops, LayerNormMatchesReference) {
  for (int64_t n : {1, 5, 64, 257}) {
    auto x = randn(size_t(3 * n), 6, 3.0), w = randn(size_t(n), 7), b = randn(size_t(n), 8);
    for (auto& v : x) v += 10.0f;  // a large mean must not cost precision
    std::vector<float> y(x.size());
    ops::layernorm(x.data(), w.data(), b.data(), 1e-5f, 3, n, y.data());
    for (int64_t r = 0; r < 3; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < n; ++i) mean += x[size_t(r * n + i)];
      mean /= double(n);
      for (int64_t i = 0; i < n; ++i) var += (x[size_t(r * n + i)] - mean) * (x[size_t(r * n + i)] - mean);
      const double inv = 1.0 / std::sqrt(var / double(n) + 1e-5);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(y[size_t(r * n + i)], (x[size_t(r * n + i)] - mean) * inv * w[size_t(i)] + b[size_t(i)],
                    1e-5 * (1 + std::abs(w[size_t(i)])));
    }
  }
}

TEST(Ops, SoftmaxMatchesReferenceAndHandlesLargeValues) {
  std::vector<float> x = {1000.f, 999.f, -5.f, 0.f, 1000.f};
  std::vector<double> e(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += e[i] = std::exp(double(x[i]) - 1000.0);
  ops::softmax_inplace(x.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], e[i] / s, 1e-7);
  // Rows long enough for the vector passes, the maximum in the 16-lane part or in the tail,
  // some entries masked.
  for (int64_t n : {37, 1000, 1013}) {
    std::vector<float> v = randn(size_t(n), 40, 4.0);
    v[size_t(n - 1)] = 30.0f;
    if (n == 1000) v[3] = 31.0f;
    for (int64_t i = 5; i < n; i += 9) v[size_t(i)] = -INFINITY;
    std::vector<double> want(v.size());
    double m = -INFINITY, sum = 0;
    for (float f : v) m = std::max(m, double(f));
    for (size_t i = 0; i < v.size(); ++i) sum += want[i] = std::exp(double(v[i]) - m);
    ops::softmax_inplace(v.data(), n);
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], want[i] / sum, 1e-6 * want[i] / sum + 1e-12) << n;
  }
}

TEST(Ops, ActivationsMatchReference) {
  auto g = randn(101, 6, 3.0), u = randn(101, 7);
  std::vector<float> y(101), a = g, b = g, c = g;
  ops::relu2_inplace(c.data(), 101);
  ops::swiglu(g.data(), u.data(), 101, y.data());
  ops::gelu_tanh_inplace(a.data(), 101);
  ops::gelu_erf_inplace(b.data(), 101);
  for (size_t i = 0; i < 101; ++i) {
    const double v = g[i];
    EXPECT_NEAR(y[i], v / (1 + std::exp(-v)) * u[i], 1e-5);
    EXPECT_NEAR(a[i], 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 1e-5);
    EXPECT_NEAR(b[i], 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))), 1e-5);
    EXPECT_NEAR(c[i], v > 0 ? v * v : 0.0, 1e-5);
  }
}

// exp_fast against e^x in double, over every 61st float of [-110, 90] (about 17M values): within
// 2 ulp of the f32 result for normal results, within one subnormal step below, and the limits.
TEST(Ops, ExpFastIsWithinTwoUlp) {
  double worst = 0;
  for (uint32_t bits = 0; bits < 0xFFFFFFFFu - 61; bits += 61) {
    const float x = std::bit_cast<float>(bits);
    if (!(x > -110.0f && x < 90.0f)) continue;
    const double exact = std::exp(double(x));
    const float got = ops::exp_fast(x);
    if (exact > double(std::numeric_limits<float>::max())) {
      ASSERT_TRUE(std::isinf(got)) << x;
      continue;
    }
    const double step = exact < double(std::numeric_limits<float>::min())
                            ? double(std::numeric_limits<float>::denorm_min())
                            : std::ldexp(1.0, std::ilogb(float(exact)) - 23);
    worst = std::max(worst, std::abs(double(got) - exact) / step);
    ASSERT_LE(std::abs(double(got) - exact) / step, 2.0) << "x = " << x;
  }
  RecordProperty("max_ulp", std::to_string(worst));
  EXPECT_EQ(ops::exp_fast(-1000.0f), 0.0f);
  EXPECT_EQ(ops::exp_fast(0.0f), 1.0f);
  EXPECT_TRUE(std::isinf(ops::exp_fast(1000.0f)));
  EXPECT_TRUE(std::isinf(ops::exp_fast(std::numeric_limits<float>::infinity())));
  EXPECT_EQ(ops::exp_fast(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(ops::exp_fast(std::numeric_limits<float>::quiet_NaN())));
}

// log1p_fast against log1p in double over every 61st non-negative float (about 35M values),
// and softplus (exp_fast then log1p_fast) against log(1 + e^x) in double over every 61st
// float of [-110, 20]: within 1 and 2 ulp of the f32 results (one subnormal step below the
// normal range), and the limits.
TEST(Ops, Log1pFastAndSoftplusWithinAnUlpOrTwo) {
  auto ulps = [](float got, double exact) {
    const double step = exact < double(std::numeric_limits<float>::min())
                            ? double(std::numeric_limits<float>::denorm_min())
                            : std::ldexp(1.0, std::ilogb(float(exact)) - 23);
    return std::abs(double(got) - exact) / step;
  };
  double worst_log1p = 0, worst_softplus = 0;
  for (uint32_t bits = 0; bits < 0x7f800000u; bits += 61) {
    const float y = std::bit_cast<float>(bits);
    const double e = ulps(ops::log1p_fast(y), std::log1p(double(y)));
    worst_log1p = std::max(worst_log1p, e);
    ASSERT_LE(e, 1.0) << "y = " << y;
  }
  std::vector<float> xs;
  for (uint32_t bits = 0; bits < 0xFFFFFFFFu - 61; bits += 61) {
    const float x = std::bit_cast<float>(bits);
    if (x > -110.0f && x <= 20.0f) xs.push_back(x);
  }
  std::vector<float> vec(xs);  // the vector loop (this CPU's clone) and the inline scalar form
  ops::softplus_inplace(vec.data(), int64_t(vec.size()));
  for (size_t i = 0; i < xs.size(); ++i) {
    const double exact = std::log1p(std::exp(double(xs[i])));
    const double e = std::max(ulps(vec[i], exact), ulps(ops::softplus(xs[i]), exact));
    worst_softplus = std::max(worst_softplus, e);
    ASSERT_LE(e, 2.0) << "x = " << xs[i];
  }
  RecordProperty("log1p_max_ulp", std::to_string(worst_log1p));
  RecordProperty("softplus_max_ulp", std::to_string(worst_softplus));
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ops::log1p_fast(0.0f), 0.0f);
  EXPECT_EQ(ops::log1p_fast(1e-30f), 1e-30f);
  EXPECT_EQ(ops::log1p_fast(inf), inf);
  EXPECT_TRUE(std::isnan(ops::log1p_fast(nan)));
  EXPECT_EQ(ops::softplus(25.0f), 25.0f);  // torch's threshold: x itself above 20
  EXPECT_EQ(ops::softplus(inf), inf);
  EXPECT_EQ(ops::softplus(-inf), 0.0f);
  EXPECT_TRUE(std::isnan(ops::softplus(nan)));
}

TEST(Ops, RopeRotatesPairsHalfApart) {
  for (int64_t rot : {2, 8, 16}) {
    auto v = randn(16, 8);
    auto ref = v;
    std::vector<float> cs(size_t(rot / 2)), sn(size_t(rot / 2));
    for (int64_t i = 0; i < rot / 2; ++i)
      cs[size_t(i)] = std::cos(0.3 * double(i + 1)), sn[size_t(i)] = std::sin(0.3 * double(i + 1));
    ops::rope_rotate_half(v.data(), cs.data(), sn.data(), rot);
    for (int64_t i = 0; i < 16; ++i) {
      double want = ref[size_t(i)];
      if (i < rot / 2)
        want = double(ref[size_t(i)]) * cs[size_t(i)] - double(ref[size_t(i + rot / 2)]) * sn[size_t(i)];
      else if (i < rot)
        want = double(ref[size_t(i)]) * cs[size_t(i - rot / 2)] +
               double(ref[size_t(i - rot / 2)]) * sn[size_t(i - rot / 2)];
      EXPECT_NEAR(v[size_t(i)], want, 1e-6) << "rot " << rot << " dim " << i;  // dims >= rot untouched
    }
  }
}

TEST(DType, HalfPrecisionConversions) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // exact tie rounds to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // tie rounds up to even
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  // Every finite f16 survives a round trip through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << std::hex << h;
  }
}

}  // namespace

namespace {

// matvec takes rows in groups of 16 (37 rows: two groups and five left), vecmat columns in
// groups of 64 and 16; a row's value must not depend on the rows grouped with it.
TEST(Ops, VectorKernelsMatchReference) {
  for (int64_t cols : {1, 15, 16, 17, 64, 100})
    for (int64_t rows : {9, 37}) {
      auto A = randn(size_t(rows * cols), 9), x = randn(size_t(cols), 10), p = randn(size_t(rows), 11);
      std::vector<float> y(static_cast<size_t>(rows), 1.0f), z(static_cast<size_t>(cols));
      ops::matvec(A.data(), x.data(), rows, cols, 0.5f, true, y.data());
      ops::vecmat(p.data(), A.data(), rows, cols, z.data());
      std::vector<float> later(static_cast<size_t>(rows - 3));  // from row 3: other groups
      ops::matvec(A.data() + 3 * cols, x.data(), rows - 3, cols, 0.5f, false, later.data());
      for (int64_t r = 3; r < rows; ++r) EXPECT_EQ(later[size_t(r - 3)] + 1.0f, y[size_t(r)]) << r;
      for (int64_t r = 0; r < rows; ++r) {
        double d = 0;
        for (int64_t c = 0; c < cols; ++c) d += double(A[size_t(r * cols + c)]) * x[size_t(c)];
        EXPECT_NEAR(y[size_t(r)], 1.0 + 0.5 * d, 1e-5);
        EXPECT_NEAR(ops::dot(A.data() + r * cols, x.data(), cols), d, 1e-5);
      }
      for (int64_t c = 0; c < cols; ++c) {
        double d = 0;
        for (int64_t r = 0; r < rows; ++r) d += double(p[size_t(r)]) * A[size_t(r * cols + c)];
        EXPECT_NEAR(z[size_t(c)], d, 1e-5);
      }
    }
}

// Several inputs through one pass over A give each input, bit for bit, what it gets alone
// (1-7 inputs: one to four a pass, then the rest), for row and column counts across the
// kernels' groups (16 rows, 64 and 16 columns) and outputs not packed together.
TEST(Ops, MultiInputVectorKernelsEqualOneInputAtATime) {
  for (int64_t cols : {1, 15, 16, 17, 64, 80, 100, 128})
    for (int64_t rows : {1, 9, 16, 37})
      for (int64_t n = 1; n <= 7; ++n) {
        const int64_t xs = cols + 3, ps = rows + 5, ys = std::max(rows, cols) + 2;
        auto A = randn(size_t(rows * cols), 12), x = randn(size_t(n * xs), 13), p = randn(size_t(n * ps), 14);
        std::vector<float> y(size_t(n * ys), -7.0f), z(size_t(n * ys), -7.0f);
        ops::matvec_multi(A.data(), x.data(), n, xs, rows, cols, 0.125f, y.data(), ys);
        ops::vecmat_multi(p.data(), n, ps, A.data(), rows, cols, z.data(), ys);
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> one(static_cast<size_t>(rows)), col(static_cast<size_t>(cols));
          ops::matvec(A.data(), x.data() + i * xs, rows, cols, 0.125f, false, one.data());
          ops::vecmat(p.data() + i * ps, A.data(), rows, cols, col.data());
          for (int64_t r = 0; r < rows; ++r)
            ASSERT_EQ(y[size_t(i * ys + r)], one[size_t(r)])
                << "cols " << cols << " rows " << rows << " n " << n;
          for (int64_t c = 0; c < cols; ++c)
            ASSERT_EQ(z[size_t(i * ys + c)], col[size_t(c)])
                << "cols " << cols << " rows " << rows << " n " << n << " i " << i << " c " << c;
          for (int64_t k = std::max(rows, cols); k < ys; ++k) {  // nothing past an output
            ASSERT_EQ(y[size_t(i * ys + k)], -7.0f);
            ASSERT_EQ(z[size_t(i * ys + k)], -7.0f);
          }
        }
      }
}

// The causal convolution one step at a time (decoding's vectorised path), also with the
// channels split into ranges, gives, bit for bit, what the whole sequence at once gives, and
// the same carried window; both match a direct evaluation of the sum. Also with more taps
// than a sequence's weights are laid out for (12 > 8).
TEST(Ops, CausalConvStepsEqualTheWholeSequence) {
  for (const auto& [C, K] : {std::pair<int64_t, int64_t>{5, 4}, {300, 4}, {513, 3}, {7, 1}, {600, 12}}) {
    const int64_t T = 9;
    const auto in = randn(size_t(T * C), 40 + uint64_t(C)), w = randn(size_t(C * K), 41),
               b = randn(size_t(C), 42), win0 = randn(size_t((K - 1) * C), 43);
    for (bool silu : {false, true})
      for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
        std::vector<float> wa = win0, wb = win0, ya(size_t(T * C)), yb(size_t(T * C));
        ops::causal_conv1d(in.data(), C, T, C, w.data(), bias, K, silu, wa.data(), ya.data());
        for (int64_t t = 0; t < T; ++t)
          ops::causal_conv1d(in.data() + t * C, C, 1, C, w.data(), bias, K, silu, wb.data(),
                             yb.data() + t * C);
        // Threads splitting a step's channels: three uneven ranges, each on its own.
        std::vector<float> wc = win0, yc(size_t(T * C));
        const int64_t cuts[4] = {0, C / 3, C / 3 + C / 2, C};
        for (int64_t t = 0; t < T; ++t)
          for (int r = 0; r < 3; ++r)
            ops::causal_conv1d_channels(in.data() + t * C, C, 1, C, cuts[r], cuts[r + 1] - cuts[r], w.data(),
                                        bias, K, silu, wc.data(), yc.data() + t * C);
        ASSERT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)), 0) << C << " " << K;
        ASSERT_EQ(std::memcmp(ya.data(), yc.data(), ya.size() * sizeof(float)), 0) << C << " " << K;
        if (!wa.empty()) {  // K = 1 carries no window
          ASSERT_EQ(std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)), 0) << C << " " << K;
          ASSERT_EQ(std::memcmp(wa.data(), wc.data(), wa.size() * sizeof(float)), 0) << C << " " << K;
        }
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < C; ++c) {
            double acc = bias ? bias[c] : 0.0;
            for (int64_t k = 0; k < K; ++k) {
              const int64_t src = t + k - (K - 1);
              acc += double(w[size_t(c * K + k)]) *
                     (src >= 0 ? in[size_t(src * C + c)] : win0[size_t((K - 1 + src) * C + c)]);
            }
            if (silu) acc /= 1.0 + std::exp(-acc);
            EXPECT_NEAR(ya[size_t(t * C + c)], acc, 1e-5 * (1 + std::fabs(acc)));
          }
      }
  }
}

// Decoding's f32 GEMV on every path the CPU runs: each value is within rounding of the
// double-precision product and bit for bit the same whatever else shares its call (how
// many inputs, which rows; the AVX-512 kernel blocks 3 rows x 2 inputs and its tails).
TEST(Ops, BatchGemvOnEveryPathIsExactPerValue) {
  const ops::Isa was = ops::active_isa();
  int paths = 0;
  for (ops::Isa isa : {ops::Isa::Scalar, ops::Isa::Avx2, ops::Isa::Avx512}) {
    if (!ops::isa_supported(isa)) continue;
    ops::set_active_isa(isa);
    ++paths;
    for (int64_t cols : {1, 15, 16, 33, 64, 100, 192, 257}) {
      const int64_t rows = 11, B = 16;
      const auto A = randn(size_t(rows * cols), 30 + uint64_t(cols)), x = randn(size_t(B * cols), 31);
      std::vector<float> all(size_t(B * rows));
      ops::matvec_batch(A.data(), x.data(), B, rows, cols, false, all.data(), rows);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t r = 0; r < rows; ++r) {
          double d = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            d += double(A[size_t(r * cols + c)]) * x[size_t(b * cols + c)];
            mag += std::fabs(double(A[size_t(r * cols + c)]) * x[size_t(b * cols + c)]);
          }
          EXPECT_NEAR(all[size_t(b * rows + r)], d, 1e-6 * mag) << ops::isa_name(isa) << " cols " << cols;
        }
      for (int64_t nb : {1, 2, 3, 5, 6, 7, 12}) {
        for (int64_t b0 = 0; b0 + nb <= B; b0 += 3) {
          for (int64_t r0 : {0, 1, 2, 4}) {
            // Rows [r0, rows) for inputs [b0, b0 + nb), accumulated onto 1.
            std::vector<float> part(size_t(nb * rows), 1.0f);
            ops::matvec_batch(A.data() + r0 * cols, x.data() + b0 * cols, nb, rows - r0, cols, true,
                              part.data(), rows);
            for (int64_t b = 0; b < nb; ++b)
              for (int64_t r = r0; r < rows; ++r)
                ASSERT_EQ(part[size_t(b * rows + r - r0)], 1.0f + all[size_t((b0 + b) * rows + r)])
                    << ops::isa_name(isa) << " cols " << cols << " inputs " << b0 << "+" << nb << " row " << r
                    << " from " << r0;
          }
        }
      }
    }
  }
  ops::set_active_isa(was);
  EXPECT_GE(paths, 1);
}

// The limits benchmarks compare against are positive, finite rates, for any buffer size.
TEST(Ops, RooflineProbesGiveRates) {
  for (size_t bytes : {size_t(1), size_t(1) << 20, (size_t(1) << 20) + 12345}) {
    const double bw = ops::measure_read_bandwidth(bytes, 2);
    EXPECT_TRUE(std::isfinite(bw) && bw > 0) << bytes;
  }
  const double peak = ops::measure_sgemm_peak(64, 2);
  EXPECT_TRUE(std::isfinite(peak) && peak > 0);
  // Bytes read in place: ranges at odd offsets and of odd lengths are read only inside
  // (the address sanitizer build checks it); ranges with no whole 256-byte step give 0.
  std::vector<uint8_t> a(size_t(3) << 20, 1), b(5000, 2);
  const double in_place = ops::measure_read_bandwidth_in_place(
      {{a.data() + 3, a.size() - 70}, {b.data() + 1, b.size() - 1}, {b.data(), 10}}, 2);
  EXPECT_TRUE(std::isfinite(in_place) && in_place > 0);
  const uint8_t* line = b.data() + (64 - reinterpret_cast<uintptr_t>(b.data()) % 64) % 64;
  EXPECT_EQ(ops::measure_read_bandwidth_in_place({{line + 1, 300}, {b.data(), 0}}, 2), 0.0);
  EXPECT_EQ(ops::measure_read_bandwidth_in_place({}, 2), 0.0);
}

// The delta-rule decode step against the recurrence in double, for value widths around the
// kernel's groups of 64 and 16 columns (and the 64 and 128 of real models), several steps.
TEST(Ops, DeltaRuleStepMatchesReference) {
  for (int64_t dv : {1, 15, 16, 17, 64, 80, 100, 128})
    for (int64_t dk : {1, 8, 37}) {
      const int64_t T = 3;
      auto S = randn(size_t(dk * dv), 30, 0.5), q = randn(size_t(T * dk), 31), k = randn(size_t(T * dk), 32),
           v = randn(size_t(T * dv), 33);
      std::vector<double> S2(S.begin(), S.end());
      std::vector<float> o(static_cast<size_t>(dv));
      for (int64_t t = 0; t < T; ++t) {
        const float a = 0.8f, b = 0.6f;
        const float *qt = q.data() + t * dk, *kt = k.data() + t * dk, *vt = v.data() + t * dv;
        ops::delta_rule_step(S.data(), dk, dv, a, b, qt, kt, vt, o.data());
        for (int64_t j = 0; j < dv; ++j) {
          double e = 0;
          for (int64_t i = 0; i < dk; ++i) e += double(a) * S2[size_t(i * dv + j)] * kt[i];
          const double delta = double(b) * (vt[j] - e);
          double want = 0, mag = 0;
          for (int64_t i = 0; i < dk; ++i) {
            double& s = S2[size_t(i * dv + j)];
            s = double(a) * s + double(kt[i]) * delta;
            want += s * qt[i];
            mag += std::fabs(s * qt[i]);
          }
          EXPECT_NEAR(o[size_t(j)], want, 1e-5 * (1 + mag)) << "dv " << dv << " dk " << dk << " t " << t;
        }
      }
      for (size_t i = 0; i < S.size(); ++i)
        EXPECT_NEAR(S[i], S2[i], 1e-5 * (1 + std::fabs(S2[i]))) << "dv " << dv << " dk " << dk;
    }
}

// The fused decode state updates against the recurrence in double, for state widths around
// the 16-lane step (and the 16 and 128 of real models), several steps in a row; 37 rows take
// the scan's groups of 16 channels and the ones left after them.
TEST(Ops, RecurrenceKernelsMatchReference) {
  for (int64_t n : {1, 15, 16, 17, 40, 128})
    for (int64_t rows : {5, 37}) {
      const int64_t T = 3;
      auto S = randn(size_t(rows * n), 20), x = randn(size_t(T * rows), 21), b = randn(size_t(T * n), 22),
           c = randn(size_t(T * n), 23), A = randn(size_t(rows * n), 24),
           dt = randn(size_t(T * rows), 25, 0.3);
      for (float& a : A) a = -std::fabs(a);
      for (float& d : dt) d = std::fabs(d);
      std::vector<double> S2(S.begin(), S.end()), h2(S.begin(), S.end());
      std::vector<float> h = S, y(size_t(T * rows)), ys(size_t(T * rows));
      ops::selective_scan(h.data(), A.data(), rows, n, T, dt.data(), x.data(), rows, b.data(), c.data(), n,
                          ys.data());
      for (int64_t t = 0; t < T; ++t) {
        const float a = 0.9f, d = 0.7f;
        ops::decay_update_readout(S.data(), rows, n, a, d, x.data() + t * rows, b.data() + t * n,
                                  c.data() + t * n, y.data() + t * rows);
        for (int64_t r = 0; r < rows; ++r) {
          double want = 0, want_scan = 0, mag = 0;
          const double dr = dt[size_t(t * rows + r)], xr = x[size_t(t * rows + r)];
          for (int64_t i = 0; i < n; ++i) {
            const size_t k = size_t(r * n + i), j = size_t(t * n + i);
            S2[k] = double(a) * S2[k] + double(d) * xr * b[j];
            want += S2[k] * c[j];
            h2[k] = std::exp(double(A[k]) * dr) * h2[k] + dr * b[j] * xr;
            want_scan += h2[k] * c[j];
            mag += std::fabs(S2[k] * c[j]) + std::fabs(h2[k] * c[j]);
          }
          EXPECT_NEAR(y[size_t(t * rows + r)], want, 1e-5 * (1 + mag)) << "n " << n << " t " << t;
          EXPECT_NEAR(ys[size_t(t * rows + r)], want_scan, 1e-5 * (1 + mag)) << "n " << n << " t " << t;
        }
      }
      for (size_t k = 0; k < S.size(); ++k) {
        EXPECT_NEAR(S[k], S2[k], 1e-5 * (1 + std::fabs(S2[k]))) << "n " << n;
        EXPECT_NEAR(h[k], h2[k], 1e-5 * (1 + std::fabs(h2[k]))) << "n " << n;
      }
    }
}

}  // namespace

namespace {

TEST(Ops, LinearMultiMatchesSeparateProjections) {
  const int64_t in = 96;
  for (int64_t T : {1, 3}) {
    auto x = randn(size_t(T * in), 12);
    auto W1 = randn(size_t(300 * in), 13), W2 = randn(size_t(7 * in), 14), W3 = randn(size_t(129 * in), 15);
    auto b2 = randn(7, 16);
    std::vector<float> y1(size_t(T * 300)), y2(size_t(T * 7)), y3(size_t(T * 129));
    const ops::Projection p[3] = {{W1.data(), 300, nullptr, y1.data()},
                                  {W2.data(), 7, b2.data(), y2.data()},
                                  {W3.data(), 129, nullptr, y3.data()}};
    ops::linear_multi(x.data(), T, in, p, 3);
    const std::vector<float>* ys[3] = {&y1, &y2, &y3};
    for (int i = 0; i < 3; ++i) {
      std::vector<float> r(ys[i]->size());
      ops::linear_ref(x.data(), T, in, p[i].W.f32(), p[i].out, p[i].bias, r.data());
      for (size_t k = 0; k < r.size(); ++k)
        ASSERT_NEAR((*ys[i])[k], r[k], 1e-4) << "matrix " << i << " T=" << T;
    }
  }
}

}  // namespace

namespace {

// Mamba-1's scan at state width 16 takes up to 16 channels at a time: each channel gets the
// same output and state, bit for bit, whichever channels share its group (37 = two groups and
// five left), as when it is scanned alone.
TEST(Ops, SelectiveScanGroupsGiveEachChannelItsOwnResult) {
  const int64_t rows = 37, n = 16, T = 3;
  auto h = randn(size_t(rows * n), 30), x = randn(size_t(T * rows), 31), b = randn(size_t(T * n), 32),
       c = randn(size_t(T * n), 33), A = randn(size_t(rows * n), 34), dt = randn(size_t(T * rows), 35, 0.3);
  for (float& a : A) a = -std::fabs(a);
  for (float& d : dt) d = std::fabs(d);
  std::vector<float> h1 = h, y(size_t(T * rows)), y1(size_t(T * rows));
  ops::selective_scan(h.data(), A.data(), rows, n, T, dt.data(), x.data(), rows, b.data(), c.data(), n,
                      y.data());
  for (int64_t r = 0; r < rows; ++r)
    ops::selective_scan(h1.data() + r * n, A.data() + r * n, 1, n, T, dt.data() + r, x.data() + r, rows,
                        b.data(), c.data(), n, y1.data() + r);
  EXPECT_EQ(y, y1);
  EXPECT_EQ(h, h1);
}

}  // namespace
