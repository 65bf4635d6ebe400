// Gated DeltaNet mixer: the chunked (WY) form == token-by-token == uneven calls == a naive
// double-precision gated delta rule, for several head/dim shapes and chunk sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/gated_deltanet.hpp"

using namespace braid;

namespace {

struct Case {
  int64_t NK, NV, DK, DV, K, chunk;
};

struct Params {
  std::vector<float> qkvz, ba, conv_w, dt_bias, A_log, norm, out_proj;
};

// Straight from the definition: per token, project, split per key head, conv + SiLU,
// L2-normalise q and k, then S = a S; S += k (b (v - S^T k))^T; o = S^T q / sqrt(dk);
// RMSNorm per head times SiLU(z); out_proj.
std::vector<double> reference(const Case& c, const Params& p, const std::vector<float>& x, int64_t T,
                              int64_t Dm) {
  const int64_t NK = c.NK, NV = c.NV, DK = c.DK, DV = c.DV, K = c.K, R = NV / NK;
  const int64_t KD = NK * DK, VD = NV * DV, CD = 2 * KD + VD, E = 2 * KD + 2 * VD;
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  std::vector<double> hist(size_t(K * CD), 0.0), S(size_t(NV * DK * DV), 0.0), y(size_t(T * Dm));
  for (int64_t t = 0; t < T; ++t) {
    auto project = [&](const std::vector<float>& W, int64_t rows) {
      std::vector<double> e(static_cast<size_t>(rows));
      for (int64_t o = 0; o < rows; ++o) {
        double s = 0;
        for (int64_t i = 0; i < Dm; ++i) s += double(W[size_t(o * Dm + i)]) * x[size_t(t * Dm + i)];
        e[size_t(o)] = s;
      }
      return e;
    };
    const std::vector<double> e = project(p.qkvz, E), ab = project(p.ba, 2 * NV);
    std::vector<double> mixed(static_cast<size_t>(CD)), z(static_cast<size_t>(VD)),
        beta(static_cast<size_t>(NV)), g(static_cast<size_t>(NV));
    for (int64_t kh = 0; kh < NK; ++kh) {
      const int64_t base = kh * (2 * DK + 2 * R * DV);
      for (int64_t i = 0; i < DK; ++i) {
        mixed[size_t(kh * DK + i)] = e[size_t(base + i)];
        mixed[size_t(KD + kh * DK + i)] = e[size_t(base + DK + i)];
      }
      for (int64_t i = 0; i < R * DV; ++i) {
        mixed[size_t(2 * KD + kh * R * DV + i)] = e[size_t(base + 2 * DK + i)];
        z[size_t(kh * R * DV + i)] = e[size_t(base + 2 * DK + R * DV + i)];
      }
      for (int64_t j = 0; j < R; ++j) {
        const int64_t h = kh * R + j;
        beta[size_t(h)] = 1 / (1 + std::exp(-ab[size_t(kh * 2 * R + j)]));
        const double a = ab[size_t(kh * 2 * R + R + j)] + p.dt_bias[size_t(h)];
        g[size_t(h)] = -std::exp(double(p.A_log[size_t(h)])) * (a > 20 ? a : std::log1p(std::exp(a)));
      }
    }
    for (int64_t k = 0; k + 1 < K; ++k)
      for (int64_t ch = 0; ch < CD; ++ch) hist[size_t(k * CD + ch)] = hist[size_t((k + 1) * CD + ch)];
    for (int64_t ch = 0; ch < CD; ++ch) hist[size_t((K - 1) * CD + ch)] = mixed[size_t(ch)];
    std::vector<double> qkv(static_cast<size_t>(CD));
    for (int64_t ch = 0; ch < CD; ++ch) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(p.conv_w[size_t(ch * K + k)]) * hist[size_t(k * CD + ch)];
      qkv[size_t(ch)] = silu(s);
    }
    for (int64_t v0 : {int64_t(0), KD})
      for (int64_t kh = 0; kh < NK; ++kh) {
        double ss = 0;
        for (int64_t i = 0; i < DK; ++i) ss += qkv[size_t(v0 + kh * DK + i)] * qkv[size_t(v0 + kh * DK + i)];
        const double inv = 1 / std::sqrt(ss + 1e-6) * (v0 == 0 ? 1 / std::sqrt(double(DK)) : 1.0);
        for (int64_t i = 0; i < DK; ++i) qkv[size_t(v0 + kh * DK + i)] *= inv;
      }
    std::vector<double> o(static_cast<size_t>(VD), 0.0);
    for (int64_t h = 0; h < NV; ++h) {
      const int64_t kh = h / R;
      const double* q = &qkv[size_t(kh * DK)];
      const double* k = &qkv[size_t(KD + kh * DK)];
      const double* v = &qkv[size_t(2 * KD + h * DV)];
      double* Sh = &S[size_t(h * DK * DV)];
      const double a = std::exp(g[size_t(h)]);
      for (int64_t i = 0; i < DK * DV; ++i) Sh[i] *= a;
      for (int64_t j = 0; j < DV; ++j) {
        double kv = 0;
        for (int64_t i = 0; i < DK; ++i) kv += Sh[i * DV + j] * k[i];
        const double delta = (v[j] - kv) * beta[size_t(h)];
        for (int64_t i = 0; i < DK; ++i) Sh[i * DV + j] += k[i] * delta;
      }
      for (int64_t j = 0; j < DV; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < DK; ++i) acc += Sh[i * DV + j] * q[i];
        o[size_t(h * DV + j)] = acc;
      }
      double ss = 0;
      for (int64_t j = 0; j < DV; ++j) ss += o[size_t(h * DV + j)] * o[size_t(h * DV + j)];
      const double inv = 1 / std::sqrt(ss / double(DV) + 1e-6);
      for (int64_t j = 0; j < DV; ++j)
        o[size_t(h * DV + j)] *= inv * p.norm[size_t(j)] * silu(z[size_t(h * DV + j)]);
    }
    for (int64_t r = 0; r < Dm; ++r) {
      double s = 0;
      for (int64_t i = 0; i < VD; ++i) s += double(p.out_proj[size_t(r * VD + i)]) * o[size_t(i)];
      y[size_t(t * Dm + r)] = s;
    }
  }
  return y;
}

class GatedDeltaNetForms : public ::testing::TestWithParam<Case> {};

TEST_P(GatedDeltaNetForms, ChunkedEqualsStepEqualsNaive) {
  const Case c = GetParam();
  const int64_t Dm = 24, KD = c.NK * c.DK, VD = c.NV * c.DV, CD = 2 * KD + VD;
  Rng rng(11);
  Params p;
  p.qkvz = randn(size_t((2 * KD + 2 * VD) * Dm), rng, 1 / std::sqrt(double(Dm)));
  p.ba = randn(size_t(2 * c.NV * Dm), rng, 1 / std::sqrt(double(Dm)));
  p.conv_w = randn(size_t(CD * c.K), rng, 0.5);
  p.dt_bias = randn(size_t(c.NV), rng, 0.5, -1.0);
  p.A_log = randn(size_t(c.NV), rng, 0.5, 0.5);
  p.norm = randn(size_t(c.DV), rng, 0.2, 1.0);
  p.out_proj = randn(size_t(Dm * VD), rng, 1 / std::sqrt(double(VD)));
  GatedDeltaNetSpec s;
  s.n_k_heads = c.NK, s.n_v_heads = c.NV, s.head_k_dim = c.DK, s.head_v_dim = c.DV, s.d_conv = c.K;
  s.chunk = c.chunk;
  GatedDeltaNetWeights w{p.qkvz.data(),  p.ba.data(),   p.conv_w.data(),  p.dt_bias.data(),
                         p.A_log.data(), p.norm.data(), p.out_proj.data()};
  GatedDeltaNetMixer mix(s, Dm, w);
  const int64_t ch = c.chunk;
  for (int64_t T : {int64_t(1), int64_t(7), ch - 1, ch, ch + 1, 3 * ch + 5, int64_t(1000)}) {
    if (T < 1) continue;
    std::vector<float> x = randn(size_t(T * Dm), rng, 1);
    const std::vector<double> ref = reference(c, p, x, T, Dm);
    const FormErrors e = run_three_forms(mix, x, T, Dm, ref);
    EXPECT_EQ(e.position, T);
    EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    expect_forms_match(e);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GatedDeltaNetForms,
                         ::testing::Values(Case{2, 4, 16, 16, 4, 64},   // the fixture's shape
                                           Case{1, 1, 8, 8, 4, 16},     // one head
                                           Case{2, 6, 8, 4, 3, 7},      // 3 value heads per key head
                                           Case{3, 3, 4, 12, 2, 32},    // dv > dk
                                           Case{4, 8, 32, 80, 4, 64}),  // decodes on a team
                         [](const ::testing::TestParamInfo<Case>& i) {
                           const Case& c = i.param;
                           char buf[96];
                           std::snprintf(buf, sizeof(buf), "NK%lld_NV%lld_DK%lld_DV%lld_K%lld_chunk%lld",
                                         (long long)c.NK, (long long)c.NV, (long long)c.DK, (long long)c.DV,
                                         (long long)c.K, (long long)c.chunk);
                           return std::string(buf);
                         });

}  // namespace
