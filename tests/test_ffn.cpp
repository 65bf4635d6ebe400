// The MLP against a naive loop in double, gated or not, for each activation and with the
// gate / down multipliers; decoding (one parallel region) must give the same bits on one
// thread as on the team, and a batch of decode rows what each row gives alone.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "model/ffn.hpp"

using namespace braid;

namespace {

double act_ref(Activation a, double v) {
  switch (a) {
    case Activation::SiLU:
      return v / (1 + std::exp(-v));
    case Activation::GeluTanh:
      return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    case Activation::GeluErf:
      return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    case Activation::Relu2:
      return v > 0 ? v * v : 0;
  }
  return 0;
}

struct Case {
  Activation act;
  bool gated;
  double gate_mult, down_mult;
};

TEST(Ffn, MatchesNaiveAndDecodesTheSameOnOneThread) {
  // F = 1000 is not a multiple of the 64-value shares; F D is above the team threshold.
  const int64_t D = 48, F = 1000;
  Rng rng(3);
  auto g = randn(size_t(F * D), rng, 0.15), u = randn(size_t(F * D), rng, 0.15),
       d = randn(size_t(D * F), rng, 0.05), gb = randn(size_t(F), rng, 0.1), ub = randn(size_t(F), rng, 0.1),
       db = randn(size_t(D), rng, 0.1);
  for (const Case c : {Case{Activation::SiLU, true, 1, 1}, Case{Activation::SiLU, true, 0.8, 1.3},
                       Case{Activation::GeluTanh, true, 1, 1}, Case{Activation::GeluErf, false, 1, 0.7},
                       Case{Activation::Relu2, false, 1, 1}}) {
    MlpSpec s;
    s.hidden = F, s.act = c.act, s.gated = c.gated, s.bias = true;
    s.gate_multiplier = c.gate_mult, s.down_multiplier = c.down_mult;
    const FfnWeights w{g.data(), gb.data(), u.data(), ub.data(), d.data(), db.data()};
    const int64_t T = 3;
    auto x = randn(size_t(T * D), rng, 1);
    Workspace ws;
    std::vector<float> prefill(size_t(T * D)), team(size_t(T * D)), alone(size_t(T * D)),
        batch(size_t(T * D));
    ffn_forward(s, x.data(), T, D, w, prefill.data(), ws);  // T > 1: the GEMM path
    for (int64_t t = 0; t < T; ++t) ffn_forward(s, x.data() + t * D, 1, D, w, team.data() + t * D, ws);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int64_t t = 0; t < T; ++t) ffn_forward(s, x.data() + t * D, 1, D, w, alone.data() + t * D, ws);
    omp_set_num_threads(threads);
    {
      ops::DecodeRows rows;
      ffn_forward(s, x.data(), T, D, w, batch.data(), ws);
    }
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < D; ++o) {
        double acc = db[size_t(o)];
        for (int64_t f = 0; f < F; ++f) {
          double up = ub[size_t(f)], gt = gb[size_t(f)];
          for (int64_t i = 0; i < D; ++i) {
            up += double(u[size_t(f * D + i)]) * x[size_t(t * D + i)];
            gt += double(g[size_t(f * D + i)]) * x[size_t(t * D + i)];
          }
          const double h = c.gated ? act_ref(c.act, gt * c.gate_mult) * up : act_ref(c.act, up);
          acc += double(d[size_t(o * F + f)]) * h;
        }
        const double want = acc * c.down_mult;
        const size_t k = size_t(t * D + o);
        EXPECT_NEAR(prefill[k], want, 1e-4 * (1 + std::fabs(want))) << activation_name(c.act);
        EXPECT_NEAR(team[k], want, 1e-4 * (1 + std::fabs(want))) << activation_name(c.act);
        EXPECT_EQ(alone[k], team[k]) << activation_name(c.act) << " t " << t << " o " << o;
        EXPECT_EQ(batch[k], team[k]) << activation_name(c.act) << " t " << t << " o " << o;
      }
  }
}

}  // namespace
