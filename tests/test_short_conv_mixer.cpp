// Gated short convolution (LFM2): one call == token by token == uneven calls == a naive
// double-precision loop, for several kernel sizes, with and without biases.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/short_conv.hpp"

using namespace braid;

namespace {

class ShortConvForms : public ::testing::TestWithParam<std::pair<int64_t, bool>> {};

TEST_P(ShortConvForms, ChunkedEqualsStepEqualsNaive) {
  const auto [K, bias] = GetParam();
  const int64_t D = 20;
  Rng rng(3);
  auto win = randn(size_t(3 * D * D), rng, 0.3), bin = randn(size_t(3 * D), rng, 0.1);
  auto wc = randn(size_t(D * K), rng, 0.5), bc = randn(size_t(D), rng, 0.1);
  auto wout = randn(size_t(D * D), rng, 0.3), bout = randn(size_t(D), rng, 0.1);
  ShortConvSpec spec{K, bias};
  ShortConvMixer mix(spec, D,
                     {win.data(), bias ? bin.data() : nullptr, wc.data(), bias ? bc.data() : nullptr,
                      wout.data(), bias ? bout.data() : nullptr});
  for (int64_t T : {1, 2, 7, 64, 129, 1000}) {
    auto x = randn(size_t(T * D), rng, 1);
    // Naive: keep every B*x, convolve over the last K of them.
    std::vector<double> bx(size_t(T * D)), c(size_t(T * D)), ref(size_t(T * D));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < 3 * D; ++o) {
        double s = bias ? bin[size_t(o)] : 0;
        for (int64_t i = 0; i < D; ++i) s += double(win[size_t(o * D + i)]) * x[size_t(t * D + i)];
        if (o < D)
          bx[size_t(t * D + o)] = s;
        else if (o < 2 * D)
          c[size_t(t * D + o - D)] = s;
        else
          bx[size_t(t * D + o - 2 * D)] *= s;
      }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> g(static_cast<size_t>(D));
      for (int64_t ch = 0; ch < D; ++ch) {
        double s = bias ? bc[size_t(ch)] : 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t + k - (K - 1);
          if (src >= 0) s += double(wc[size_t(ch * K + k)]) * bx[size_t(src * D + ch)];
        }
        g[size_t(ch)] = s * c[size_t(t * D + ch)];
      }
      for (int64_t o = 0; o < D; ++o) {
        double s = bias ? bout[size_t(o)] : 0;
        for (int64_t i = 0; i < D; ++i) s += double(wout[size_t(o * D + i)]) * g[size_t(i)];
        ref[size_t(t * D + o)] = s;
      }
    }
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
    // f32 against double: relative to the output's magnitude (products of three
    // projections reach |y| ~ 10 here), as in the other mixer tests.
    const double tol = 1e-6 * std::max(1.0, e.ref_scale);
    EXPECT_LT(e.full, tol) << "T=" << T << " scale " << e.ref_scale;
    EXPECT_LT(e.step, tol) << "T=" << T << " scale " << e.ref_scale;
    EXPECT_LT(e.pieces, tol) << "T=" << T << " scale " << e.ref_scale;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, ShortConvForms,
                         ::testing::Values(std::make_pair(int64_t(3), false),
                                           std::make_pair(int64_t(4), true), std::make_pair(int64_t(1), true),
                                           std::make_pair(int64_t(2), false)));

}  // namespace
