// Memory as context (Titans' MAC): attention over each memory chunk with the memory's reading
// of every token beside it and learned persistent rows before it; the memory learns from the
// attention's output and gates it. Written in the spec format as a "parallel" pair with
// "combine": "context". The forward equals a chunk-by-chunk composition of the two mixers
// with the reading computed here from the weights; prefill equals decode in any split; the
// state stays bounded; whole-model gradients match finite differences; the spec round-trips
// and bad combinations are named.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "memory_blocks.hpp"
#include "mixers/titans.hpp"
#include "model/grads.hpp"
#include "model/init.hpp"
#include "model/model.hpp"
#include "model/spec_json.hpp"
#include "model_grad_check.hpp"
#include "runtime/session.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

json context_json() {
  return json::parse(R"({
    "name": "mac", "vocab_size": 23, "d_model": 16, "tie_embeddings": false,
    "mixers": {
      "attn": {"type": "attention", "n_heads": 2, "head_dim": 8},
      "mem": {"type": "titans", "n_heads": 2, "head_dim": 4, "depth": 2, "hidden": 6, "chunk": 4},
      "mac": {"type": "parallel", "combine": "context", "mixers": ["attn", "mem"], "persistent_tokens": 2}
    },
    "mlp": {"hidden": 24},
    "layers": ["mac", "mac"]
  })");
}

const Tensor& weight(const Weights& w, const std::string& name) { return w.at(name); }

// The memory's reading of x with memory M ([heads][P], depth 2), from the definition:
// out(rmsnorm_h(W2 silu(W1 normalize(q_h(x))))) with the reading's own query projection q, in
// double.
std::vector<double> reading(const Weights& w, const std::string& pre, const float* x, const float* M) {
  const int64_t D = 16, H = 2, d = 4, m = 6, P = 2 * m * d;
  const float *Wq = weight(w, pre + "context.q_proj.weight").data<float>(),
              *g = weight(w, pre + "titans.norm.weight").data<float>(),
              *Wo = weight(w, pre + "titans.out_proj.weight").data<float>();
  std::vector<double> o(size_t(H * d)), out(size_t(D), 0.0);
  for (int64_t h = 0; h < H; ++h) {
    std::vector<double> q(size_t(d), 0.0), a(size_t(m), 0.0), r(size_t(d), 0.0);
    double nq = 0;
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t c = 0; c < D; ++c) q[size_t(i)] += double(Wq[(h * d + i) * D + c]) * x[c];
      nq += q[size_t(i)] * q[size_t(i)];
    }
    for (double& v : q) v /= std::sqrt(nq + 1e-6);
    const float *W1 = M + h * P, *W2 = W1 + m * d;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t c = 0; c < d; ++c) a[size_t(i)] += double(W1[i * d + c]) * q[size_t(c)];
      a[size_t(i)] /= 1.0 + std::exp(-a[size_t(i)]);
    }
    double ms = 0;
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t c = 0; c < m; ++c) r[size_t(i)] += double(W2[i * m + c]) * a[size_t(c)];
      ms += r[size_t(i)] * r[size_t(i)] / double(d);
    }
    for (int64_t i = 0; i < d; ++i) o[size_t(h * d + i)] = r[size_t(i)] / std::sqrt(ms + 1e-6) * g[i];
  }
  for (int64_t r = 0; r < D; ++r)
    for (int64_t c = 0; c < H * d; ++c) out[size_t(r)] += double(Wo[r * H * d + c]) * o[size_t(c)];
  return out;
}

}  // namespace

TEST(MemoryAsContext, SpecReadsRoundTripsAndNamesBadCombinations) {
  const ModelSpec s = spec_from_json(context_json(), "mac.json");
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_TRUE(s.blocks[0].has_parallel && s.blocks[0].parallel_context && !s.blocks[0].parallel_gate);
  EXPECT_EQ(s.blocks[0].context_persistent, 2);
  EXPECT_EQ(spec_to_json(spec_from_json(spec_to_json(s), "round-trip")), spec_to_json(s));
  Model model(s, init_weights(s, 1, 0.3), "init");
  EXPECT_STREQ(model.mixer(0)->kind(), "memory-as-context");

  auto refused = [](const std::function<void(json&)>& edit) {
    json j = context_json();
    edit(j);
    return error_of([&] { spec_from_json(j, "mac.json"); });
  };
  EXPECT_NE(refused([](json& j) {
              j["mixers"]["mac"]["mixers"] = {"mem", "attn"};
            }).find("in that order"),
            std::string::npos);
  EXPECT_NE(refused([](json& j) {
              j["mixers"]["mac"]["mixers"][1] = {{"type", "mamba2"}, {"n_heads", 2}, {"head_dim", 8}};
            }).find("in that order"),
            std::string::npos);
  EXPECT_NE(refused([](json& j) {
              j["mixers"]["mac"]["in_scales"] = {1.0, 0.5};
            }).find("no in / out scales"),
            std::string::npos);
  EXPECT_NE(refused([](json& j) { j["mixers"]["mac"]["persistent_tokens"] = -1; }).find("must be positive"),
            std::string::npos);
  EXPECT_NE(refused([](json& j) { j["mixers"]["mac"]["combine"] = "gate"; }).find("belongs to"),
            std::string::npos);
}

// The block's token mixer against the composition, chunk by chunk (chunk 4, 13 tokens: the
// last chunk is partial).
TEST(MemoryAsContext, OutputIsTheChunkwiseComposition) {
  const ModelSpec mac = spec_from_json(context_json(), "mac.json");
  json j = context_json();
  j["layers"] = {"attn", "mem"};
  const ModelSpec apart = spec_from_json(j, "apart.json");
  const Weights w = init_weights(mac, 3, 0.3);
  const Weights wa = split_attention_memory(w);
  Model mm(mac, w, "mac"), ma(apart, wa, "apart");
  const int64_t T = 13, D = 16, C = 4, NP = 2;
  Rng r(4);
  std::vector<float> x(size_t(T * D)), got(size_t(T * D));
  for (float& v : x) v = float(r.normal());
  Workspace ws;
  auto st = mm.mixer(0)->make_state();
  mm.mixer(0)->forward(x.data(), T, *st, got.data(), ws);

  const Mixer& attention = *ma.mixer(0);
  const auto& memory = dynamic_cast<const TitansMixer&>(*ma.mixer(1));
  auto mem_state = memory.make_state();
  auto& ms = dynamic_cast<TitansState&>(*mem_state);
  const float* persistent = w.at("blocks.0.context.persistent").data<float>();
  double err = 0, scale = 0;
  for (int64_t t0 = 0; t0 < T; t0 += C) {
    const int64_t n = std::min(C, T - t0), rows = NP + 2 * n;
    const std::vector<float> M = ms.M;  // the memory entering the chunk
    std::vector<float> z(size_t(rows * D)), a(z.size()), y(size_t(n * D)), m(y.size());
    std::copy(persistent, persistent + NP * D, z.begin());
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<double> h = reading(w, "blocks.0.", &x[size_t((t0 + i) * D)], M.data());
      for (int64_t c = 0; c < D; ++c) {
        z[size_t((NP + 2 * i) * D + c)] = float(h[size_t(c)]);
        z[size_t((NP + 2 * i + 1) * D + c)] = x[size_t((t0 + i) * D + c)];
      }
    }
    auto attn_state = attention.make_state();
    attention.forward(z.data(), rows, *attn_state, a.data(), ws);
    for (int64_t i = 0; i < n; ++i) std::copy_n(&a[size_t((NP + 2 * i + 1) * D)], D, &y[size_t(i * D)]);
    memory.forward(y.data(), n, ms, m.data(), ws);
    for (int64_t i = 0; i < n * D; ++i) {
      const double want = double(y[size_t(i)]) / (1.0 + std::exp(-double(m[size_t(i)])));
      err = std::max(err, std::abs(want - double(got[size_t(t0 * D + i)])));
      scale = std::max(scale, std::abs(want));
    }
  }
  EXPECT_GT(scale, 1e-2);
  EXPECT_LT(err, 1e-5 * scale) << "outputs up to " << scale;
}

TEST(MemoryAsContext, PrefillEqualsDecodeAndTheStateIsBounded) {
  const ModelSpec s = spec_from_json(context_json(), "mac.json");
  auto model = std::make_shared<Model>(s, init_weights(s, 5, 0.3), "init");
  const int64_t T = 19, V = 23;
  const auto ids = random_ids(T, V, 6);
  Session full(model), step(model);
  const std::vector<float> all = full.feed_all(ids.data(), T);
  step.feed(ids.data(), 3);  // splits chunks unevenly from here on
  double err = 0, scale = 0;
  size_t most = 0;
  for (int64_t t = 3; t < T; ++t) {
    step.feed(ids.data() + t, 1);
    most = std::max(most, step.state_bytes());
    for (int64_t v = 0; v < V; ++v) {
      err = std::max(err, double(std::abs(all[size_t(t * V + v)] - step.last_logits()[size_t(v)])));
      scale = std::max(scale, double(std::abs(all[size_t(t * V + v)])));
    }
  }
  EXPECT_LE(err, 1e-5 * scale) << "logits up to " << scale;
  size_t fixed = 0;
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    fixed += model->mixer(i)->fixed_state_bytes();
    EXPECT_EQ(model->mixer(i)->bytes_per_token(), 0u);
  }
  EXPECT_LE(most, fixed);
}

TEST(MemoryAsContext, GradientsMatchFiniteDifferences) {
  const ModelSpec s = spec_from_json(context_json(), "mac.json");
  Model model(s, owned_copy(init_weights(s, 7, 0.2)), "init");
  // 10 tokens: chunks of 4, 4 and 2, so gradients cross two chunk boundaries both through
  // the memory's recurrence and through its readings.
  const auto tok = random_ids(10, 23, 8), tgt = random_ids(10, 23, 9);
  expect_model_grads_match(model, tok, tgt, 0, 6, 3e-3);
}
