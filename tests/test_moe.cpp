// Mixture of experts against a naive per-token loop in double: softmax or sigmoid router,
// top-k, optional renormalisation and shared expert; T from one token to many.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "model/ffn.hpp"

using namespace braid;

namespace {

struct Expert {
  std::vector<float> g, u, d;
};

std::vector<double> expert_ref(const Expert& e, const float* x, int64_t D, int64_t F) {
  std::vector<double> h(static_cast<size_t>(F)), y(static_cast<size_t>(D), 0.0);
  for (int64_t f = 0; f < F; ++f) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < D; ++i)
      a += double(e.g[size_t(f * D + i)]) * x[i], b += double(e.u[size_t(f * D + i)]) * x[i];
    h[size_t(f)] = a / (1 + std::exp(-a)) * b;
  }
  for (int64_t o = 0; o < D; ++o)
    for (int64_t f = 0; f < F; ++f) y[size_t(o)] += double(e.d[size_t(o * F + f)]) * h[size_t(f)];
  return y;
}

TEST(Moe, MatchesNaiveRouting) {
  const int64_t D = 16, F = 24, E = 5;
  Rng rng(9);
  std::vector<Expert> ex(E + 1);
  for (auto& e : ex)
    e = {randn(size_t(F * D), rng, 0.3), randn(size_t(F * D), rng, 0.3), randn(size_t(D * F), rng, 0.3)};
  auto router = randn(size_t(E * D), rng, 0.5);
  MoeWeights w;
  w.router = router.data();
  for (int64_t e = 0; e < E; ++e)
    w.experts.push_back(
        {ex[size_t(e)].g.data(), nullptr, ex[size_t(e)].u.data(), nullptr, ex[size_t(e)].d.data(), nullptr});
  w.shared = {ex[E].g.data(), nullptr, ex[E].u.data(), nullptr, ex[E].d.data(), nullptr};
  for (bool sigmoid : {false, true})
    for (bool renorm : {false, true})
      for (int64_t shared : {int64_t(0), F})
        for (int64_t T : {1, 3, 40}) {
          MoeSpec s;
          s.n_experts = E, s.top_k = 2, s.hidden = F, s.renormalize = renorm, s.sigmoid_scores = sigmoid;
          s.shared_hidden = shared;
          auto x = randn(size_t(T * D), rng, 1);
          std::vector<float> y(size_t(T * D));
          Workspace ws;
          moe_forward(s, w, x.data(), T, D, y.data(), ws);
          for (int64_t t = 0; t < T; ++t) {
            const float* xt = x.data() + t * D;
            std::vector<double> sc(static_cast<size_t>(E));
            for (int64_t e = 0; e < E; ++e) {
              double l = 0;
              for (int64_t i = 0; i < D; ++i) l += double(router[size_t(e * D + i)]) * xt[i];
              sc[size_t(e)] = l;
            }
            if (sigmoid) {
              for (auto& v : sc) v = 1 / (1 + std::exp(-v));
            } else {
              const double m = *std::max_element(sc.begin(), sc.end());
              double z = 0;
              for (auto& v : sc) z += v = std::exp(v - m);
              for (auto& v : sc) v /= z;
            }
            std::vector<int> idx(static_cast<size_t>(E));
            std::iota(idx.begin(), idx.end(), 0);
            std::sort(idx.begin(), idx.end(), [&](int a, int b) { return sc[size_t(a)] > sc[size_t(b)]; });
            const double sum = sc[size_t(idx[0])] + sc[size_t(idx[1])];
            std::vector<double> want(static_cast<size_t>(D), 0.0);
            for (int j = 0; j < 2; ++j) {
              const double wgt = renorm ? sc[size_t(idx[size_t(j)])] / sum : sc[size_t(idx[size_t(j)])];
              auto o = expert_ref(ex[size_t(idx[size_t(j)])], xt, D, F);
              for (int64_t i = 0; i < D; ++i) want[size_t(i)] += wgt * o[size_t(i)];
            }
            if (shared) {
              auto o = expert_ref(ex[E], xt, D, F);
              for (int64_t i = 0; i < D; ++i) want[size_t(i)] += o[size_t(i)];
            }
            for (int64_t i = 0; i < D; ++i)
              ASSERT_NEAR(y[size_t(t * D + i)], want[size_t(i)], 1e-5)
                  << "T=" << T << " sigmoid " << sigmoid << " renorm " << renorm << " shared " << shared;
          }
        }
}

}  // namespace
