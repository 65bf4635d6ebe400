// Batched decoding is invisible to each sequence: a batch of sessions at different
// positions decoded together gives every session, bit for bit, the logits and the states it
// gets decoding alone (ops::DecodeRows), on real hybrid checkpoints and the bundled model.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "fixtures.hpp"
#include "import/load.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "ops/cpu/gemm.hpp"
#include "runtime/session.hpp"

namespace braid {
namespace {

TEST(BatchedDecode, DecodeRowsLinearEqualsOneRowAtATime) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (const auto& [T, in, out] :
       {std::tuple{5, 33, 70}, std::tuple{16, 256, 300}, std::tuple{3, 512, 200}}) {
    std::vector<float> x(static_cast<size_t>(T * in)), W(static_cast<size_t>(out * in));
    std::vector<float> bias(static_cast<size_t>(out)), y(static_cast<size_t>(T * out)),
        one(static_cast<size_t>(out));
    for (auto* v : {&x, &W, &bias})
      for (auto& e : *v) e = nd(rng);
    for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
      {
        ops::DecodeRows rows;
        ops::linear(x.data(), T, in, W.data(), out, b, y.data());
      }
      for (int t = 0; t < T; ++t) {
        ops::linear(x.data() + t * in, 1, in, W.data(), out, b, one.data());
        ASSERT_EQ(std::memcmp(one.data(), y.data() + t * out, size_t(out) * sizeof(float)), 0)
            << "row " << t << " of " << T << "x" << in << "x" << out;
      }
    }
  }
  EXPECT_FALSE(ops::DecodeRows::active());
}

// Prefills sessions with prompts of different lengths, then decodes each alone and a copy
// of each in one batch, step by step, comparing logits and positions exactly.
void check_batch_equals_alone(const std::shared_ptr<const Model>& model) {
  std::mt19937 rng(9);
  const int32_t V = int32_t(std::min<int64_t>(model->spec().vocab_size, 200));
  const int B = 4;
  std::vector<std::unique_ptr<Session>> alone, batched;
  for (int q = 0; q < B; ++q) {
    std::vector<int32_t> prompt(size_t(3 + 5 * q));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(V));
    alone.push_back(std::make_unique<Session>(model));
    alone.back()->feed(prompt);
    batched.push_back(std::make_unique<Session>(model));
    batched.back()->restore(alone.back()->snapshot());
  }
  Workspace ws;
  std::vector<float> scratch;
  for (int step = 0; step < 6; ++step) {
    std::vector<int32_t> next(B);
    std::vector<Session*> group;
    for (int q = 0; q < B; ++q) {
      next[size_t(q)] = int32_t(rng() % uint32_t(V));
      alone[size_t(q)]->feed(&next[size_t(q)], 1);
      group.push_back(batched[size_t(q)].get());
    }
    Session::feed_batch(group, next.data(), ws, scratch);
    for (int q = 0; q < B; ++q) {
      const auto &a = alone[size_t(q)]->last_logits(), &b = batched[size_t(q)]->last_logits();
      ASSERT_EQ(a.size(), b.size());
      ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
          << "sequence " << q << " step " << step;
      ASSERT_EQ(alone[size_t(q)]->position(), batched[size_t(q)]->position());
    }
  }
}

TEST(BatchedDecode, EqualsDecodingAloneOnHybridFixtures) {
  REQUIRE_FIXTURES();
  // Mamba + attention + MoE; Gated DeltaNet + gated attention + MoE; RWKV's stateful channel
  // mixing; Mamba-2 beside attention in one layer, alone, and in layers of its own; Mamba-1
  // alone (falcon_mamba: with the B, C, dt norms).
  for (const char* arch : {"jamba", "qwen3_next", "rwkv", "falcon_h1", "mamba2", "bamba", "nemotron_h",
                           "mamba", "falcon_mamba"}) {
    SCOPED_TRACE(arch);
    check_batch_equals_alone(load_model(hf_fixture(arch)));
  }
}

// Sliding-window attention with sink tokens and grouped KV heads, and full attention: the
// sequences' caches are windowed (and compacted) at different points.
TEST(BatchedDecode, EqualsDecodingAloneWithWindowsSinksAndGroupedHeads) {
  const ModelSpec s = spec_from_json(json::parse(R"({
    "name": "swa", "vocab_size": 50, "d_model": 32,
    "mixers": {
      "swa": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "sliding_window": 5,
              "sink_tokens": 2},
      "full": {"type": "attention", "n_heads": 2, "head_dim": 16}
    },
    "mlp": {"hidden": 48},
    "layers": ["swa", "full", "swa"]
  })"),
                                     "swa.json");
  check_batch_equals_alone(std::make_shared<Model>(s, init_weights(s, 4, 0.3), "init"));
}

TEST(BatchedDecode, EqualsDecodingAloneOnTheDefaultModel) {
  check_batch_equals_alone(load_model(std::string(BRAID_SOURCE_DIR) + "/models/default"));
}

}  // namespace
}  // namespace braid
