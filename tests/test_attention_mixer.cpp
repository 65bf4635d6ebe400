// Attention mixer: one forward over T tokens == token-by-token decode == uneven chunks
// == a naive double-precision reference, across head layouts, partial rotary, q/k norm
// and sliding windows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/attention.hpp"

using namespace braid;

namespace {

struct Case {
  int64_t H, KV, hd, rot, window;
  bool qk_norm, bias;
  int64_t sinks = 0;  // with a window: the first positions every query sees
};

struct Params {
  std::vector<float> wq, wk, wv, wo, bq, bk, bv, bo, qn, kn;
};

// Naive reference: every position attends to its window and the sinks, all in double.
std::vector<double> reference(const Case& c, const AttentionSpec& spec, const Params& p,
                              const std::vector<float>& x, int64_t T, int64_t D) {
  const int64_t H = c.H, KV = c.KV, hd = c.hd, G = H / KV;
  auto proj = [&](const std::vector<float>& W, const std::vector<float>& b, int64_t out, const double* in,
                  int64_t nin, double* y) {
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0 : b[size_t(o)];
      for (int64_t i = 0; i < nin; ++i) s += double(W[size_t(o * nin + i)]) * in[i];
      y[o] = s;
    }
  };
  auto rms = [&](double* v, const std::vector<float>& w) {
    double ss = 0;
    for (int64_t i = 0; i < hd; ++i) ss += v[i] * v[i];
    const double inv = 1 / std::sqrt(ss / double(hd) + 1e-6);
    for (int64_t i = 0; i < hd; ++i) v[i] = v[i] * inv * w[size_t(i)];
  };
  std::vector<float> inv = rope_inv_freq(spec.rope);
  auto rope = [&](double* v, int64_t pos) {
    const int64_t h2 = c.rot / 2;
    for (int64_t i = 0; i < h2; ++i) {
      const double a = double(float(pos) * inv[size_t(i)]);
      const double x0 = v[i], x1 = v[i + h2];
      v[i] = x0 * std::cos(a) - x1 * std::sin(a);
      v[i + h2] = x1 * std::cos(a) + x0 * std::sin(a);
    }
  };
  std::vector<double> q(size_t(T * H * hd)), k(size_t(T * KV * hd)), v(size_t(T * KV * hd)),
      xd(x.begin(), x.end());
  for (int64_t t = 0; t < T; ++t) {
    proj(p.wq, p.bq, H * hd, &xd[size_t(t * D)], D, &q[size_t(t * H * hd)]);
    proj(p.wk, p.bk, KV * hd, &xd[size_t(t * D)], D, &k[size_t(t * KV * hd)]);
    proj(p.wv, p.bv, KV * hd, &xd[size_t(t * D)], D, &v[size_t(t * KV * hd)]);
    for (int64_t h = 0; h < H; ++h) {
      if (c.qk_norm) rms(&q[size_t((t * H + h) * hd)], p.qn);
      rope(&q[size_t((t * H + h) * hd)], t);
    }
    for (int64_t g = 0; g < KV; ++g) {
      if (c.qk_norm) rms(&k[size_t((t * KV + g) * hd)], p.kn);
      rope(&k[size_t((t * KV + g) * hd)], t);
    }
  }
  std::vector<double> att(size_t(T * H * hd)), y(size_t(T * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / G, lo = c.window > 0 ? std::max<int64_t>(0, t - c.window + 1) : 0;
      std::vector<double> s;
      std::vector<int64_t> seen;
      double m = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        if (j < lo && j >= c.sinks) continue;
        seen.push_back(j);
        double d = 0;
        for (int64_t i = 0; i < hd; ++i)
          d += q[size_t((t * H + h) * hd + i)] * k[size_t((j * KV + g) * hd + i)];
        s.push_back(d / std::sqrt(double(hd)));
        m = std::max(m, s.back());
      }
      double z = 0;
      for (auto& e : s) z += e = std::exp(e - m);
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (size_t n = 0; n < seen.size(); ++n) acc += s[n] / z * v[size_t((seen[n] * KV + g) * hd + i)];
        att[size_t((t * H + h) * hd + i)] = acc;
      }
    }
  for (int64_t t = 0; t < T; ++t) proj(p.wo, p.bo, D, &att[size_t(t * H * hd)], H * hd, &y[size_t(t * D)]);
  return y;
}

class AttentionForms : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionForms, ChunkedEqualsStepEqualsNaive) {
  const Case c = GetParam();
  const int64_t D = 48;
  Rng rng(42);
  AttentionSpec spec;
  spec.n_heads = c.H, spec.n_kv_heads = c.KV, spec.head_dim = c.hd, spec.qk_norm = c.qk_norm;
  spec.sliding_window = c.window, spec.qkv_bias = spec.out_bias = c.bias, spec.sink_tokens = c.sinks;
  spec.rope.rotary_dim = c.rot;
  spec.rope.theta = 10000;
  Params p;
  const double s = 1 / std::sqrt(double(D));
  p.wq = randn(size_t(c.H * c.hd * D), rng, s), p.wk = randn(size_t(c.KV * c.hd * D), rng, s);
  p.wv = randn(size_t(c.KV * c.hd * D), rng, s), p.wo = randn(size_t(D * c.H * c.hd), rng, s);
  if (c.bias) {
    p.bq = randn(size_t(c.H * c.hd), rng, 0.1), p.bk = randn(size_t(c.KV * c.hd), rng, 0.1);
    p.bv = randn(size_t(c.KV * c.hd), rng, 0.1), p.bo = randn(size_t(D), rng, 0.1);
  }
  if (c.qk_norm) p.qn = randn(size_t(c.hd), rng, 1), p.kn = randn(size_t(c.hd), rng, 1);
  AttentionWeights w{p.wq.data(),
                     p.wk.data(),
                     p.wv.data(),
                     p.wo.data(),
                     c.bias ? p.bq.data() : nullptr,
                     c.bias ? p.bk.data() : nullptr,
                     c.bias ? p.bv.data() : nullptr,
                     c.bias ? p.bo.data() : nullptr,
                     c.qk_norm ? p.qn.data() : nullptr,
                     c.qk_norm ? p.kn.data() : nullptr};
  AttentionMixer mix(spec, D, 1e-6, w);
  const int64_t TQ = 64;  // the mixer's query tile
  for (int64_t T : {int64_t(1), int64_t(7), TQ - 1, TQ, TQ + 1, 3 * TQ + 5, int64_t(1000)}) {
    std::vector<float> x = randn(size_t(T * D), rng, 1);
    const std::vector<double> ref = reference(c, spec, p, x, T, D);
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    EXPECT_EQ(e.position, T);
    // A full cache holds every position; a sliding-window one, after a call that left more
    // than 2 x window positions after its sinks, only the sinks and the last window - 1.
    const size_t per_position = size_t(2 * c.KV * c.hd) * sizeof(float);
    const int64_t held = c.window > 0 && T - c.sinks > 2 * c.window ? c.sinks + c.window - 1 : T;
    EXPECT_EQ(e.state_bytes, size_t(held) * per_position) << "T=" << T;
    if (c.window > 0) {
      EXPECT_LE(e.state_bytes, mix.fixed_state_bytes());
    }
    EXPECT_LT(e.full, 2e-5) << "T=" << T;
    EXPECT_LT(e.step, 2e-5) << "T=" << T;
    EXPECT_LT(e.pieces, 2e-5) << "T=" << T;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionForms,
    ::testing::Values(Case{4, 2, 16, 16, 0, false, false},   // GQA, full rotary
                      Case{4, 4, 8, 4, 0, true, false},      // MHA, partial rotary, q/k norm
                      Case{6, 2, 12, 0, 0, false, true},     // no rotary, biases
                      Case{4, 1, 16, 16, 37, false, false},  // MQA, sliding window
                      Case{2, 2, 32, 16, 64, true, true},
                      Case{4, 1, 16, 16, 37, false, false, 4},  // window and sinks
                      Case{2, 2, 8, 8, 5, false, false, 7},     // more sinks than window
                      Case{8, 4, 48, 32, 0, true, true},        // decodes on a team
                      Case{10, 2, 16, 16, 0, false, false},     // 5 heads a group: tasks of 4 and 1
                      Case{8, 1, 16, 16, 9, false, false, 2}),  // 8 a group, window, sinks
    [](const ::testing::TestParamInfo<Case>& i) {
      const Case& c = i.param;
      char buf[96];
      std::snprintf(buf, sizeof(buf), "H%lld_KV%lld_hd%lld_rot%lld_win%lld_sink%lld%s%s", (long long)c.H,
                    (long long)c.KV, (long long)c.hd, (long long)c.rot, (long long)c.window,
                    (long long)c.sinks, c.qk_norm ? "_qknorm" : "", c.bias ? "_bias" : "");
      return std::string(buf);
    });

TEST(Attention, Llama3RopeScalingKeepsHighFrequencies) {
  RopeSpec r;
  r.rotary_dim = 64;
  r.theta = 500000;
  RopeSpec l = r;
  l.type = "llama3", l.factor = 8, l.low_freq_factor = 1, l.high_freq_factor = 4,
  l.original_max_position = 8192;
  auto a = rope_inv_freq(r), b = rope_inv_freq(l);
  EXPECT_EQ(a[0], b[0]);                       // short wavelengths untouched
  EXPECT_NEAR(b.back(), a.back() / 8, 1e-12);  // long wavelengths divided by the factor
}

}  // namespace
