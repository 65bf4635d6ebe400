// RWKV-4 time mixing and channel mixing: one call == token by token == uneven calls == a
// naive double-precision reference that sums the WKV series directly (no running max).
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/rwkv4.hpp"

using namespace braid;

namespace {

double sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

std::vector<double> matvec(const std::vector<float>& W, const std::vector<double>& x, int64_t rows) {
  const int64_t cols = int64_t(x.size());
  std::vector<double> y(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[size_t(r)] += double(W[size_t(r * cols + c)]) * x[size_t(c)];
  return y;
}

// Token shift: x_t * mix + x_{t-1} * (1 - mix), with x_{-1} = 0.
std::vector<double> shifted(const std::vector<float>& x, int64_t t, int64_t D,
                            const std::vector<float>& mix) {
  std::vector<double> o(static_cast<size_t>(D));
  for (int64_t i = 0; i < D; ++i) {
    const double prev = t > 0 ? x[size_t((t - 1) * D + i)] : 0.0;
    o[size_t(i)] = x[size_t(t * D + i)] * double(mix[size_t(i)]) + prev * (1 - double(mix[size_t(i)]));
  }
  return o;
}

}  // namespace

TEST(RwkvForms, TimeMixEqualsNaiveSeries) {
  for (int64_t A : {int64_t(24), int64_t(40)}) {
    const int64_t D = 24;
    Rng rng(3);
    auto decay = randn(size_t(A), rng, 1.0), first = randn(size_t(A), rng, 0.5);
    auto mk = randn(size_t(D), rng, 0.2, 0.5), mv = randn(size_t(D), rng, 0.2, 0.5),
         mr = randn(size_t(D), rng, 0.2, 0.5);
    auto Wk = randn(size_t(A * D), rng, 0.3), Wv = randn(size_t(A * D), rng, 0.3),
         Wr = randn(size_t(A * D), rng, 0.3), Wo = randn(size_t(D * A), rng, 0.2);
    Rwkv4Spec s;
    s.attn_dim = A;
    s.out_scale = 0.5;
    Rwkv4TimeMix mix(s, D,
                     {decay.data(), first.data(), mk.data(), mv.data(), mr.data(), Wk.data(), Wv.data(),
                      Wr.data(), Wo.data()});
    for (int64_t T : {int64_t(1), int64_t(7), int64_t(64), int64_t(1000)}) {
      auto x = randn(size_t(T * D), rng, 1.0);
      std::vector<std::vector<double>> K, V;
      std::vector<double> ref(size_t(T * D));
      for (int64_t t = 0; t < T; ++t) {
        K.push_back(matvec(Wk, shifted(x, t, D, mk), A));
        V.push_back(matvec(Wv, shifted(x, t, D, mv), A));
        const std::vector<double> r = matvec(Wr, shifted(x, t, D, mr), A);
        std::vector<double> o(static_cast<size_t>(A));
        for (int64_t c = 0; c < A; ++c) {
          const double w = -std::exp(double(decay[size_t(c)]));
          double num = std::exp(double(first[size_t(c)]) + K[size_t(t)][size_t(c)]) * V[size_t(t)][size_t(c)];
          double den = std::exp(double(first[size_t(c)]) + K[size_t(t)][size_t(c)]);
          for (int64_t i = 0; i < t; ++i) {
            const double e = std::exp(double(t - 1 - i) * w + K[size_t(i)][size_t(c)]);
            num += e * V[size_t(i)][size_t(c)];
            den += e;
          }
          o[size_t(c)] = sigmoid(r[size_t(c)]) * num / den;
        }
        const std::vector<double> y = matvec(Wo, o, D);
        for (int64_t i = 0; i < D; ++i) ref[size_t(t * D + i)] = 0.5 * y[size_t(i)];
      }
      const FormErrors e = run_three_forms(mix, x, T, D, ref);
      EXPECT_EQ(e.position, T);
      EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
      SCOPED_TRACE(::testing::Message() << "A=" << A << " T=" << T);
      expect_forms_match(e);
    }
  }
}

TEST(RwkvForms, ChannelMixEqualsNaive) {
  const int64_t D = 16, F = 40;
  Rng rng(4);
  auto mk = randn(size_t(D), rng, 0.2, 0.5), mr = randn(size_t(D), rng, 0.2, 0.5);
  auto Wk = randn(size_t(F * D), rng, 0.3), Wr = randn(size_t(D * D), rng, 0.3),
       Wv = randn(size_t(D * F), rng, 0.2);
  RwkvChannelMixSpec s;
  s.hidden = F;
  RwkvChannelMix mix(s, D, {mk.data(), mr.data(), Wk.data(), Wr.data(), Wv.data()});
  for (int64_t T : {int64_t(1), int64_t(9), int64_t(100), int64_t(1000)}) {
    auto x = randn(size_t(T * D), rng, 1.0);
    std::vector<double> ref(size_t(T * D));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> k = matvec(Wk, shifted(x, t, D, mk), F);
      for (double& v : k) v = v > 0 ? v * v : 0.0;
      const std::vector<double> v = matvec(Wv, k, D), r = matvec(Wr, shifted(x, t, D, mr), D);
      for (int64_t i = 0; i < D; ++i) ref[size_t(t * D + i)] = sigmoid(r[size_t(i)]) * v[size_t(i)];
    }
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    expect_forms_match(e);
  }
}
