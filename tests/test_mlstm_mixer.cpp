// mLSTM mixer: chunked == token by token == uneven calls == a naive double-precision
// stabilised recurrence (the xLSTM step rule), for a few head shapes and chunk sizes. Heads
// have at least 8 value channels: the per-head LayerNorm divides by the head's standard
// deviation, which for 4 channels can be ~0.03 and would amplify f32 rounding 30-fold.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/mlstm.hpp"

using namespace braid;

TEST(MlstmForms, ChunkedEqualsStepEqualsNaive) {
  struct Case {
    int64_t H, QK, V, chunk;
  };
  for (const Case c : {Case{4, 32, 64, 16}, Case{1, 8, 8, 7}, Case{2, 16, 16, 64}}) {
    const int64_t D = 24, H = c.H, dk = c.QK / H, dv = c.V / H;
    Rng rng(31);
    auto wq = randn(size_t(c.QK * D), rng, 0.3), wk = randn(size_t(c.QK * D), rng, 0.3);
    auto wv = randn(size_t(c.V * D), rng, 0.3), wo = randn(size_t(c.V * D), rng, 0.3);
    auto wi = randn(size_t(H * D), rng, 0.5), bi = randn(size_t(H), rng, 1.0);
    auto wf = randn(size_t(H * D), rng, 0.5), bf = randn(size_t(H), rng, 1.0, 2.0);
    auto norm = randn(size_t(c.V), rng, 0.2, 1.0), out = randn(size_t(D * c.V), rng, 0.2);
    MlstmSpec s;
    s.n_heads = H, s.qk_dim = c.QK, s.v_dim = c.V, s.gate_soft_cap = 15, s.chunk = c.chunk;
    MlstmMixer mix(s, D,
                   {wq.data(), wk.data(), wv.data(), wo.data(), wi.data(), bi.data(), wf.data(), bf.data(),
                    norm.data(), out.data()});
    for (int64_t T :
         {int64_t(1), int64_t(7), c.chunk - 1, c.chunk, c.chunk + 1, 3 * c.chunk + 5, int64_t(1000)}) {
      if (T < 1) continue;
      auto x = randn(size_t(T * D), rng, 1.0);
      std::vector<double> C(size_t(H * dk * dv), 0.0), n(size_t(H * dk), 0.0), m(size_t(H), 0.0),
          ref(size_t(T * D));
      auto proj = [&](const std::vector<float>& W, int64_t r, int64_t t) {
        double a = 0;
        for (int64_t i = 0; i < D; ++i) a += double(W[size_t(r * D + i)]) * x[size_t(t * D + i)];
        return a;
      };
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> hv(static_cast<size_t>(c.V));
        for (int64_t h = 0; h < H; ++h) {
          const double ig = 15 * std::tanh((proj(wi, h, t) + bi[size_t(h)]) / 15);
          const double fp = 15 * std::tanh((proj(wf, h, t) + bf[size_t(h)]) / 15);
          const double lf = -std::log1p(std::exp(-fp));
          const double mn = std::max(lf + m[size_t(h)], ig);
          const double fa = std::exp(lf + m[size_t(h)] - mn), ia = std::exp(ig - mn);
          m[size_t(h)] = mn;
          std::vector<double> q(static_cast<size_t>(dk)), k(static_cast<size_t>(dk)),
              v(static_cast<size_t>(dv));
          for (int64_t d = 0; d < dk; ++d) {
            q[size_t(d)] = proj(wq, h * dk + d, t) / std::sqrt(double(dk));
            k[size_t(d)] = proj(wk, h * dk + d, t);
          }
          for (int64_t j = 0; j < dv; ++j) v[size_t(j)] = proj(wv, h * dv + j, t);
          double qn = 0;
          for (int64_t d = 0; d < dk; ++d) {
            double& nd = n[size_t(h * dk + d)];
            nd = fa * nd + ia * k[size_t(d)];
            qn += nd * q[size_t(d)];
            for (int64_t j = 0; j < dv; ++j) {
              double& e = C[size_t((h * dk + d) * dv + j)];
              e = fa * e + ia * k[size_t(d)] * v[size_t(j)];
            }
          }
          const double den = std::max(std::abs(qn), std::exp(-mn)) + 1e-6;
          double mean = 0, var = 0;
          for (int64_t j = 0; j < dv; ++j) {
            double a = 0;
            for (int64_t d = 0; d < dk; ++d) a += C[size_t((h * dk + d) * dv + j)] * q[size_t(d)];
            hv[size_t(h * dv + j)] = a / den;
            mean += a / den;
          }
          mean /= double(dv);
          for (int64_t j = 0; j < dv; ++j) var += std::pow(hv[size_t(h * dv + j)] - mean, 2);
          const double inv = 1 / std::sqrt(var / double(dv) + 1e-6);
          for (int64_t j = 0; j < dv; ++j) {
            const int64_t cidx = h * dv + j;
            const double gate = 1 / (1 + std::exp(-proj(wo, cidx, t)));
            hv[size_t(cidx)] = gate * (hv[size_t(cidx)] - mean) * inv * norm[size_t(cidx)];
          }
        }
        for (int64_t r = 0; r < D; ++r) {
          double a = 0;
          for (int64_t i = 0; i < c.V; ++i) a += double(out[size_t(r * c.V + i)]) * hv[size_t(i)];
          ref[size_t(t * D + r)] = a;
        }
      }
      const FormErrors e = run_three_forms(mix, x, T, D, ref);
      EXPECT_EQ(e.position, T);
      SCOPED_TRACE(::testing::Message() << "H=" << H << " T=" << T);
      expect_forms_match(e);
    }
  }
}
