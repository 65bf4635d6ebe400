// Mamba-2 (SSD) mixer: the chunked dual form == token-by-token == uneven calls == a
// naive double-precision recurrence h_t = exp(dt A) h_{t-1} + dt x_t B_t^T, for several
// head/group/state shapes and chunk sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/mamba2.hpp"

using namespace braid;

namespace {

struct Case {
  int64_t H, P, N, G, K, chunk, norm_group;
  bool proj_bias;
  double dt_max;
  Mamba2Norm norm = Mamba2Norm::GateThenNorm;
  bool multipliers = false;  // scale the in_proj sections
};

const double kSection[5] = {0.9, 1.3, 0.7, 1.1, 1.2};  // z, x, B, C, dt

struct Params {
  std::vector<float> in_proj, in_b, conv_w, conv_b, dt_bias, A_log, D, norm, out_proj, out_b;
};

std::vector<double> reference(const Case& c, const Params& p, const std::vector<float>& x, int64_t T,
                              int64_t Dm) {
  const int64_t H = c.H, P = c.P, N = c.N, G = c.G, K = c.K, Di = H * P, GN = G * N, CD = Di + 2 * GN;
  const int64_t E = Di + CD + H;
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  std::vector<double> hist(size_t(K * CD), 0.0), S(size_t(H * P * N), 0.0), y(size_t(T * Dm));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> e(static_cast<size_t>(E));
    for (int64_t o = 0; o < E; ++o) {
      double s = c.proj_bias ? p.in_b[size_t(o)] : 0;
      for (int64_t i = 0; i < Dm; ++i) s += double(p.in_proj[size_t(o * Dm + i)]) * x[size_t(t * Dm + i)];
      e[size_t(o)] = s;
    }
    if (c.multipliers)
      for (int64_t o = 0; o < E; ++o) {
        const int sec = o < Di ? 0 : o < 2 * Di ? 1 : o < 2 * Di + GN ? 2 : o < 2 * Di + 2 * GN ? 3 : 4;
        e[size_t(o)] *= kSection[sec];
      }
    for (int64_t k = 0; k + 1 < K; ++k)
      for (int64_t ch = 0; ch < CD; ++ch) hist[size_t(k * CD + ch)] = hist[size_t((k + 1) * CD + ch)];
    for (int64_t ch = 0; ch < CD; ++ch) hist[size_t((K - 1) * CD + ch)] = e[size_t(Di + ch)];
    std::vector<double> xbc(static_cast<size_t>(CD));
    for (int64_t ch = 0; ch < CD; ++ch) {
      double s = p.conv_b[size_t(ch)];
      for (int64_t k = 0; k < K; ++k) s += double(p.conv_w[size_t(ch * K + k)]) * hist[size_t(k * CD + ch)];
      xbc[size_t(ch)] = silu(s);
    }
    std::vector<double> v(static_cast<size_t>(Di));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      double dt = e[size_t(Di + CD + h)] + p.dt_bias[size_t(h)];
      dt = dt > 20 ? dt : std::log1p(std::exp(dt));
      if (c.dt_max > 0) dt = std::min(dt, c.dt_max);
      const double decay = std::exp(dt * -std::exp(double(p.A_log[size_t(h)])));
      for (int64_t q = 0; q < P; ++q) {
        const double xv = xbc[size_t(h * P + q)];
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          double& s = S[size_t((h * P + q) * N + n)];
          s = decay * s + dt * xv * xbc[size_t(Di + g * N + n)];
          acc += s * xbc[size_t(Di + GN + g * N + n)];
        }
        v[size_t(h * P + q)] = acc + p.D[size_t(h)] * xv;
      }
    }
    if (c.norm != Mamba2Norm::NormThenGate)
      for (int64_t i = 0; i < Di; ++i) v[size_t(i)] *= silu(e[size_t(i)]);
    for (int64_t g0 = 0; g0 < Di && c.norm != Mamba2Norm::GateOnly; g0 += c.norm_group) {
      double ss = 0;
      for (int64_t i = g0; i < g0 + c.norm_group; ++i) ss += v[size_t(i)] * v[size_t(i)];
      const double inv = 1 / std::sqrt(ss / double(c.norm_group) + 1e-5);
      for (int64_t i = g0; i < g0 + c.norm_group; ++i) v[size_t(i)] *= inv * p.norm[size_t(i)];
    }
    if (c.norm == Mamba2Norm::NormThenGate)
      for (int64_t i = 0; i < Di; ++i) v[size_t(i)] *= silu(e[size_t(i)]);
    for (int64_t o = 0; o < Dm; ++o) {
      double s = c.proj_bias ? p.out_b[size_t(o)] : 0;
      for (int64_t i = 0; i < Di; ++i) s += double(p.out_proj[size_t(o * Di + i)]) * v[size_t(i)];
      y[size_t(t * Dm + o)] = s;
    }
  }
  return y;
}

class Mamba2Forms : public ::testing::TestWithParam<Case> {};

TEST_P(Mamba2Forms, ChunkedEqualsStepEqualsNaive) {
  const Case c = GetParam();
  const int64_t Dm = 24, Di = c.H * c.P, CD = Di + 2 * c.G * c.N, E = Di + CD + c.H;
  Rng rng(5);
  Params p;
  p.in_proj = randn(size_t(E * Dm), rng, 1 / std::sqrt(double(Dm)));
  p.in_b = randn(size_t(E), rng, 0.1);
  p.conv_w = randn(size_t(CD * c.K), rng, 0.5);
  p.conv_b = randn(size_t(CD), rng, 0.1);
  p.dt_bias = randn(size_t(c.H), rng, 0.5, -2.0);
  p.A_log = randn(size_t(c.H), rng, 0.5, 0.5);
  p.D = randn(size_t(c.H), rng, 1.0);
  p.norm = randn(size_t(Di), rng, 0.2, 1.0);
  p.out_proj = randn(size_t(Dm * Di), rng, 1 / std::sqrt(double(Di)));
  p.out_b = randn(size_t(Dm), rng, 0.1);
  Mamba2Spec s;
  s.n_heads = c.H, s.head_dim = c.P, s.d_state = c.N, s.n_groups = c.G, s.d_conv = c.K, s.chunk = c.chunk;
  s.proj_bias = c.proj_bias, s.dt_max = c.dt_max, s.norm_group_size = c.norm_group, s.norm_eps = 1e-5;
  s.norm = c.norm;
  if (c.multipliers)
    for (int i = 0; i < 5; ++i) s.proj_multipliers[size_t(i)] = kSection[i];
  Mamba2Weights w{p.in_proj.data(),  c.proj_bias ? p.in_b.data() : nullptr,
                  p.conv_w.data(),   p.conv_b.data(),
                  p.dt_bias.data(),  p.A_log.data(),
                  p.D.data(),        c.norm == Mamba2Norm::GateOnly ? nullptr : p.norm.data(),
                  p.out_proj.data(), c.proj_bias ? p.out_b.data() : nullptr};
  Mamba2Mixer mix(s, Dm, w);
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

INSTANTIATE_TEST_SUITE_P(
    Shapes, Mamba2Forms,
    ::testing::Values(Case{8, 16, 16, 2, 4, 32, 128, false, 0.0},  // the fixture's shape
                      Case{4, 8, 8, 1, 4, 16, 16, true, 0.0},      // grouped norm, biases
                      Case{6, 4, 12, 3, 2, 7, 24, false, 0.5},     // dt upper limit
                      Case{2, 32, 4, 2, 3, 64, 32, false, 0.0},
                      Case{16, 32, 64, 4, 4, 64, 512, false, 0.0},  // large enough to decode on a team
                      // Falcon-H1: norm then gate, or gate only; section multipliers
                      Case{4, 8, 8, 2, 4, 16, 16, false, 0.0, Mamba2Norm::NormThenGate, true},
                      Case{4, 8, 8, 1, 4, 16, 32, false, 0.0, Mamba2Norm::GateOnly, true}),
    [](const ::testing::TestParamInfo<Case>& i) {
      const Case& c = i.param;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "H%lld_P%lld_N%lld_G%lld_K%lld_chunk%lld_norm%lld%s%s%s",
                    (long long)c.H, (long long)c.P, (long long)c.N, (long long)c.G, (long long)c.K,
                    (long long)c.chunk, (long long)c.norm_group, c.proj_bias ? "_bias" : "",
                    c.dt_max > 0 ? "_dtmax" : "",
                    c.norm == Mamba2Norm::NormThenGate ? "_normgate"
                    : c.norm == Mamba2Norm::GateOnly   ? "_gateonly"
                                                       : "");
      return std::string(buf);
    });

}  // namespace
