// Persistent memory tokens (Titans): N learned vectors every sequence starts with, and
// attention sinks that keep them visible to a sliding window. A model with persistent
// tokens equals the same model without them fed N tokens whose embeddings are those
// vectors first; prefill equals decode across the window's cache compaction; training
// reaches the vectors (finite differences); the spec fields round-trip and bad values are
// named.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "model/init.hpp"
#include "model/model.hpp"
#include "model/spec_json.hpp"
#include "model_grad_check.hpp"
#include "runtime/session.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

constexpr int64_t kVocab = 29, kPersistent = 3;

// Sliding-window attention (window 4, the persistent positions as sinks) and a Titans
// memory as a gate, then a Gated DeltaNet layer; `persistent` tokens.
json spec_json(int64_t persistent) {
  json j = json::parse(R"({
    "name": "persistent", "vocab_size": 29, "d_model": 16, "tie_embeddings": false,
    "mixers": {
      "swa": {"type": "attention", "n_heads": 2, "head_dim": 8, "sliding_window": 4, "sink_tokens": 3},
      "mem": {"type": "titans", "n_heads": 2, "head_dim": 4, "depth": 2, "hidden": 6, "chunk": 3},
      "mag": {"type": "parallel", "combine": "gate", "mixers": ["swa", "mem"]},
      "gdn": {"type": "gated_deltanet", "n_k_heads": 2, "head_k_dim": 4, "chunk": 4}
    },
    "mlp": {"hidden": 24},
    "layers": ["mag", "gdn"]
  })");
  j["persistent_tokens"] = persistent;
  return j;
}

// Tokens from [3, V): tokens 0..2 stand for the persistent vectors in the model without them.
std::vector<int32_t> tokens(int64_t T, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& v : t) v = int32_t(3 + r.next() % uint64_t(kVocab - 3));
  return t;
}

// The model with persistent tokens, and the same weights without them where the persistent
// vectors are the embeddings of tokens 0, 1, 2 (the copy of the model feeds those first).
struct Pair {
  std::shared_ptr<Model> with, without;
};
Pair make_pair_of_models() {
  const ModelSpec sp = spec_from_json(spec_json(kPersistent), "p.json");
  const ModelSpec s0 = spec_from_json(spec_json(0), "p0.json");
  Weights w = owned_copy(init_weights(sp, 11, 0.3));
  Weights w0 = owned_copy(init_weights(s0, 11, 0.3));
  for (auto& [name, t] : w0) std::copy_n(w.at(name).f32(), t.numel(), t.f32_mut());
  std::copy_n(w.at("persistent.weight").f32(), kPersistent * sp.d_model, w0.at("embed.weight").f32_mut());
  return {std::make_shared<Model>(sp, std::move(w), "with"),
          std::make_shared<Model>(s0, std::move(w0), "without")};
}

}  // namespace

TEST(PersistentTokens, EqualFeedingTheirEmbeddingsFirst) {
  const Pair m = make_pair_of_models();
  const int64_t T = 23;  // several window compactions past the sinks
  const auto ids = tokens(T, 4);
  std::vector<int32_t> prefixed = {0, 1, 2};
  prefixed.insert(prefixed.end(), ids.begin(), ids.end());
  Session a(m.with), b(m.without);
  const std::vector<float> la = a.feed_all(ids.data(), T), lb = b.feed_all(prefixed.data(), T + kPersistent);
  double err = 0, scale = 0;
  for (int64_t i = 0; i < T * kVocab; ++i) {
    err = std::max(err, double(std::abs(la[size_t(i)] - lb[size_t(kPersistent * kVocab + i)])));
    scale = std::max(scale, double(std::abs(la[size_t(i)])));
  }
  EXPECT_LE(err, 1e-5 * scale) << "logits up to " << scale;
  EXPECT_EQ(a.position(), T);
}

TEST(PersistentTokens, PrefillEqualsDecode) {
  const Pair m = make_pair_of_models();
  const int64_t T = 31;
  const auto ids = tokens(T, 6);
  Session full(m.with), step(m.with);
  const std::vector<float> all = full.feed_all(ids.data(), T);
  double err = 0, scale = 0;
  for (int64_t t = 0; t < T; ++t) {
    step.feed(ids.data() + t, 1);
    for (int64_t v = 0; v < kVocab; ++v) {
      err = std::max(err, double(std::abs(all[size_t(t * kVocab + v)] - step.last_logits()[size_t(v)])));
      scale = std::max(scale, double(std::abs(all[size_t(t * kVocab + v)])));
    }
  }
  EXPECT_LE(err, 1e-5 * scale) << "logits up to " << scale;
}

TEST(PersistentTokens, GradientsReachThemAndMatchFiniteDifferences) {
  const ModelSpec s = spec_from_json(spec_json(kPersistent), "p.json");
  Model model(s, owned_copy(init_weights(s, 7, 0.2)), "init");
  const auto tok = tokens(10, 8), tgt = tokens(10, 9);
  Gradients g(model);
  model.loss_and_grad(tok.data(), tgt.data(), 10, 1.0f, g);
  const auto& gp = g.by_name().at("persistent.weight");
  EXPECT_GT(std::abs(*std::max_element(gp.begin(), gp.end(),
                                       [](float a, float b) { return std::abs(a) < std::abs(b); })),
            0.0f);
  // The memory's weights enter through test-time gradients: the smaller step as in the
  // memory-gate test.
  expect_model_grads_match(model, tok, tgt, 0, 6, 3e-3);
}

TEST(PersistentTokens, SpecRoundTripsAndNamesBadValues) {
  const ModelSpec s = spec_from_json(spec_json(kPersistent), "p.json");
  EXPECT_EQ(s.persistent_tokens, kPersistent);
  EXPECT_EQ(s.blocks[0].attn.sink_tokens, 3);
  const ModelSpec r = spec_from_json(spec_to_json(s), "round-trip");
  EXPECT_EQ(r.persistent_tokens, kPersistent);
  EXPECT_EQ(r.blocks[0].attn.sink_tokens, 3);
  EXPECT_NE(error_of([] { spec_from_json(spec_json(-1), "p.json"); }).find("persistent_tokens must be >= 0"),
            std::string::npos);
  json no_window = spec_json(kPersistent);
  no_window["mixers"]["swa"].erase("sliding_window");
  EXPECT_NE(error_of([&] { spec_from_json(no_window, "p.json"); }).find("sink_tokens needs a sliding_window"),
            std::string::npos);
  json negative = spec_json(kPersistent);
  negative["mixers"]["swa"]["sink_tokens"] = -2;
  EXPECT_NE(error_of([&] { spec_from_json(negative, "p.json"); }).find("sink_tokens must be >= 0"),
            std::string::npos);
}
