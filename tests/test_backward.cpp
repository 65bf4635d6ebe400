// Backward passes against finite differences: every op in ops/cpu/backward.hpp and the
// causal convolution, the attention mixer (head layouts, partial rotary, q/k norm,
// output gate, sliding window, biases, key multiplier), Gated DeltaNet (head layouts,
// sequences shorter and longer than a chunk), gated short convolution, Mamba-1, Mamba-2,
// gated linear attention, RG-LRU, lightning attention, parallel blocks, mLSTM, RWKV-4
// time and channel mixing, the MLP and the mixture of experts: every mixer braid has.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "grad_check.hpp"
#include "mixer_forms.hpp"
#include "mixers/attention.hpp"
#include "mixers/gated_deltanet.hpp"
#include "mixers/gla.hpp"
#include "mixers/lightning.hpp"
#include "mixers/mamba.hpp"
#include "mixers/mamba2.hpp"
#include "mixers/mlstm.hpp"
#include "mixers/parallel.hpp"
#include "mixers/rglru.hpp"
#include "mixers/rwkv4.hpp"
#include "mixers/short_conv.hpp"
#include "mixers/titans.hpp"
#include "model/ffn.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

using namespace braid;

namespace {

TEST(BackwardOps, Linear) {
  Rng r(1);
  const int64_t T = 5, in = 7, out = 6;
  auto x = randn(T * in, r, 1), W = randn(out * in, r, 0.5), b = randn(out, r, 0.5), R = randn(T * out, r, 1);
  std::vector<float> dx(T * in), dW(out * in, 0.0f), db(out, 0.0f), y(T * out);
  ops::linear_backward(x.data(), T, in, W.data(), out, R.data(), dx.data(), false, dW.data(), db.data());
  auto loss = [&] {
    ops::linear(x.data(), T, in, W.data(), out, b.data(), y.data());
    return weighted_sum(y, R);
  };
  expect_grads_match(loss, {{"x", &x, &dx}, {"W", &W, &dW}, {"b", &b, &db}});
}

TEST(BackwardOps, NormsAndAliasing) {
  Rng r(2);
  const int64_t rows = 4, n = 9;
  auto x = randn(rows * n, r, 1.5, 0.3), w = randn(n, r, 0.5, 1), b = randn(n, r, 0.5),
       R = randn(rows * n, r, 1);
  std::vector<float> y(rows * n);
  for (bool layer : {false, true}) {
    std::vector<float> dx(rows * n), dw(n, 0.0f), db(n, 0.0f);
    if (layer)
      ops::layernorm_backward(x.data(), w.data(), 1e-5f, rows, n, R.data(), dx.data(), false, dw.data(),
                              db.data());
    else
      ops::rmsnorm_backward(x.data(), w.data(), 1e-5f, rows, n, R.data(), dx.data(), false, dw.data());
    auto loss = [&] {
      if (layer)
        ops::layernorm(x.data(), w.data(), b.data(), 1e-5f, rows, n, y.data());
      else
        ops::rmsnorm(x.data(), w.data(), 1e-5f, rows, n, y.data());
      return weighted_sum(y, R);
    };
    std::vector<GradBuffer> bufs = {{"x", &x, &dx}, {"w", &w, &dw}};
    if (layer) bufs.push_back({"b", &b, &db});
    expect_grads_match(loss, bufs, 40);
    // dx may alias dy: same result, same weight gradient.
    std::vector<float> d2(R), dw2(n, 0.0f), db2(n, 0.0f);
    if (layer)
      ops::layernorm_backward(x.data(), w.data(), 1e-5f, rows, n, d2.data(), d2.data(), false, dw2.data(),
                              db2.data());
    else
      ops::rmsnorm_backward(x.data(), w.data(), 1e-5f, rows, n, d2.data(), d2.data(), false, dw2.data());
    EXPECT_EQ(d2, dx);
    EXPECT_EQ(dw2, dw);
  }
}

TEST(BackwardOps, Activations) {
  Rng r(3);
  const int64_t n = 40;
  auto x = randn(n, r, 2), R = randn(n, r, 1);
  using Fwd = void (*)(float*, int64_t);
  using Bwd = void (*)(const float*, const float*, int64_t, float*);
  const std::pair<Fwd, Bwd> acts[] = {{ops::silu_inplace, ops::silu_backward},
                                      {ops::gelu_tanh_inplace, ops::gelu_tanh_backward},
                                      {ops::gelu_erf_inplace, ops::gelu_erf_backward},
                                      {ops::relu2_inplace, ops::relu2_backward}};
  for (const auto& [fwd, bwd] : acts) {
    std::vector<float> dx(n);
    bwd(x.data(), R.data(), n, dx.data());
    auto loss = [&, fwd = fwd] {
      std::vector<float> y(x);
      fwd(y.data(), n);
      return weighted_sum(y, R);
    };
    expect_grads_match(loss, {{"x", &x, &dx}}, int(n), 1e-3);
  }
}

TEST(BackwardOps, SoftmaxAndCrossEntropy) {
  Rng r(4);
  const int64_t T = 6, V = 11;
  auto z = randn(T * V, r, 2), R = randn(V, r, 1);
  // Softmax of one row.
  std::vector<float> p(z.begin(), z.begin() + V), dz(V);
  ops::softmax_inplace(p.data(), V);
  ops::softmax_backward(p.data(), R.data(), V, dz.data());
  std::vector<float> row(z.begin(), z.begin() + V);
  auto sm_loss = [&] {
    std::vector<float> y(row);
    ops::softmax_inplace(y.data(), V);
    return weighted_sum(y, R);
  };
  expect_grads_match(sm_loss, {{"row", &row, &dz}}, int(V), 1e-3);
  // Cross-entropy: the loss equals a double reference, the gradient finite differences,
  // and rows without a target contribute nothing.
  const std::vector<int32_t> tgt = {3, -1, 0, 10, 5, -1};
  std::vector<float> g(z);
  const double got = ops::cross_entropy_fused(g.data(), tgt.data(), T, V, 0.5f);
  auto ce = [&] {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (tgt[size_t(t)] < 0) continue;
      double m = -1e30, e = 0;
      for (int64_t i = 0; i < V; ++i) m = std::max(m, double(z[size_t(t * V + i)]));
      for (int64_t i = 0; i < V; ++i) e += std::exp(double(z[size_t(t * V + i)]) - m);
      s += m + std::log(e) - z[size_t(t * V + tgt[size_t(t)])];
    }
    return 0.5 * s;
  };
  EXPECT_NEAR(0.5 * got, ce(), 1e-5);
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(g[size_t(V + i)], 0.0f);
  expect_grads_match(ce, {{"logits", &z, &g}}, int(T * V), 1e-3);
}

TEST(BackwardOps, CausalConv) {
  Rng r(8);
  const int64_t T = 9, C = 5, K = 4, ld = 7;  // input rows strided wider than C
  auto in = randn(T * ld, r, 1), w = randn(C * K, r, 0.5), b = randn(C, r, 0.5), R = randn(T * C, r, 1);
  std::vector<float> din(T * ld, 0.0f), dw(C * K, 0.0f), db(C, 0.0f);
  ops::causal_conv1d_backward(in.data(), ld, T, C, w.data(), K, R.data(), din.data(), dw.data(), db.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = C; c < ld; ++c) EXPECT_EQ(din[size_t(t * ld + c)], 0.0f);
  auto loss = [&] {
    std::vector<float> win((K - 1) * C, 0.0f), y(T * C);
    ops::causal_conv1d(in.data(), ld, T, C, w.data(), b.data(), K, false, win.data(), y.data());
    return weighted_sum(y, R);
  };
  expect_grads_match(loss, {{"in", &in, &din}, {"w", &w, &dw}, {"b", &b, &db}}, 40);
}

struct AttnCase {
  int64_t H, KV, hd, rot, window;
  bool qk_norm, bias, gate;
  double key_mult;
  int64_t sinks = 0;
};

class AttentionBackward : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionBackward, MatchesFiniteDifferences) {
  const AttnCase c = GetParam();
  const int64_t D = 12, T = 13;
  AttentionSpec s;
  s.n_heads = c.H, s.n_kv_heads = c.KV, s.head_dim = c.hd, s.sliding_window = c.window;
  s.qk_norm = c.qk_norm, s.qkv_bias = s.out_bias = c.bias, s.output_gate = c.gate,
  s.key_multiplier = c.key_mult, s.sink_tokens = c.sinks;
  s.rope.rotary_dim = c.rot, s.rope.theta = 100;
  Rng r(5);
  const int64_t qd = c.H * c.hd, kd = c.KV * c.hd;
  auto wq = randn((c.gate ? 2 : 1) * qd * D, r, 0.4), wk = randn(kd * D, r, 0.4), wv = randn(kd * D, r, 0.4);
  auto wo = randn(D * qd, r, 0.4), bq = randn((c.gate ? 2 : 1) * qd, r, 0.3), bk = randn(kd, r, 0.3);
  auto bv = randn(kd, r, 0.3), bo = randn(D, r, 0.3), qn = randn(c.hd, r, 0.3, 1),
       kn = randn(c.hd, r, 0.3, 1);
  AttentionWeights w{wq.data(), wk.data(), wv.data(), wo.data()};
  if (c.bias) w.bq = bq.data(), w.bk = bk.data(), w.bv = bv.data(), w.bo = bo.data();
  if (c.qk_norm) w.q_norm = qn.data(), w.k_norm = kn.data();
  AttentionMixer mix(s, D, 1e-6, w);
  auto x = randn(T * D, r, 1), R = randn(T * D, r, 1);
  TestGrads g;
  std::vector<std::vector<float>*> params = {&wq, &wk, &wv, &wo};
  if (c.bias) params.insert(params.end(), {&bq, &bk, &bv, &bo});
  if (c.qk_norm) params.insert(params.end(), {&qn, &kn});
  for (auto* p : params) g.add(*p);
  std::vector<float> dx(T * D);
  mix.backward(x.data(), T, R.data(), dx.data(), g);
  auto loss = [&] {
    Workspace ws;
    auto st = mix.make_state();
    std::vector<float> y(T * D);
    mix.forward(x.data(), T, *st, y.data(), ws);
    return weighted_sum(y, R);
  };
  std::vector<GradBuffer> bufs = {{"x", &x, &dx}};
  const char* names[] = {"wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo", "q_norm", "k_norm"};
  for (size_t i = 0; i < params.size(); ++i) {
    const size_t ni = i < 4 || c.bias ? i : i + 4;
    bufs.push_back({names[ni], params[i], &g.at(*params[i])});
  }
  expect_grads_match(loss, bufs);
}

INSTANTIATE_TEST_SUITE_P(Layouts, AttentionBackward,
                         ::testing::Values(AttnCase{2, 2, 4, 4, 0, false, false, false, 1.0},
                                           AttnCase{4, 2, 4, 2, 0, true, true, false, 1.0},
                                           AttnCase{4, 1, 6, 6, 5, false, false, true, 0.5},
                                           AttnCase{3, 3, 4, 0, 3, true, true, true, 1.0},
                                           AttnCase{2, 1, 4, 4, 4, false, false, false, 1.0, 2}));  // sinks

// Checks a mixer's backward against finite differences of L = sum(y * R), y the forward
// of x from an empty state, for x and each parameter in `params` (named `names`). x and R
// are drawn from r. `make` builds the mixer from the weights as they are at the call, so
// mixers that derive values from their weights see every perturbation.
template <class Make>
void expect_mixer_grads(const Make& make, int64_t T, int64_t D, Rng& r,
                        const std::vector<std::vector<float>*>& params, const std::vector<std::string>& names,
                        int samples = 16, double eps = 1e-2) {
  TestGrads g;
  for (auto* p : params) g.add(*p);
  auto x = randn(T * D, r, 1), R = randn(T * D, r, 1);
  std::vector<float> dx(static_cast<size_t>(T * D));
  make()->backward(x.data(), T, R.data(), dx.data(), g);
  auto loss = [&] {
    auto mix = make();
    Workspace ws;
    auto st = mix->make_state();
    std::vector<float> y(static_cast<size_t>(T * D));
    mix->forward(x.data(), T, *st, y.data(), ws);
    return weighted_sum(y, R);
  };
  std::vector<GradBuffer> bufs = {{"x", &x, &dx}};
  for (size_t i = 0; i < params.size(); ++i) bufs.push_back({names[i], params[i], &g.at(*params[i])});
  expect_grads_match(loss, bufs, samples, eps);
}

struct GdnCase {
  int64_t NK, NV, DK, DV, K, chunk, T;
};

class GatedDeltaNetBackward : public ::testing::TestWithParam<GdnCase> {};

TEST_P(GatedDeltaNetBackward, MatchesFiniteDifferences) {
  const GdnCase c = GetParam();
  const int64_t D = 10, KD = c.NK * c.DK, VD = c.NV * c.DV, CD = 2 * KD + VD, T = c.T;
  Rng r(9);
  auto qkvz = randn((2 * KD + 2 * VD) * D, r, 0.4), ba = randn(2 * c.NV * D, r, 0.4);
  auto conv = randn(CD * c.K, r, 0.5), dt = randn(c.NV, r, 0.5, -1.0), A_log = randn(c.NV, r, 0.5, 0.5);
  auto norm = randn(c.DV, r, 0.2, 1.0), out = randn(D * VD, r, 0.4);
  GatedDeltaNetSpec s;
  s.n_k_heads = c.NK, s.n_v_heads = c.NV, s.head_k_dim = c.DK, s.head_v_dim = c.DV, s.d_conv = c.K;
  s.chunk = c.chunk;
  // The helper's default step (1e-2): the five-point stencil's truncation error is then
  // ~1e-8, while a step of 1e-3 lets the f32 forward's rounding reach the tolerance on
  // BLAS builds that round differently (dt_bias off by 0.2% on one CPU, exact on another).
  const GatedDeltaNetWeights w{qkvz.data(),  ba.data(),   conv.data(), dt.data(),
                               A_log.data(), norm.data(), out.data()};
  expect_mixer_grads([&] { return std::make_unique<GatedDeltaNetMixer>(s, D, w); }, T, D, r,
                     {&qkvz, &ba, &conv, &dt, &A_log, &norm, &out},
                     {"in_proj_qkvz", "in_proj_ba", "conv1d", "dt_bias", "A_log", "norm", "out_proj"}, 24);
}

INSTANTIATE_TEST_SUITE_P(Layouts, GatedDeltaNetBackward,
                         ::testing::Values(GdnCase{1, 1, 4, 4, 4, 4, 3},     // shorter than a chunk
                                           GdnCase{2, 4, 4, 6, 4, 4, 11},    // 2 value heads per key head
                                           GdnCase{1, 3, 6, 4, 3, 5, 16}));  // several chunks, uneven tail

TEST(ShortConvBackward, MatchesFiniteDifferences) {
  for (bool bias : {false, true}) {
    const int64_t D = 6, T = 9;
    Rng r(10);
    auto in = randn(3 * D * D, r, 0.4), in_b = randn(3 * D, r, 0.3), conv = randn(D * 3, r, 0.5),
         conv_b = randn(D, r, 0.3), out = randn(D * D, r, 0.4), out_b = randn(D, r, 0.3);
    ShortConvSpec s;
    s.kernel = 3, s.bias = bias;
    ShortConvWeights w{in.data(), nullptr, conv.data(), nullptr, out.data(), nullptr};
    if (bias) w.in_proj_b = in_b.data(), w.conv_b = conv_b.data(), w.out_proj_b = out_b.data();
    std::vector<std::vector<float>*> params = {&in, &conv, &out};
    std::vector<std::string> names = {"in_proj", "conv", "out_proj"};
    if (bias) {
      params.insert(params.end(), {&in_b, &conv_b, &out_b});
      names.insert(names.end(), {"in_proj_b", "conv_b", "out_proj_b"});
    }
    expect_mixer_grads([&] { return std::make_unique<ShortConvMixer>(s, D, w); }, T, D, r, params, names);
  }
}

struct MambaCase {
  int64_t Di, N, R, K, chunk, T;
  double norm_eps;
  bool norm_weights, bias;
};

class MambaBackward : public ::testing::TestWithParam<MambaCase> {};

TEST_P(MambaBackward, MatchesFiniteDifferences) {
  const MambaCase c = GetParam();
  const int64_t D = 6, P = c.R + 2 * c.N, T = c.T;
  Rng r(11);
  auto in = randn(2 * c.Di * D, r, 0.4), in_b = randn(2 * c.Di, r, 0.3), conv = randn(c.Di * c.K, r, 0.5),
       conv_b = randn(c.Di, r, 0.3), xp = randn(P * c.Di, r, 0.4), dtp = randn(c.Di * c.R, r, 0.5),
       dtp_b = randn(c.Di, r, 0.5, -1.0), A_log = randn(c.Di * c.N, r, 0.5, 0.3), Dsk = randn(c.Di, r, 0.5),
       out = randn(D * c.Di, r, 0.4), out_b = randn(D, r, 0.3), bn = randn(c.N, r, 0.2, 1.0),
       cn = randn(c.N, r, 0.2, 1.0), dn = randn(c.R, r, 0.2, 1.0);
  MambaSpec s;
  s.d_inner = c.Di, s.d_state = c.N, s.d_conv = c.K, s.dt_rank = c.R, s.chunk = c.chunk;
  s.bcdt_norm_eps = c.norm_eps, s.bcdt_norm_weights = c.norm_weights, s.proj_bias = c.bias;
  MambaWeights w;
  w.in_proj = in.data(), w.conv_w = conv.data(), w.conv_b = conv_b.data(), w.x_proj = xp.data();
  w.dt_proj = dtp.data(), w.dt_proj_b = dtp_b.data(), w.A_log = A_log.data(), w.D = Dsk.data();
  w.out_proj = out.data();
  std::vector<std::vector<float>*> params = {&in, &conv, &conv_b, &xp, &dtp, &dtp_b, &A_log, &Dsk, &out};
  std::vector<std::string> names = {"in_proj",   "conv",  "conv_b", "x_proj",  "dt_proj",
                                    "dt_proj_b", "A_log", "D",      "out_proj"};
  if (c.bias) {
    w.in_proj_b = in_b.data(), w.out_proj_b = out_b.data();
    params.insert(params.end(), {&in_b, &out_b});
    names.insert(names.end(), {"in_proj_b", "out_proj_b"});
  }
  if (c.norm_weights) {
    w.b_norm = bn.data(), w.c_norm = cn.data(), w.dt_norm = dn.data();
    params.insert(params.end(), {&bn, &cn, &dn});
    names.insert(names.end(), {"b_norm", "c_norm", "dt_norm"});
  }
  expect_mixer_grads([&] { return std::make_unique<MambaMixer>(s, D, w); }, T, D, r, params, names, 24);
}

INSTANTIATE_TEST_SUITE_P(Layouts, MambaBackward,
                         ::testing::Values(MambaCase{4, 3, 2, 4, 256, 5, 0, false, false},  // one chunk
                                           MambaCase{6, 4, 2, 3, 4, 11, 0, false, true},    // chunks, biases
                                           MambaCase{4, 3, 2, 4, 3, 7, 1e-5, false,
                                                     false},  // FalconMamba norms
                                           MambaCase{4, 3, 3, 2, 4, 9, 1e-5, true, false}));  // Jamba norms

struct Mamba2Case {
  int64_t H, P, N, G, chunk, T, group_size;
  Mamba2Norm norm;
  bool bias, multipliers, clamp;
  double fd_step;  // smaller where the gated norm over few channels is strongly curved
};

class Mamba2Backward : public ::testing::TestWithParam<Mamba2Case> {};

TEST_P(Mamba2Backward, MatchesFiniteDifferences) {
  const Mamba2Case c = GetParam();
  const int64_t D = 6, Di = c.H * c.P, CD = Di + 2 * c.G * c.N, E = Di + CD + c.H, T = c.T, K = 3;
  Rng r(12);
  auto in = randn(E * D, r, 0.4), in_b = randn(E, r, 0.3), conv = randn(CD * K, r, 0.5),
       conv_b = randn(CD, r, 0.3), dt_bias = randn(c.H, r, 0.5, -1.0), A_log = randn(c.H, r, 0.5, 0.3),
       Dsk = randn(c.H, r, 0.5), norm = randn(Di, r, 0.2, 1.0), out = randn(D * Di, r, 0.4),
       out_b = randn(D, r, 0.3);
  Mamba2Spec s;
  s.n_heads = c.H, s.head_dim = c.P, s.d_state = c.N, s.n_groups = c.G, s.d_conv = K, s.chunk = c.chunk;
  s.norm = c.norm, s.norm_group_size = c.group_size, s.proj_bias = c.bias;
  if (c.multipliers) s.proj_multipliers = {0.5, 1.5, 0.8, 1.2, 0.7};
  // Clamped dt has no gradient; every token clamps, as finite differences across the kink
  // of a partly clamped dt would not be meaningful.
  if (c.clamp) s.dt_min = 2.0, s.dt_max = 0.0;
  Mamba2Weights w;
  w.in_proj = in.data(), w.conv_w = conv.data(), w.conv_b = conv_b.data(), w.dt_bias = dt_bias.data();
  w.A_log = A_log.data(), w.D = Dsk.data(), w.out_proj = out.data();
  std::vector<std::vector<float>*> params = {&in, &conv, &conv_b, &dt_bias, &A_log, &Dsk, &out};
  std::vector<std::string> names = {"in_proj", "conv", "conv_b", "dt_bias", "A_log", "D", "out_proj"};
  if (c.norm != Mamba2Norm::GateOnly) w.norm = norm.data(), params.push_back(&norm), names.push_back("norm");
  if (c.bias) {
    w.in_proj_b = in_b.data(), w.out_proj_b = out_b.data();
    params.insert(params.end(), {&in_b, &out_b});
    names.insert(names.end(), {"in_proj_b", "out_proj_b"});
  }
  expect_mixer_grads([&] { return std::make_unique<Mamba2Mixer>(s, D, w); }, T, D, r, params, names, 24,
                     c.fd_step);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, Mamba2Backward,
    ::testing::Values(
        Mamba2Case{2, 3, 4, 1, 64, 6, 0, Mamba2Norm::GateThenNorm, false, false, false, 3e-3},
        Mamba2Case{4, 2, 3, 2, 4, 11, 4, Mamba2Norm::GateThenNorm, true, false, false, 3e-3},  // groups
        Mamba2Case{2, 3, 4, 1, 3, 8, 0, Mamba2Norm::NormThenGate, false, true, false, 3e-3},   // Falcon-H1
        Mamba2Case{3, 2, 2, 1, 5, 9, 0, Mamba2Norm::GateOnly, true, false, true, 1e-2}));

struct GlaCase {
  int64_t H, dk, dv, chunk, T;
  GlaGate gate;
};

class GlaBackward : public ::testing::TestWithParam<GlaCase> {};

TEST_P(GlaBackward, MatchesFiniteDifferences) {
  const GlaCase c = GetParam();
  const int64_t D = 6, KD = c.H * c.dk, VD = c.H * c.dv, T = c.T, R = 3;
  Rng r(13);
  auto wq = randn(KD * D, r, 0.4), wk = randn(KD * D, r, 0.4), wv = randn(VD * D, r, 0.4),
       wg = randn(VD * D, r, 0.4), norm = randn(c.dv, r, 0.2, 1.0), wo = randn(D * VD, r, 0.4);
  const bool per_channel = c.gate == GlaGate::PerChannel;
  auto ga = randn(R * D, r, 0.4), gb = randn((per_channel ? KD * R : c.H * D), r, 0.4),
       gbias = randn(per_channel ? KD : c.H, r, 0.5, 2.0);
  GlaSpec s;
  s.n_heads = c.H, s.head_k_dim = c.dk, s.head_v_dim = c.dv, s.gate = c.gate, s.gate_rank = R;
  s.gate_normalizer = 4.0, s.chunk = c.chunk;
  GlaWeights w;
  w.q = wq.data(), w.k = wk.data(), w.v = wv.data(), w.g = wg.data(), w.norm = norm.data(), w.o = wo.data();
  std::vector<std::vector<float>*> params = {&wq, &wk, &wv, &wg, &norm, &wo};
  std::vector<std::string> names = {"q", "k", "v", "g", "norm", "o"};
  if (c.gate != GlaGate::Fixed) {
    w.gate_b = gb.data(), w.gate_bias = gbias.data();
    params.insert(params.end(), {&gb, &gbias});
    names.insert(names.end(), {"gate_b", "gate_bias"});
  }
  if (per_channel) w.gate_a = ga.data(), params.push_back(&ga), names.push_back("gate_a");
  expect_mixer_grads([&] { return std::make_unique<GlaMixer>(s, D, w); }, T, D, r, params, names, 24);
}

INSTANTIATE_TEST_SUITE_P(Gates, GlaBackward,
                         ::testing::Values(GlaCase{2, 4, 6, 4, 11, GlaGate::PerChannel},  // across chunks
                                           GlaCase{3, 3, 4, 3, 10, GlaGate::PerHead},     // across chunks
                                           GlaCase{2, 4, 4, 3, 8, GlaGate::Fixed}));

TEST(RgLruBackward, MatchesFiniteDifferences) {
  const int64_t D = 6, W = 8, H = 2, bw = W / H, K = 3, T = 9;
  Rng r(17);
  auto lx = randn(W * D, r, 0.4), lxb = randn(W, r, 0.3), ly = randn(W * D, r, 0.4), lyb = randn(W, r, 0.3),
       lo = randn(D * W, r, 0.4), lob = randn(D, r, 0.3), cw = randn(W * K, r, 0.5), cb = randn(W, r, 0.3),
       ig = randn(H * bw * bw, r, 0.5), igb = randn(W, r, 0.3), ag = randn(H * bw * bw, r, 0.5),
       agb = randn(W, r, 0.3), lam = randn(W, r, 0.5, -1.0);
  RgLruSpec s;
  s.width = W, s.n_heads = H, s.d_conv = K;
  const RgLruWeights w{lx.data(), lxb.data(), ly.data(),  lyb.data(), lo.data(),  lob.data(), cw.data(),
                       cb.data(), ig.data(),  igb.data(), ag.data(),  agb.data(), lam.data()};
  expect_mixer_grads([&] { return std::make_unique<RgLruMixer>(s, D, w); }, T, D, r,
                     {&lx, &lxb, &ly, &lyb, &lo, &lob, &cw, &cb, &ig, &igb, &ag, &agb, &lam},
                     {"linear_x", "linear_x_b", "linear_y", "linear_y_b", "linear_out", "linear_out_b",
                      "conv_w", "conv_b", "input_gate", "input_gate_b", "a_gate", "a_gate_b", "a_param"},
                     24, 3e-3);
}

TEST(LightningBackward, MatchesFiniteDifferences) {
  const int64_t D = 6, H = 2, hd = 4, T = 10;
  Rng r(18);
  auto qkv = randn(3 * H * hd * D, r, 0.4), gate = randn(H * hd * D, r, 0.4),
       norm = randn(H * hd, r, 0.2, 1.0), out = randn(D * H * hd, r, 0.4);
  LightningSpec s;
  s.n_heads = H, s.head_dim = hd, s.slope_factor = 0.7, s.chunk = 4;
  const LightningWeights w{qkv.data(), gate.data(), norm.data(), out.data()};
  expect_mixer_grads([&] { return std::make_unique<LightningMixer>(s, D, w); }, T, D, r,
                     {&qkv, &gate, &norm, &out}, {"qkv_proj", "output_gate", "norm", "out_proj"}, 24, 3e-3);
}

// Two branches side by side with input and output scales (Falcon-H1's layout).
TEST(ParallelBackward, MatchesFiniteDifferences) {
  const int64_t D = 6, T = 9;
  Rng r(19);
  auto in = randn(3 * D * D, r, 0.4), conv = randn(D * 3, r, 0.5), sout = randn(D * D, r, 0.4);
  auto qkv = randn(3 * 2 * 4 * D, r, 0.4), gate = randn(8 * D, r, 0.4), norm = randn(8, r, 0.2, 1.0),
       lout = randn(D * 8, r, 0.4);
  ShortConvSpec cs;
  cs.kernel = 3;
  LightningSpec ls;
  ls.n_heads = 2, ls.head_dim = 4, ls.chunk = 4;
  auto make = [&] {
    std::vector<ParallelMixer::Branch> b(2);
    b[0].mixer = std::make_unique<ShortConvMixer>(
        cs, D, ShortConvWeights{in.data(), nullptr, conv.data(), nullptr, sout.data(), nullptr});
    b[0].in_scale = 0.7f, b[0].out_scale = 1.3f;
    b[1].mixer = std::make_unique<LightningMixer>(
        ls, D, LightningWeights{qkv.data(), gate.data(), norm.data(), lout.data()});
    b[1].in_scale = 1.2f, b[1].out_scale = 0.6f;
    return std::make_unique<ParallelMixer>(std::move(b), D);
  };
  expect_mixer_grads(make, T, D, r, {&in, &conv, &sout, &qkv, &gate, &norm, &lout},
                     {"in_proj", "conv", "conv_out", "qkv_proj", "output_gate", "norm", "out_proj"}, 24,
                     3e-3);
}

struct MlstmCase {
  int64_t H, dk, dv, chunk, T;
  double gate_scale, igate_bias, cap, eps;
};

class MlstmBackward : public ::testing::TestWithParam<MlstmCase> {};

// Large input gates move the stabiliser m between its terms (chunk-start carry, an earlier
// token's gate) and make exp(-m) the denominator for some tokens; a large eps makes the
// gradient through m, which otherwise cancels, visible.
TEST_P(MlstmBackward, MatchesFiniteDifferences) {
  const MlstmCase c = GetParam();
  const int64_t D = 6, QK = c.H * c.dk, V = c.H * c.dv, T = c.T;
  Rng r(16);
  auto wq = randn(QK * D, r, 0.5), wk = randn(QK * D, r, 0.5), wv = randn(V * D, r, 0.5),
       wo = randn(V * D, r, 0.5), wi = randn(c.H * D, r, c.gate_scale),
       bi = randn(c.H, r, c.gate_scale, c.igate_bias), wf = randn(c.H * D, r, c.gate_scale),
       bf = randn(c.H, r, 0.5, 1.5), norm = randn(V, r, 0.2, 1.0), out = randn(D * V, r, 0.4);
  MlstmSpec s;
  s.n_heads = c.H, s.qk_dim = QK, s.v_dim = V, s.gate_soft_cap = c.cap, s.eps = c.eps, s.chunk = c.chunk;
  s.norm_eps = 1.0;  // a LayerNorm over few channels would amplify f32 noise in the differences
  const MlstmWeights w{wq.data(), wk.data(), wv.data(), wo.data(),   wi.data(),
                       bi.data(), wf.data(), bf.data(), norm.data(), out.data()};
  expect_mixer_grads([&] { return std::make_unique<MlstmMixer>(s, D, w); }, T, D, r,
                     {&wq, &wk, &wv, &wo, &wi, &bi, &wf, &bf, &norm, &out},
                     {"q", "k", "v", "o", "igate", "igate_b", "fgate", "fgate_b", "norm", "out_proj"}, 24,
                     3e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, MlstmBackward,
    ::testing::Values(MlstmCase{2, 4, 8, 4, 11, 0.5, -2, 0, 1e-6},   // chunks, uneven tail
                      MlstmCase{1, 4, 8, 64, 7, 0.5, -4, 15, 1e-6},  // one chunk, capped
                      MlstmCase{2, 4, 8, 3, 10, 2.5, 1, 4, 0.05}));  // large gates and eps

struct TitansCase {
  int64_t H, d, depth, hidden, chunk, window, T;
  double clip = 0;  // max_grad_norm
};

class TitansBackward : public ::testing::TestWithParam<TitansCase> {};

// Through the test-time gradient (a Hessian-vector product with respect to the chunk-start
// memory), momentum and forgetting, chunk boundaries and windows that reach into the
// previous chunk.
TEST_P(TitansBackward, MatchesFiniteDifferences) {
  const TitansCase c = GetParam();
  const int64_t D = 8, HD = c.H * c.d, T = c.T;
  TitansSpec s;
  s.n_heads = c.H, s.head_dim = c.d, s.depth = c.depth, s.hidden = c.hidden, s.chunk = c.chunk,
  s.window = c.window, s.max_lr = 0.5, s.max_grad_norm = c.clip;
  s.norm_eps = 1.0;  // an RMSNorm over few channels would amplify f32 noise in the differences
  const int64_t P = c.depth == 1 ? c.d * c.d : 2 * c.hidden * c.d;
  Rng r(17);
  auto wq = randn(HD * D, r, 0.4), wk = randn(HD * D, r, 0.4), wv = randn(HD * D, r, 0.4),
       wg = randn(3 * c.H * D, r, 0.4), bg = randn(3 * c.H, r, 0.5), mem = randn(c.H * P, r, 0.4),
       norm = randn(c.d, r, 0.2, 1.0), out = randn(D * HD, r, 0.4);
  const TitansWeights w{wq.data(), wk.data(),  wv.data(),   wg.data(),
                        bg.data(), mem.data(), norm.data(), out.data()};
  expect_mixer_grads([&] { return std::make_unique<TitansMixer>(s, D, w); }, T, D, r,
                     {&wq, &wk, &wv, &wg, &bg, &mem, &norm, &out},
                     {"q", "k", "v", "gates", "gates_b", "memory", "norm", "out_proj"}, 24, 3e-3);
}

INSTANTIATE_TEST_SUITE_P(Layouts, TitansBackward,
                         ::testing::Values(TitansCase{2, 4, 1, 0, 4, 1, 11},  // linear memory, uneven tail
                                           TitansCase{1, 4, 2, 6, 3, 1, 10},  // MLP memory
                                           TitansCase{2, 3, 2, 5, 4, 3, 9},   // sliding window
                                           TitansCase{2, 3, 2, 5, 4, 2, 9, 0.8}));  // clipped gradients

// Keys spread over several units so the WKV's running log scales change hands often;
// decays from slow to fast; out_scale as under Hugging Face's inference rescaling.
TEST(Rwkv4Backward, TimeMixMatchesFiniteDifferences) {
  const int64_t D = 6, A = 5, T = 13;
  Rng r(14);
  auto td = randn(A, r, 1.0, -0.5), tf = randn(A, r, 0.5), mk = randn(D, r, 0.2, 0.5),
       mv = randn(D, r, 0.2, 0.5), mr = randn(D, r, 0.2, 0.5), wk = randn(A * D, r, 1.2),
       wv = randn(A * D, r, 0.4), wr = randn(A * D, r, 0.4), wo = randn(D * A, r, 0.4);
  Rwkv4Spec s;
  s.attn_dim = A, s.out_scale = 0.5;
  const Rwkv4Weights w{td.data(), tf.data(), mk.data(), mv.data(), mr.data(),
                       wk.data(), wv.data(), wr.data(), wo.data()};
  expect_mixer_grads(
      [&] { return std::make_unique<Rwkv4TimeMix>(s, D, w); }, T, D, r,
      {&td, &tf, &mk, &mv, &mr, &wk, &wv, &wr, &wo},
      {"time_decay", "time_first", "mix_k", "mix_v", "mix_r", "key", "value", "receptance", "output"}, 24);
}

TEST(Rwkv4Backward, ChannelMixMatchesFiniteDifferences) {
  const int64_t D = 6, F = 8, T = 7;
  Rng r(15);
  auto mk = randn(D, r, 0.2, 0.5), mr = randn(D, r, 0.2, 0.5), wk = randn(F * D, r, 0.5),
       wr = randn(D * D, r, 0.4), wv = randn(D * F, r, 0.4);
  RwkvChannelMixSpec s;
  s.hidden = F, s.out_scale = 0.25;
  const RwkvChannelMixWeights w{mk.data(), mr.data(), wk.data(), wr.data(), wv.data()};
  expect_mixer_grads([&] { return std::make_unique<RwkvChannelMix>(s, D, w); }, T, D, r,
                     {&mk, &mr, &wk, &wr, &wv}, {"mix_k", "mix_r", "key", "receptance", "value"});
}

TEST(FfnBackward, GatedAndPlainWithMultipliers) {
  Rng r(6);
  const int64_t D = 10, T = 7, F = 14;
  for (int variant = 0; variant < 3; ++variant) {
    MlpSpec s;
    s.hidden = F;
    s.gated = variant != 1;
    s.bias = variant == 1;
    s.act = variant == 0 ? Activation::SiLU : variant == 1 ? Activation::GeluTanh : Activation::Relu2;
    if (variant == 2) s.gate_multiplier = 0.7, s.down_multiplier = 1.3;
    auto up = randn(F * D, r, 0.4), gate = randn(F * D, r, 0.4), down = randn(D * F, r, 0.4);
    auto ub = randn(F, r, 0.3), db = randn(D, r, 0.3);
    FfnWeights w{s.gated ? gate.data() : nullptr, nullptr,     up.data(),
                 s.bias ? ub.data() : nullptr,    down.data(), s.bias ? db.data() : nullptr};
    TestGrads g;
    for (auto* p : {&up, &gate, &down, &ub, &db}) g.add(*p);
    auto x = randn(T * D, r, 1), R = randn(T * D, r, 1);
    std::vector<float> dx(T * D);
    ffn_backward(s, x.data(), T, D, w, R.data(), dx.data(), false, g);
    auto loss = [&] {
      Workspace ws;
      std::vector<float> y(T * D);
      ffn_forward(s, x.data(), T, D, w, y.data(), ws);
      return weighted_sum(y, R);
    };
    std::vector<GradBuffer> bufs = {{"x", &x, &dx}, {"up", &up, &g.at(up)}, {"down", &down, &g.at(down)}};
    if (s.gated) bufs.push_back({"gate", &gate, &g.at(gate)});
    if (s.bias) bufs.insert(bufs.end(), {{"up_b", &ub, &g.at(ub)}, {"down_b", &db, &g.at(db)}});
    SCOPED_TRACE("variant " + std::to_string(variant));
    expect_grads_match(loss, bufs);
  }
}

TEST(MoeBackward, RouterExpertsAndSharedExpert) {
  Rng r(7);
  const int64_t D = 8, T = 9, E = 4, F = 6;
  for (int variant = 0; variant < 2; ++variant) {
    MoeSpec s;
    s.n_experts = E, s.top_k = 2, s.hidden = F;
    s.renormalize = variant == 0;
    s.sigmoid_scores = variant == 1;
    s.shared_hidden = 5;
    s.shared_gate = variant == 0;
    std::vector<std::vector<float>> ew;
    auto router = randn(E * D, r, 0.5);
    for (int64_t e = 0; e < E; ++e)
      for (int m = 0; m < 3; ++m) ew.push_back(randn(F * D, r, 0.4));
    auto sg = randn(5 * D, r, 0.4), su = randn(5 * D, r, 0.4), sd = randn(D * 5, r, 0.4),
         gate = randn(D, r, 0.4);
    MoeWeights w;
    w.router = router.data();
    for (int64_t e = 0; e < E; ++e)
      w.experts.push_back({ew[size_t(3 * e)].data(), nullptr, ew[size_t(3 * e + 1)].data(), nullptr,
                           ew[size_t(3 * e + 2)].data(), nullptr});
    w.shared = {sg.data(), nullptr, su.data(), nullptr, sd.data(), nullptr};
    if (s.shared_gate) w.shared_gate = gate.data();
    TestGrads g;
    g.add(router);
    for (auto& v : ew) g.add(v);
    for (auto* p : {&sg, &su, &sd, &gate}) g.add(*p);
    auto x = randn(T * D, r, 1), R = randn(T * D, r, 1);
    std::vector<float> dx(T * D);
    moe_backward(s, w, x.data(), T, D, R.data(), dx.data(), g);
    auto loss = [&] {
      Workspace ws;
      std::vector<float> y(T * D);
      moe_forward(s, w, x.data(), T, D, y.data(), ws);
      return weighted_sum(y, R);
    };
    std::vector<GradBuffer> bufs = {{"x", &x, &dx}, {"router", &router, &g.at(router)}};
    for (size_t i = 0; i < ew.size(); ++i)
      bufs.push_back({"expert" + std::to_string(i), &ew[i], &g.at(ew[i])});
    bufs.insert(bufs.end(), {{"shared_gate_proj", &sg, &g.at(sg)},
                             {"shared_up", &su, &g.at(su)},
                             {"shared_down", &sd, &g.at(sd)}});
    if (s.shared_gate) bufs.push_back({"shared_gate", &gate, &g.at(gate)});
    SCOPED_TRACE("variant " + std::to_string(variant));
    // Small steps: the top-k choice is piecewise constant and must not flip.
    expect_grads_match(loss, bufs, 16, 1e-3);
  }
}

}  // namespace
