// Gated linear attention mixer (GLA family): chunked == token by token == uneven calls ==
// a naive double-precision recurrence, for per-key-channel, per-head and fixed decays.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/gla.hpp"

using namespace braid;

namespace {

struct Case {
  GlaGate gate;
  int64_t H, dk, dv, chunk;
};

class GlaForms : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(GlaForms, ChunkedEqualsStepEqualsNaive) {
  const Case c = GetParam();
  const int64_t D = 24, H = c.H, dk = c.dk, dv = c.dv, KD = H * dk, VD = H * dv, R = 6;
  Rng rng(41);
  auto wq = randn(size_t(KD * D), rng, 0.3), wk = randn(size_t(KD * D), rng, 0.3);
  auto wv = randn(size_t(VD * D), rng, 0.3), wg = randn(size_t(VD * D), rng, 0.3);
  auto ga = randn(size_t(R * D), rng, 0.3), gb = randn(size_t(KD * R), rng, 0.5);
  auto gh = randn(size_t(H * D), rng, 0.3);
  auto bias = randn(size_t(KD), rng, 0.5, 2.0);
  auto norm = randn(size_t(dv), rng, 0.2, 1.0), wo = randn(size_t(D * VD), rng, 0.2);
  GlaSpec s;
  s.n_heads = H, s.head_k_dim = dk, s.head_v_dim = dv, s.gate = c.gate, s.gate_rank = R, s.chunk = c.chunk;
  GlaWeights w{wq.data(), wk.data(), wv.data(), nullptr, nullptr, nullptr, wg.data(), norm.data(), wo.data()};
  if (c.gate == GlaGate::PerChannel) w.gate_a = ga.data(), w.gate_b = gb.data(), w.gate_bias = bias.data();
  if (c.gate == GlaGate::PerHead) w.gate_b = gh.data(), w.gate_bias = bias.data();
  GlaMixer mix(s, D, w);
  auto lsig = [](double v) { return -std::log1p(std::exp(-v)); };
  for (int64_t T :
       {int64_t(1), int64_t(7), c.chunk - 1, c.chunk, c.chunk + 1, 3 * c.chunk + 5, int64_t(1000)}) {
    if (T < 1) continue;
    auto x = randn(size_t(T * D), rng, 1.0);
    std::vector<double> S(size_t(H * dk * dv), 0.0), ref(size_t(T * D));
    auto proj = [&](const std::vector<float>& W, int64_t r, int64_t t) {
      double a = 0;
      for (int64_t i = 0; i < D; ++i) a += double(W[size_t(r * D + i)]) * x[size_t(t * D + i)];
      return a;
    };
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> low(static_cast<size_t>(R)), o(static_cast<size_t>(VD));
      for (int64_t r = 0; r < R; ++r) low[size_t(r)] = proj(ga, r, t);
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < dk; ++i) {
          double lg;
          if (c.gate == GlaGate::Fixed) {
            lg = std::log(1 - std::pow(2.0, -5.0 - double(h)));
          } else if (c.gate == GlaGate::PerHead) {
            lg = lsig(proj(gh, h, t) + bias[size_t(h)]) / 16;
          } else {
            double a = bias[size_t(h * dk + i)];
            for (int64_t r = 0; r < R; ++r) a += double(gb[size_t((h * dk + i) * R + r)]) * low[size_t(r)];
            lg = lsig(a) / 16;
          }
          const double kv = proj(wk, h * dk + i, t);
          for (int64_t j = 0; j < dv; ++j) {
            double& e = S[size_t((h * dk + i) * dv + j)];
            e = std::exp(lg) * e + kv * proj(wv, h * dv + j, t);
          }
        }
        double ss = 0;
        for (int64_t j = 0; j < dv; ++j) {
          double a = 0;
          for (int64_t i = 0; i < dk; ++i)
            a += S[size_t((h * dk + i) * dv + j)] * proj(wq, h * dk + i, t) / std::sqrt(double(dk));
          o[size_t(h * dv + j)] = a;
          ss += a * a;
        }
        const double inv = 1 / std::sqrt(ss / double(dv) + 1e-5);
        for (int64_t j = 0; j < dv; ++j) {
          const double gv = proj(wg, h * dv + j, t);
          o[size_t(h * dv + j)] *= inv * norm[size_t(j)] * gv / (1 + std::exp(-gv));
        }
      }
      for (int64_t r = 0; r < D; ++r) {
        double a = 0;
        for (int64_t i = 0; i < VD; ++i) a += double(wo[size_t(r * VD + i)]) * o[size_t(i)];
        ref[size_t(t * D + r)] = a;
      }
    }
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    EXPECT_EQ(e.position, T);
    EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    expect_forms_match(e);
  }
}

INSTANTIATE_TEST_SUITE_P(Gates, GlaForms,
                         ::testing::Values(Case{GlaGate::PerChannel, 2, 16, 16, 64},
                                           Case{GlaGate::PerChannel, 3, 8, 12, 7},
                                           Case{GlaGate::PerHead, 2, 16, 8, 32},
                                           Case{GlaGate::Fixed, 4, 8, 8, 16}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           const Case& c = i.param;
                           const char* g = c.gate == GlaGate::PerChannel ? "channel"
                                           : c.gate == GlaGate::PerHead  ? "head"
                                                                         : "fixed";
                           return std::string(g) + "_H" + std::to_string(c.H) + "_dk" + std::to_string(c.dk) +
                                  "_dv" + std::to_string(c.dv) + "_chunk" + std::to_string(c.chunk);
                         });
