// The decayed linear-attention kernel (GLA family) and the lightning mixer built on it:
// chunked == token by token == a naive double-precision recurrence, for scalar (per head)
// and per-key-channel decays and several chunk sizes.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.hpp"
#include "mixer_forms.hpp"
#include "mixers/lightning.hpp"
#include "mixers/linear_attention.hpp"

using namespace braid;

namespace {

// Runs T tokens through the kernel in chunks of `chunk` and returns o [T][dv].
std::vector<float> run_kernel(int64_t T, int64_t chunk, int64_t dk, int64_t dv, const std::vector<float>& q,
                              const std::vector<float>& k, const std::vector<float>& v,
                              const std::vector<float>& g, bool per_channel) {
  std::vector<float> S(size_t(dk * dv), 0.0f), o(size_t(T * dv));
  std::vector<float> scratch(linear_attention_scratch(chunk, dk, dv, per_channel));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    const int64_t gw = per_channel ? dk : 1;
    LinearAttentionChunk c;
    c.Q = n, c.dk = dk, c.dv = dv;
    c.q = q.data() + t0 * dk, c.k = k.data() + t0 * dk, c.v = v.data() + t0 * dv;
    c.ldq = c.ldk = dk, c.ldv = dv;
    c.g = g.data() + t0 * gw, c.per_channel = per_channel, c.ldg = dk;
    c.S = S.data();
    c.o = o.data() + t0 * dv, c.ldo = dv;
    linear_attention(c, scratch.data());
  }
  return o;
}

}  // namespace

TEST(LinearAttention, ChunkedEqualsRecurrenceForScalarAndChannelDecay) {
  Rng rng(21);
  for (bool per_channel : {false, true})
    for (int64_t dk : {int64_t(8), int64_t(16)}) {
      const int64_t dv = 12, T = 200;
      auto q = randn(size_t(T * dk), rng, 0.5), k = randn(size_t(T * dk), rng, 0.5),
           v = randn(size_t(T * dv), rng, 1);
      std::vector<float> g(size_t(T * (per_channel ? dk : 1)));
      for (auto& x : g) x = -float(std::abs(rng.normal()) * 0.3);  // log decays <= 0
      std::vector<double> S(size_t(dk * dv), 0.0), ref(size_t(T * dv));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < dk; ++i) {
          const double a = std::exp(double(g[size_t(per_channel ? t * dk + i : t)]));
          for (int64_t j = 0; j < dv; ++j)
            S[size_t(i * dv + j)] =
                a * S[size_t(i * dv + j)] + double(k[size_t(t * dk + i)]) * v[size_t(t * dv + j)];
        }
        for (int64_t j = 0; j < dv; ++j) {
          double o = 0;
          for (int64_t i = 0; i < dk; ++i) o += S[size_t(i * dv + j)] * q[size_t(t * dk + i)];
          ref[size_t(t * dv + j)] = o;
        }
      }
      for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(32), int64_t(64), int64_t(256)}) {
        const std::vector<float> o = run_kernel(T, chunk, dk, dv, q, k, v, g, per_channel);
        double err = 0, scale = 0;
        for (size_t i = 0; i < o.size(); ++i) {
          err = std::max(err, std::abs(o[i] - ref[i]));
          scale = std::max(scale, std::abs(ref[i]));
        }
        EXPECT_LT(err, 1e-5 * std::max(1.0, scale))
            << (per_channel ? "per-channel" : "scalar") << " dk=" << dk << " chunk=" << chunk;
      }
    }
}

TEST(LinearAttention, LightningMixerFormsAgree) {
  const int64_t D = 24, H = 3, hd = 8, HD = H * hd;
  Rng rng(22);
  auto qkv = randn(size_t(3 * HD * D), rng, 0.3), gate = randn(size_t(HD * D), rng, 0.3);
  auto norm = randn(size_t(HD), rng, 0.2, 1.0), out = randn(size_t(D * HD), rng, 0.2);
  LightningSpec s;
  s.n_heads = H, s.head_dim = hd, s.slope_factor = 0.7, s.chunk = 16;
  LightningMixer mix(s, D, {qkv.data(), gate.data(), norm.data(), out.data()});
  auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  for (int64_t T :
       {int64_t(1), int64_t(7), int64_t(15), int64_t(16), int64_t(17), int64_t(53), int64_t(1000)}) {
    auto x = randn(size_t(T * D), rng, 1);
    std::vector<double> S(size_t(H * hd * hd), 0.0), ref(size_t(T * D));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> p(size_t(3 * HD)), gt(static_cast<size_t>(HD)), o(static_cast<size_t>(HD));
      for (int64_t r = 0; r < 3 * HD; ++r) {
        double a = 0;
        for (int64_t i = 0; i < D; ++i) a += double(qkv[size_t(r * D + i)]) * x[size_t(t * D + i)];
        p[size_t(r)] = silu(a);
      }
      for (int64_t r = 0; r < HD; ++r) {
        double a = 0;
        for (int64_t i = 0; i < D; ++i) a += double(gate[size_t(r * D + i)]) * x[size_t(t * D + i)];
        gt[size_t(r)] = a;
      }
      for (int64_t h = 0; h < H; ++h) {
        const double decay = std::exp(-double(mix.slopes()[size_t(h)]));
        const double *q = &p[size_t(h * 3 * hd)], *k = q + hd, *v = q + 2 * hd;
        for (int64_t i = 0; i < hd; ++i)
          for (int64_t j = 0; j < hd; ++j) {
            double& e = S[size_t((h * hd + i) * hd + j)];
            e = decay * e + k[i] * v[j];
          }
        for (int64_t j = 0; j < hd; ++j) {
          double a = 0;
          for (int64_t i = 0; i < hd; ++i) a += S[size_t((h * hd + i) * hd + j)] * q[i];
          o[size_t(h * hd + j)] = a;
        }
      }
      double ss = 0;
      for (double e : o) ss += e * e;
      const double inv = 1 / std::sqrt(ss / double(HD) + 1e-6);
      for (int64_t r = 0; r < HD; ++r) o[size_t(r)] *= inv * norm[size_t(r)] / (1 + std::exp(-gt[size_t(r)]));
      for (int64_t r = 0; r < D; ++r) {
        double a = 0;
        for (int64_t i = 0; i < HD; ++i) a += double(out[size_t(r * HD + i)]) * o[size_t(i)];
        ref[size_t(t * D + r)] = a;
      }
    }
    const FormErrors e = run_three_forms(mix, x, T, D, ref);
    EXPECT_EQ(e.position, T);
    SCOPED_TRACE(::testing::Message() << "T=" << T);
    expect_forms_match(e);
  }
}
