// Mamba-1 mixer: one call over T tokens == token-by-token == uneven chunks == a naive
// double-precision recurrence, for several shapes and chunk sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/mamba.hpp"

using namespace braid;

namespace {

struct Case {
  int64_t d_inner, d_state, d_conv, dt_rank, chunk;
  bool conv_bias, proj_bias;
  double bcdt_eps;
};

struct Params {
  std::vector<float> in_proj, in_b, conv_w, conv_b, x_proj, dt_proj, dt_b, A_log, D, out_proj, out_b;
};

double softplus(double v) { return v > 20 ? v : std::log1p(std::exp(v)); }
double silu(double v) { return v / (1 + std::exp(-v)); }

// The recurrence token by token, in double.
std::vector<double> reference(const Case& c, const Params& p, const std::vector<float>& x, int64_t T,
                              int64_t D) {
  const int64_t Di = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  std::vector<double> hist(size_t(K * Di), 0.0), h(size_t(Di * N), 0.0), y(size_t(T * D));
  auto rms = [&](std::vector<double>& v, size_t off, int64_t n) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += v[off + size_t(i)] * v[off + size_t(i)];
    const double inv = 1 / std::sqrt(ss / double(n) + c.bcdt_eps);
    for (int64_t i = 0; i < n; ++i) v[off + size_t(i)] *= inv;
  };
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> xz(size_t(2 * Di));
    for (int64_t o = 0; o < 2 * Di; ++o) {
      double s = c.proj_bias ? p.in_b[size_t(o)] : 0;
      for (int64_t i = 0; i < D; ++i) s += double(p.in_proj[size_t(o * D + i)]) * x[size_t(t * D + i)];
      xz[size_t(o)] = s;
    }
    // shift the conv history and append this input
    for (int64_t k = 0; k + 1 < K; ++k)
      for (int64_t ch = 0; ch < Di; ++ch) hist[size_t(k * Di + ch)] = hist[size_t((k + 1) * Di + ch)];
    for (int64_t ch = 0; ch < Di; ++ch) hist[size_t((K - 1) * Di + ch)] = xz[size_t(ch)];
    std::vector<double> u(static_cast<size_t>(Di));
    for (int64_t ch = 0; ch < Di; ++ch) {
      double s = c.conv_bias ? p.conv_b[size_t(ch)] : 0;
      for (int64_t k = 0; k < K; ++k) s += double(p.conv_w[size_t(ch * K + k)]) * hist[size_t(k * Di + ch)];
      u[size_t(ch)] = silu(s);
    }
    std::vector<double> dbc(size_t(R + 2 * N));
    for (int64_t o = 0; o < R + 2 * N; ++o) {
      double s = 0;
      for (int64_t i = 0; i < Di; ++i) s += double(p.x_proj[size_t(o * Di + i)]) * u[size_t(i)];
      dbc[size_t(o)] = s;
    }
    if (c.bcdt_eps > 0) rms(dbc, size_t(R), N), rms(dbc, size_t(R + N), N), rms(dbc, 0, R);
    std::vector<double> g(static_cast<size_t>(Di));
    for (int64_t ch = 0; ch < Di; ++ch) {
      double dt = p.dt_b[size_t(ch)];
      for (int64_t r = 0; r < R; ++r) dt += double(p.dt_proj[size_t(ch * R + r)]) * dbc[size_t(r)];
      dt = softplus(dt);
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        const double A = -std::exp(double(p.A_log[size_t(ch * N + n)]));
        double& hn = h[size_t(ch * N + n)];
        hn = std::exp(A * dt) * hn + dt * dbc[size_t(R + n)] * u[size_t(ch)];
        acc += hn * dbc[size_t(R + N + n)];
      }
      g[size_t(ch)] = (acc + u[size_t(ch)] * p.D[size_t(ch)]) * silu(xz[size_t(Di + ch)]);
    }
    for (int64_t o = 0; o < D; ++o) {
      double s = c.proj_bias ? p.out_b[size_t(o)] : 0;
      for (int64_t i = 0; i < Di; ++i) s += double(p.out_proj[size_t(o * Di + i)]) * g[size_t(i)];
      y[size_t(t * D + o)] = s;
    }
  }
  return y;
}

class MambaForms : public ::testing::TestWithParam<Case> {};

TEST_P(MambaForms, ChunkedEqualsStepEqualsNaive) {
  const Case c = GetParam();
  const int64_t D = 24, Di = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  Rng rng(7);
  Params p;
  p.in_proj = randn(size_t(2 * Di * D), rng, 1 / std::sqrt(double(D)));
  p.in_b = randn(size_t(2 * Di), rng, 0.1);
  p.conv_w = randn(size_t(Di * K), rng, 0.5);
  p.conv_b = randn(size_t(Di), rng, 0.1);
  p.x_proj = randn(size_t((R + 2 * N) * Di), rng, 1 / std::sqrt(double(Di)));
  p.dt_proj = randn(size_t(Di * R), rng, 0.5);
  p.dt_b = randn(size_t(Di), rng, 0.5, -3.0);
  p.A_log = randn(size_t(Di * N), rng, 0.5, 0.5);
  p.D = randn(size_t(Di), rng, 1.0);
  p.out_proj = randn(size_t(D * Di), rng, 1 / std::sqrt(double(Di)));
  p.out_b = randn(size_t(D), rng, 0.1);
  MambaSpec s;
  s.d_inner = Di, s.d_state = N, s.d_conv = K, s.dt_rank = R, s.chunk = c.chunk;
  s.conv_bias = c.conv_bias, s.proj_bias = c.proj_bias, s.bcdt_norm_eps = c.bcdt_eps;
  MambaWeights w{p.in_proj.data(),
                 c.proj_bias ? p.in_b.data() : nullptr,
                 p.conv_w.data(),
                 c.conv_bias ? p.conv_b.data() : nullptr,
                 p.x_proj.data(),
                 p.dt_proj.data(),
                 p.dt_b.data(),
                 p.A_log.data(),
                 p.D.data(),
                 p.out_proj.data(),
                 c.proj_bias ? p.out_b.data() : nullptr};
  MambaMixer mix(s, D, w);
  const int64_t ch = c.chunk;
  for (int64_t T : {int64_t(1), int64_t(7), ch - 1, ch, ch + 1, 3 * ch + 5, int64_t(1000)}) {
    if (T < 1) continue;
    std::vector<float> x = randn(size_t(T * D), rng, 1);
    const std::vector<double> ref = reference(c, p, x, T, D);
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    EXPECT_EQ(e.position, T);
    EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
    // f32 against double over up to 1000 steps of a contracting recurrence: relative 1e-5.
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    expect_forms_match(e);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MambaForms,
                         ::testing::Values(Case{32, 16, 4, 4, 64, true, false, 0.0},    // Mamba
                                           Case{48, 8, 4, 3, 16, true, false, 1e-6},    // FalconMamba norms
                                           Case{16, 4, 2, 2, 5, false, true, 0.0},      // biases, short conv
                                           Case{40, 16, 1, 5, 33, true, true, 1e-5},    // no conv history
                                           Case{512, 16, 4, 8, 64, true, false, 0.0}),  // decodes on a team
                         [](const ::testing::TestParamInfo<Case>& i) {
                           const Case& c = i.param;
                           char buf[96];
                           std::snprintf(buf, sizeof(buf), "Di%lld_N%lld_K%lld_R%lld_chunk%lld%s%s%s",
                                         (long long)c.d_inner, (long long)c.d_state, (long long)c.d_conv,
                                         (long long)c.dt_rank, (long long)c.chunk,
                                         c.conv_bias ? "_convbias" : "", c.proj_bias ? "_projbias" : "",
                                         c.bcdt_eps > 0 ? "_bcdtnorm" : "");
                           return std::string(buf);
                         });

}  // namespace
