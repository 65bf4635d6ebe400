// RG-LRU recurrent block: one call == token by token == uneven calls == a naive
// double-precision recurrence, for a few widths / head counts / conv widths.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/rglru.hpp"

using namespace braid;

TEST(RgLruForms, ChunkedEqualsStepEqualsNaive) {
  struct Case {
    int64_t W, H, K;
  };
  for (const Case c : {Case{64, 4, 4}, Case{24, 1, 2}, Case{36, 3, 3}}) {
    const int64_t D = 20, W = c.W, H = c.H, K = c.K, bw = W / H;
    Rng rng(9);
    auto lx = randn(size_t(W * D), rng, 0.3), lxb = randn(size_t(W), rng, 0.1);
    auto ly = randn(size_t(W * D), rng, 0.3), lyb = randn(size_t(W), rng, 0.1);
    auto lo = randn(size_t(D * W), rng, 0.2), lob = randn(size_t(D), rng, 0.1);
    auto cw = randn(size_t(W * K), rng, 0.5), cb = randn(size_t(W), rng, 0.1);
    auto gi = randn(size_t(H * bw * bw), rng, 0.3), gib = randn(size_t(W), rng, 0.1);
    auto ga = randn(size_t(H * bw * bw), rng, 0.3), gab = randn(size_t(W), rng, 0.1);
    auto lam = randn(size_t(W), rng, 0.5, 1.0);
    RgLruSpec s;
    s.width = W, s.n_heads = H, s.d_conv = K;
    RgLruMixer mix(s, D,
                   {lx.data(), lxb.data(), ly.data(), lyb.data(), lo.data(), lob.data(), cw.data(), cb.data(),
                    gi.data(), gib.data(), ga.data(), gab.data(), lam.data()});
    for (int64_t T : {int64_t(1), int64_t(7), int64_t(100), int64_t(1000)}) {
      auto x = randn(size_t(T * D), rng, 1.0);
      std::vector<double> ref(size_t(T * D)), hist(size_t(K * W), 0.0), h(size_t(W), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> xb(static_cast<size_t>(W)), yb(static_cast<size_t>(W)),
            xc(static_cast<size_t>(W));
        for (int64_t o = 0; o < W; ++o) {
          double a = lxb[size_t(o)], b = lyb[size_t(o)];
          for (int64_t i = 0; i < D; ++i) {
            a += double(lx[size_t(o * D + i)]) * x[size_t(t * D + i)];
            b += double(ly[size_t(o * D + i)]) * x[size_t(t * D + i)];
          }
          xb[size_t(o)] = a;
          yb[size_t(o)] = 0.5 * b * (1 + std::tanh(0.7978845608028654 * (b + 0.044715 * b * b * b)));
        }
        for (int64_t k = 0; k + 1 < K; ++k)
          for (int64_t ch = 0; ch < W; ++ch) hist[size_t(k * W + ch)] = hist[size_t((k + 1) * W + ch)];
        for (int64_t ch = 0; ch < W; ++ch) hist[size_t((K - 1) * W + ch)] = xb[size_t(ch)];
        for (int64_t ch = 0; ch < W; ++ch) {
          double v = cb[size_t(ch)];
          for (int64_t k = 0; k < K; ++k) v += double(cw[size_t(ch * K + k)]) * hist[size_t(k * W + ch)];
          xc[size_t(ch)] = v;
        }
        std::vector<double> out(static_cast<size_t>(W));
        for (int64_t hd = 0; hd < H; ++hd)
          for (int64_t j = 0; j < bw; ++j) {
            const int64_t c0 = hd * bw + j;
            double ig = gib[size_t(c0)], ag = gab[size_t(c0)];
            for (int64_t i = 0; i < bw; ++i) {
              ig += xc[size_t(hd * bw + i)] * gi[size_t(hd * bw * bw + i * bw + j)];
              ag += xc[size_t(hd * bw + i)] * ga[size_t(hd * bw * bw + i * bw + j)];
            }
            ig = 1 / (1 + std::exp(-ig));
            ag = 1 / (1 + std::exp(-ag));
            const double sp = std::log1p(std::exp(double(lam[size_t(c0)])));
            const double a = std::exp(-8 * ag * sp);
            const double mult = t == 0 ? 1.0 : std::sqrt(1 - a * a);
            h[size_t(c0)] = (t == 0 ? 0.0 : a * h[size_t(c0)]) + xc[size_t(c0)] * ig * mult;
            out[size_t(c0)] = h[size_t(c0)] * yb[size_t(c0)];
          }
        for (int64_t o = 0; o < D; ++o) {
          double v = lob[size_t(o)];
          for (int64_t i = 0; i < W; ++i) v += double(lo[size_t(o * W + i)]) * out[size_t(i)];
          ref[size_t(t * D + o)] = v;
        }
      }
      const FormErrors e = run_three_forms(mix, x, T, D, ref);
      EXPECT_EQ(e.position, T);
      SCOPED_TRACE(::testing::Message() << "W=" << W << " T=" << T);
      expect_forms_match(e);
    }
  }
}
