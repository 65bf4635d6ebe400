// Compact weight formats: the row layouts, quantization error bounds, every kernel path the
// CPU can run against a double-precision reference, linear() on compact matrices in its
// three modes (GEMV, batched decode rows, panel GEMM), and the safetensors encoding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/quant.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "io/safetensors.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid {
namespace {

const DType kCompact[] = {DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0};
const ops::Isa kIsas[] = {ops::Isa::Scalar, ops::Isa::Avx2, ops::Isa::Avx512};

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(r.normal()) * scale;
  return v;
}

std::vector<uint8_t> quantized(DType t, const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<uint8_t> q(size_t(rows) * row_bytes(t, cols));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, w.data() + r * cols, cols, q.data() + r * row_bytes(t, cols));
  return q;
}

// W times x and a second input on one path, as batched decode multiplies them (row groups
// where the path has them): y[r] for x, then y[rows + r] for the other input.
std::vector<float> with_another_input(ops::Isa isa, DType t, const std::vector<uint8_t>& q,
                                      const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> xb(x);
  for (int64_t i = 0; i < cols; ++i) xb.push_back(x[size_t(cols - 1 - i)] * 0.5f);
  std::vector<float> y(size_t(2 * rows));
  ops::matvec_w_rows(ops::prepare_inputs(isa, t, xb.data(), 2, cols), q.data(), rows, false, y.data(), rows);
  return y;
}

float scale_of(const uint8_t* row, int64_t b) {
  uint16_t h;
  std::memcpy(&h, row + 2 * b, 2);
  return f16_to_f32(h);
}

TEST(QuantFormat, RowBytes) {
  EXPECT_EQ(row_bytes(DType::F32, 64), 256u);
  EXPECT_EQ(row_bytes(DType::BF16, 64), 128u);
  EXPECT_EQ(row_bytes(DType::Q8_0, 64), 2u * 34u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 64), 2u * 18u);
  EXPECT_TRUE(storable_as(DType::Q4_0, 96));
  EXPECT_FALSE(storable_as(DType::Q4_0, 48));
  EXPECT_TRUE(storable_as(DType::BF16, 48));
}

// The documented Q4_0 layout, written out by hand: a block whose largest magnitude is -8
// has scale exactly 1, so every code is its value + 8.
TEST(QuantFormat, Q4LayoutIsAsDocumented) {
  std::vector<float> x(32);
  for (int j = 0; j < 16; ++j) x[size_t(j)] = float(j - 8), x[size_t(j + 16)] = float(7 - j % 8);
  std::vector<uint8_t> q(row_bytes(DType::Q4_0, 32));
  quantize_row(DType::Q4_0, x.data(), 32, q.data());
  EXPECT_EQ(q[0] | q[1] << 8, 0x3C00);  // f16 1.0
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(q[size_t(2 + j)] & 15, j) << j;
    EXPECT_EQ(q[size_t(2 + j)] >> 4, 15 - j % 8) << j;
  }
  std::vector<float> back(32);
  dequantize_row(DType::Q4_0, q.data(), 32, back.data());
  EXPECT_EQ(back, x);
}

// The grouped Q4_0 layout, offsets worked out by hand for a row of 17 blocks (a group of 16
// and a group of one): word k of block j of a group of m blocks at word k * m + j of the group.
TEST(QuantFormat, Q4GroupedLayoutIsAsDocumented) {
  const int64_t nb = 17, n = nb * 32;
  auto code = [](int64_t b, int64_t e) { return e == 0 ? 0 : int((b * 3 + e) % 16); };
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < nb; ++b)  // element 0 is -8: every scale is exactly 1
    for (int64_t e = 0; e < 32; ++e) x[size_t(b * 32 + e)] = float(code(b, e) - 8);
  std::vector<uint8_t> q(row_bytes(DType::Q4_0, n));
  quantize_row(DType::Q4_0, x.data(), n, q.data());
  const uint8_t* codes = q.data() + 2 * nb;
  // (block, word, byte offset from the codes' start)
  const int64_t cases[][3] = {{0, 0, 0},   {1, 0, 4},    {0, 1, 64},  {15, 1, 124},
                              {5, 3, 212}, {16, 0, 256}, {16, 3, 268}};
  for (const auto& c : cases)
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t b = c[0], e = 4 * c[1] + i;
      EXPECT_EQ(int(codes[c[2] + i]), code(b, e) | code(b, e + 16) << 4) << "block " << b << " word " << c[1];
    }
  std::vector<float> back(static_cast<size_t>(n));
  dequantize_row(DType::Q4_0, q.data(), n, back.data());
  EXPECT_EQ(back, x);
}

TEST(QuantFormat, Q8LayoutIsAsDocumented) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = float((i * 37) % 255 - 127) * (i < 32 ? 1.0f : 0.5f);
  x[0] = 127.0f, x[32] = -63.5f;  // block maxima: scales 1 and 0.5
  std::vector<uint8_t> q(row_bytes(DType::Q8_0, 64));
  quantize_row(DType::Q8_0, x.data(), 64, q.data());
  EXPECT_EQ(scale_of(q.data(), 0), 1.0f);
  EXPECT_EQ(scale_of(q.data(), 1), 0.5f);
  std::vector<float> back(64);
  dequantize_row(DType::Q8_0, q.data(), 64, back.data());
  EXPECT_EQ(back, x);
}

// The grouped Q8_0 layout, offsets worked out by hand for a row of 19 blocks (a group of 16
// and a group of 3): word s of block j of a group of m blocks at word s * m + j of the group,
// word s holding elements 4k .. 4k + 3 for k = s / 2 + 4 * (s % 2), each code as q + 128.
TEST(QuantFormat, Q8GroupedLayoutIsAsDocumented) {
  const int64_t nb = 19, n = nb * 32;
  auto code = [](int64_t b, int64_t e) { return e == 0 ? 127 : int((b * 29 + e * 7) % 255) - 127; };
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < nb; ++b)  // element 0 is 127: every scale is exactly 1
    for (int64_t e = 0; e < 32; ++e) x[size_t(b * 32 + e)] = float(code(b, e));
  std::vector<uint8_t> q(row_bytes(DType::Q8_0, n));
  quantize_row(DType::Q8_0, x.data(), n, q.data());
  const uint8_t* codes = q.data() + 2 * nb;
  // (block, first element, byte offset from the codes' start)
  const int64_t cases[][3] = {{0, 0, 0},    {1, 0, 4},    {0, 16, 64},   {15, 4, 188},
                              {5, 28, 468}, {16, 0, 512}, {17, 20, 552}, {18, 28, 604}};
  for (const auto& c : cases)
    for (int64_t i = 0; i < 4; ++i)
      EXPECT_EQ(int(codes[c[2] + i]), code(c[0], c[1] + i) + 128)
          << "block " << c[0] << " element " << c[1] + i;
  std::vector<float> back(static_cast<size_t>(n));
  dequantize_row(DType::Q8_0, q.data(), n, back.data());
  EXPECT_EQ(back, x);
}

// Round to nearest: each value within half a step of its block's scale (Q4_0's positive
// extreme may saturate a step away); bf16 / f16 to their rounding.
TEST(QuantFormat, ErrorWithinHalfAStep) {
  const int64_t cols = 256;
  const std::vector<float> w = randn(size_t(cols), 3, 0.05f);
  for (DType t : kCompact) {
    std::vector<uint8_t> q = quantized(t, w, 1, cols);
    std::vector<float> back(static_cast<size_t>(cols));
    dequantize_row(t, q.data(), cols, back.data());
    for (int64_t i = 0; i < cols; ++i) {
      const float x = w[size_t(i)], e = std::fabs(back[size_t(i)] - x);
      if (t == DType::BF16) {
        EXPECT_LE(e, std::fabs(x) * 0x1p-8f) << i;
      } else if (t == DType::F16) {
        EXPECT_LE(e, std::fabs(x) * 0x1p-11f + 0x1p-25f) << i;
      } else {
        float amax = 0.0f;
        for (int64_t j = i / 32 * 32; j < i / 32 * 32 + 32; ++j)
          amax = std::max(amax, std::fabs(w[size_t(j)]));
        const float d = std::fabs(scale_of(q.data(), i / 32));
        EXPECT_NEAR(d, amax / (t == DType::Q8_0 ? 127.0f : 8.0f), amax * 1e-3f) << i;
        EXPECT_LE(e, (t == DType::Q4_0 ? 1.0f : 0.5f) * d * 1.0001f) << dtype_name(t) << " " << i;
      }
    }
  }
}

TEST(QuantFormat, ZeroBlockAndBadInput) {
  std::vector<float> z(32, 0.0f), back(32, 1.0f);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    std::vector<uint8_t> q(row_bytes(t, 32));
    quantize_row(t, z.data(), 32, q.data());
    dequantize_row(t, q.data(), 32, back.data());
    EXPECT_EQ(back, z);
  }
  std::vector<float> bad(32, 0.5f);
  std::vector<uint8_t> q(row_bytes(DType::Q8_0, 32));
  bad[5] = NAN;
  EXPECT_NE(error_of([&] { quantize_row(DType::Q8_0, bad.data(), 32, q.data()); }).find("non-finite"),
            std::string::npos);
  bad[5] = 1e12f;
  EXPECT_NE(error_of([&] { quantize_row(DType::Q8_0, bad.data(), 32, q.data()); }).find("overflows f16"),
            std::string::npos);
  EXPECT_NE(error_of([&] { quantize_row(DType::Q4_0, bad.data(), 31, q.data()); }).find("31 values"),
            std::string::npos);
}

// Every path this CPU runs, every format, lengths with and without SIMD tails.
TEST(WeightKernels, EveryPathMatchesTheReference) {
  const ops::Int8Activations off(false);
  int paths = 0;
  for (ops::Isa isa : kIsas) {
    if (!ops::isa_supported(isa)) continue;
    ++paths;
    for (DType t : kCompact)
      for (int64_t cols : {32, 64, 96, 160, 768, 800, 37, 100}) {
        if (!storable_as(t, cols)) continue;
        const int64_t rows = 5;
        const std::vector<float> w = randn(size_t(rows * cols), 7 + uint64_t(cols), 0.1f),
                                 x = randn(size_t(cols), 8);
        const std::vector<uint8_t> q = quantized(t, w, rows, cols);
        std::vector<float> y(size_t(rows), 0.5f), deq(size_t(rows * cols)), deq_scalar(size_t(rows * cols));
        ops::matvec_w(isa, t, q.data(), x.data(), rows, cols, true, y.data());
        ops::dequantize_rows(isa, t, q.data(), rows, cols, deq.data());
        ops::dequantize_rows(ops::Isa::Scalar, t, q.data(), rows, cols, deq_scalar.data());
        EXPECT_EQ(deq, deq_scalar) << ops::isa_name(isa) << " " << dtype_name(t) << " cols " << cols;
        for (int64_t r = 0; r < rows; ++r) {
          const uint8_t* row = q.data() + r * row_bytes(t, cols);
          double mag = 0;
          for (int64_t i = 0; i < cols; ++i)
            mag += std::fabs(double(deq_scalar[size_t(r * cols + i)]) * x[size_t(i)]);
          EXPECT_NEAR(y[size_t(r)], 0.5 + ops::dot_w_ref(t, row, x.data(), cols), 1e-6 * mag + 1e-7)
              << ops::isa_name(isa) << " " << dtype_name(t) << " cols " << cols << " row " << r;
        }
      }
  }
  EXPECT_GE(paths, 1);
}

// Rows computed four at a time (one input's stream of rows, or batched inputs) give exactly
// what each row alone gives, on every path, with f32 and with int8 activations; short rows
// (Mamba's dt_proj has 48 columns) and rows with a scalar tail included.
TEST(WeightKernels, RowGroupsGiveEachRowItsSingleResult) {
  const int64_t rows = 11;
  for (bool int8 : {false, true})
    for (int64_t cols : {32, 64, 544, 48, 37, 200}) {
      const ops::Int8Activations mode(int8);
      const std::vector<float> w = randn(size_t(rows * cols), 51, 0.1f), x = randn(size_t(cols), 52);
      for (ops::Isa isa : kIsas) {
        if (!ops::isa_supported(isa)) continue;
        for (DType t : kCompact) {
          if (!storable_as(t, cols)) continue;
          const std::vector<uint8_t> q = quantized(t, w, rows, cols);
          std::vector<float> all(static_cast<size_t>(rows));
          ops::matvec_w(isa, t, q.data(), x.data(), rows, cols, false, all.data());
          const std::vector<float> grouped = with_another_input(isa, t, q, x, rows, cols);
          for (int64_t r = 0; r < rows; ++r) {
            EXPECT_EQ(grouped[size_t(r)], all[size_t(r)]) << ops::isa_name(isa) << " " << dtype_name(t);
            float one = 0.0f;
            ops::matvec_w(isa, t, q.data() + r * row_bytes(t, cols), x.data(), 1, cols, false, &one);
            EXPECT_EQ(all[size_t(r)], one) << ops::isa_name(isa) << " " << dtype_name(t) << " row " << r;
          }
        }
      }
    }
}

// Int8 activations: every path quantizes x to the same codes and scales (including blocks of
// zeros, ties, and a non-finite value), and its products match the double reference of the
// same arithmetic for Q8_0 and Q4_0, row by row and four rows at a time (batched).
TEST(WeightKernels, Int8ActivationsOnEveryPath) {
  const ops::Int8Activations on(true);
  const int64_t cols = 1056;  // 33 blocks: two-block steps with an odd one left, 16-block scale groups
  std::vector<float> x = randn(size_t(cols), 61);
  for (int i = 32; i < 64; ++i) x[size_t(i)] = 0.0f;                        // a zero block
  for (int i = 64; i < 96; ++i) x[size_t(i)] = float(i % 5) * 0.5f - 1.0f;  // ties at amax / 254 steps
  x[100] = 3.0f;
  std::vector<int8_t> q_ref(static_cast<size_t>(cols));
  std::vector<float> d_ref(size_t(cols / 32));
  ops::quantize_activations(ops::Isa::Scalar, x.data(), cols, q_ref.data(), d_ref.data());
  EXPECT_EQ(d_ref[1], 0.0f);
  for (int64_t i = 0; i < cols; ++i) {  // the documented rule, code by code
    const float d = d_ref[size_t(i / 32)];
    EXPECT_EQ(q_ref[size_t(i)], d > 0 ? int(std::nearbyint(x[size_t(i)] * (1.0f / d))) : 0) << i;
    EXPECT_LE(std::abs(q_ref[size_t(i)]), 127);
  }
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0;
    for (int64_t i = b * 32; i < b * 32 + 32; ++i) amax = std::max(amax, std::fabs(x[size_t(i)]));
    EXPECT_EQ(d_ref[size_t(b)], amax / 127.0f) << b;
  }
  const int64_t rows = 9;
  const std::vector<float> w = randn(size_t(rows * cols), 62, 0.1f);
  int paths = 0;
  for (ops::Isa isa : kIsas) {
    if (!ops::isa_supported(isa)) continue;
    ++paths;
    std::vector<int8_t> q(static_cast<size_t>(cols));
    std::vector<float> d(size_t(cols / 32));
    ops::quantize_activations(isa, x.data(), cols, q.data(), d.data());
    EXPECT_EQ(q, q_ref) << ops::isa_name(isa);
    EXPECT_EQ(d, d_ref) << ops::isa_name(isa);
    for (DType t : {DType::Q8_0, DType::Q4_0}) {
      const std::string what = std::string(ops::isa_name(isa)) + " " + dtype_name(t);
      const std::vector<uint8_t> wq = quantized(t, w, rows, cols);
      std::vector<float> y(size_t(rows), 0.25f), deq(size_t(rows * cols));
      ops::matvec_w(isa, t, wq.data(), x.data(), rows, cols, true, y.data());
      ops::dequantize_rows(ops::Isa::Scalar, t, wq.data(), rows, cols, deq.data());
      const std::vector<float> grouped = with_another_input(isa, t, wq, x, rows, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = wq.data() + r * row_bytes(t, cols);
        double mag = 0;  // the size of the terms summed, for the f32 rounding allowed
        for (int64_t i = 0; i < cols; ++i) mag += std::fabs(double(deq[size_t(r * cols + i)]) * x[size_t(i)]);
        const double want = ops::dot_wq_ref(t, row, x.data(), cols);
        EXPECT_NEAR(y[size_t(r)], 0.25 + want, 1e-6 * mag + 1e-7) << what << " row " << r;
        // Quantizing x costs at most half a code step per value.
        EXPECT_NEAR(want, ops::dot_w_ref(t, row, x.data(), cols), 0.02 * mag) << what << " row " << r;
        float one = 0.0f;
        ops::matvec_w(isa, t, row, x.data(), 1, cols, false, &one);
        EXPECT_EQ(y[size_t(r)], 0.25f + one) << what << " row " << r << " alone";
        EXPECT_EQ(grouped[size_t(r)], one) << what << " row " << r << " batched";
      }
    }
  }
  EXPECT_GE(paths, 1);
  // A non-finite activation makes its rows NaN, as in f32.
  x[200] = INFINITY;
  const std::vector<uint8_t> wq = quantized(DType::Q8_0, w, rows, cols);
  std::vector<float> y(static_cast<size_t>(rows));
  for (ops::Isa isa : kIsas)
    if (ops::isa_supported(isa)) {
      ops::matvec_w(isa, DType::Q8_0, wq.data(), x.data(), rows, cols, false, y.data());
      for (float v : y) EXPECT_TRUE(std::isnan(v)) << ops::isa_name(isa);
    }
}

// Rows of every block count from 1 to 9 (each tail of the two- and four-block steps, and
// 16-block scale groups, the 16-block code groups of both formats, whole or split at the end: a last group of
// at most 8 blocks or of 9 to 15, after none, one, two, three, four or more whole groups: the
// shapes of the AVX-512 row loops, which hold a row's one group's activations in registers
// or read two or more groups' at each use, their group count fixed at compile time up to
// four and counted at run time past that) match the reference of int8 activations on every
// path, alone and four rows at a time (batched).
TEST(WeightKernels, Int8ProductsForEveryBlockCount) {
  const ops::Int8Activations on(true);
  const int64_t rows = 6;
  for (int64_t nb :
       {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 19, 24, 28, 32, 40, 44, 48, 60, 64, 72, 76, 80, 90, 100}) {
    const int64_t cols = nb * 32;
    const std::vector<float> x = randn(size_t(cols), 70 + uint64_t(nb)),
                             w = randn(size_t(rows * cols), 90 + uint64_t(nb), 0.1f);
    for (ops::Isa isa : kIsas) {
      if (!ops::isa_supported(isa)) continue;
      for (DType t : {DType::Q8_0, DType::Q4_0}) {
        const std::string what =
            std::string(ops::isa_name(isa)) + " " + dtype_name(t) + " blocks " + std::to_string(nb);
        const std::vector<uint8_t> wq = quantized(t, w, rows, cols);
        std::vector<float> y(static_cast<size_t>(rows)), deq(size_t(rows * cols));
        ops::matvec_w(isa, t, wq.data(), x.data(), rows, cols, false, y.data());
        ops::dequantize_rows(ops::Isa::Scalar, t, wq.data(), rows, cols, deq.data());
        const std::vector<float> grouped = with_another_input(isa, t, wq, x, rows, cols);
        for (int64_t r = 0; r < rows; ++r) {
          const uint8_t* row = wq.data() + r * row_bytes(t, cols);
          double mag = 0;
          for (int64_t i = 0; i < cols; ++i)
            mag += std::fabs(double(deq[size_t(r * cols + i)]) * x[size_t(i)]);
          EXPECT_NEAR(y[size_t(r)], ops::dot_wq_ref(t, row, x.data(), cols), 1e-6 * mag + 1e-7) << what;
          float one = 0.0f;
          ops::matvec_w(isa, t, row, x.data(), 1, cols, false, &one);
          EXPECT_EQ(y[size_t(r)], one) << what << " row " << r << " alone";
          EXPECT_EQ(grouped[size_t(r)], one) << what << " row " << r << " batched";
        }
      }
    }
  }
}

TEST(WeightKernels, BatchGivesEachInputItsSingleResult) {
  const int64_t rows = 9, cols = 128, B = 3;
  const std::vector<float> w = randn(size_t(rows * cols), 21, 0.1f), x = randn(size_t(B * cols), 22);
  for (bool int8 : {false, true})
    for (DType t : kCompact) {
      const ops::Int8Activations mode(int8);
      const std::vector<uint8_t> q = quantized(t, w, rows, cols);
      std::vector<float> yb(size_t(B * rows));
      ops::matvec_w_batch(t, q.data(), x.data(), B, rows, cols, false, yb.data(), rows);
      for (int64_t b = 0; b < B; ++b) {
        std::vector<float> y1(static_cast<size_t>(rows));
        ops::matvec_w(t, q.data(), x.data() + b * cols, rows, cols, false, y1.data());
        for (int64_t r = 0; r < rows; ++r)
          EXPECT_EQ(yb[size_t(b * rows + r)], y1[size_t(r)]) << dtype_name(t);
      }
    }
}

// linear() on a compact matrix equals linear() on its dequantized f32 copy, for one token
// (threaded GEMV), independent decode rows, and a prompt (panel GEMM), with a bias. With int8
// activations, the few-row paths of Q8_0 / Q4_0 equal the reference of that arithmetic
// instead, and a prompt (panel GEMM) is unchanged.
TEST(WeightKernels, LinearOnCompactMatricesMatchesItsF32Copy) {
  const int64_t in = 96, out = 700;  // 700 x 96 > the GEMV's threading threshold
  const std::vector<float> w = randn(size_t(out * in), 31, 0.1f), bias = randn(size_t(out), 32);
  for (bool int8 : {false, true})
    for (DType t : kCompact) {
      const ops::Int8Activations mode(int8);
      const std::vector<uint8_t> q = quantized(t, w, out, in);
      std::vector<float> deq(size_t(out * in));
      ops::dequantize_rows(ops::Isa::Scalar, t, q.data(), out, in, deq.data());
      for (int64_t T : {1, 3, 70}) {
        for (bool rows_mode : {false, true}) {
          if (T == 1 && rows_mode) continue;
          const std::vector<float> x = randn(size_t(T * in), 33 + uint64_t(T));
          std::vector<float> y(size_t(T * out)), ref(size_t(T * out));
          {
            std::unique_ptr<ops::DecodeRows> dr(rows_mode ? new ops::DecodeRows : nullptr);
            ops::linear(x.data(), T, in, ops::MatRef(q.data(), t), out, bias.data(), y.data());
          }
          ops::linear_ref(x.data(), T, in, deq.data(), out, bias.data(), ref.data());
          if (int8 && (t == DType::Q8_0 || t == DType::Q4_0) && (T <= 4 || rows_mode))
            for (int64_t i = 0; i < T; ++i)
              for (int64_t o = 0; o < out; ++o)
                ref[size_t(i * out + o)] =
                    float(bias[size_t(o)] +
                          ops::dot_wq_ref(t, q.data() + o * row_bytes(t, in), x.data() + i * in, in));
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_NEAR(y[i], ref[i], 1e-4 * (1 + std::fabs(ref[i])))
                << dtype_name(t) << " T " << T << (rows_mode ? " rows" : "") << (int8 ? " int8" : "")
                << " at " << i;
        }
      }
    }
}

TEST(WeightKernels, CompactMatrixRefusesF32Use) {
  std::vector<uint8_t> q(row_bytes(DType::Q8_0, 32));
  const ops::MatRef m(q.data(), DType::Q8_0);
  EXPECT_NE(error_of([&] { (void)m.f32(); }).find("stored as Q8_0"), std::string::npos);
}

// Block formats travel through safetensors as U8 [rows, row bytes] named in the metadata.
TEST(QuantSafetensors, RoundTripAndBadEncodings) {
  TempDir dir;
  const int64_t rows = 3, cols = 64;
  const std::vector<float> w = randn(size_t(rows * cols), 41);
  Tensor q8 = Tensor::zeros(DType::Q8_0, {rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(DType::Q8_0, w.data() + r * cols, cols,
                 q8.data_mut<uint8_t>() + r * row_bytes(DType::Q8_0, cols));
  Tensor plain = Tensor::zeros(DType::F32, {4});
  write_safetensors(dir / "m.safetensors", {{"a.weight", q8}, {"b", plain}});
  auto f = SafetensorsFile::open(dir / "m.safetensors");
  Tensor back = f->get("a.weight");
  EXPECT_EQ(back.dtype(), DType::Q8_0);
  EXPECT_EQ(back.shape(), (Shape{rows, cols}));
  ASSERT_EQ(back.nbytes(), q8.nbytes());
  EXPECT_EQ(std::memcmp(back.raw(), q8.raw(), q8.nbytes()), 0);
  EXPECT_EQ(f->get("b").dtype(), DType::F32);
  const std::vector<float> f32 = [&] {
    Tensor t = back.to_f32();
    return std::vector<float>(t.f32(), t.f32() + t.numel());
  }();
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_NEAR(f32[i], w[i], 0.03) << i;

  auto bad = [&](const std::map<std::string, std::string>& meta, Tensor t) {
    write_safetensors(dir / "bad.safetensors", {{"a.weight", t}}, meta);
    return error_of([&] { SafetensorsFile::open(dir / "bad.safetensors"); });
  };
  Tensor u8 = Tensor::zeros(DType::U8, {3, 68});
  EXPECT_NE(bad({{"braid.block_format.nope", "Q8_0"}}, u8).find("not a tensor of the file"),
            std::string::npos);
  EXPECT_NE(bad({{"braid.block_format.a.weight", "Q5_1"}}, u8).find("unknown block format 'Q5_1'"),
            std::string::npos);
  EXPECT_NE(bad({{"braid.block_format.a.weight", "Q4_0"}}, u8).find("not a whole number of Q4_0 blocks"),
            std::string::npos);
  EXPECT_NE(bad({{"braid.block_format.a.weight", "Q8_0"}}, Tensor::zeros(DType::F32, {3, 34}))
                .find("must be stored as a 2-d U8 array"),
            std::string::npos);
}

// Q4_0 / Q8_0 files without their layout key hold each block's codes in order (Q8_0's as
// signed bytes): they load as the same matrix in the grouped layout. Files written now name
// the layout; an unknown one is refused.
TEST(QuantSafetensors, BlocksInOrderFilesAreRewrittenOnLoad) {
  TempDir dir;
  const int64_t rows = 3, cols = 19 * 32, nb = cols / 32;
  const std::vector<float> w = randn(size_t(rows * cols), 43);
  for (DType t : {DType::Q4_0, DType::Q8_0}) {
    const std::string name = dtype_name(t);
    const bool q4 = t == DType::Q4_0;
    const char* key = q4 ? kQ4LayoutKey : kQ8LayoutKey;
    const size_t rb = row_bytes(t, cols), block = q4 ? 16 : 32;
    Tensor grouped = Tensor::zeros(t, {rows, cols});
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(t, w.data() + r * cols, cols, grouped.data_mut<uint8_t>() + size_t(r) * rb);
    Tensor in_order = Tensor::zeros(DType::U8, {rows, int64_t(rb)});
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* from = grouped.data<uint8_t>() + size_t(r) * rb;
      uint8_t* to = in_order.data_mut<uint8_t>() + size_t(r) * rb;
      std::memcpy(to, from, size_t(2 * nb));
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* out = to + 2 * nb + block * size_t(b);
        if (q4)
          q4_block_bytes(from + 2 * nb, nb, b, out);
        else
          q8_block_codes(from + 2 * nb, nb, b, reinterpret_cast<int8_t*>(out));
      }
    }
    ASSERT_NE(std::memcmp(in_order.raw(), grouped.raw(), rb * rows), 0) << name;
    write_safetensors(dir / "old.safetensors", {{"a.weight", in_order}},
                      {{"braid.block_format.a.weight", name}});
    Tensor back = SafetensorsFile::open(dir / "old.safetensors")->get("a.weight");
    EXPECT_EQ(back.dtype(), t);
    EXPECT_EQ(back.shape(), (Shape{rows, cols}));
    EXPECT_EQ(std::memcmp(back.raw(), grouped.raw(), grouped.nbytes()), 0) << name;

    write_safetensors(dir / "new.safetensors", {{"a.weight", grouped}});
    auto f = SafetensorsFile::open(dir / "new.safetensors");
    EXPECT_EQ(f->metadata().at(key), q4 ? kQ4Layout : kQ8Layout);
    EXPECT_EQ(std::memcmp(f->get("a.weight").raw(), grouped.raw(), grouped.nbytes()), 0) << name;

    write_safetensors(dir / "bad.safetensors", {{"a.weight", in_order}},
                      {{"braid.block_format.a.weight", name}, {key, "rows4"}});
    EXPECT_NE(
        error_of([&] { SafetensorsFile::open(dir / "bad.safetensors"); }).find(name + " layout 'rows4'"),
        std::string::npos);
  }
}

}  // namespace
}  // namespace braid
