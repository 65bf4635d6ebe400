// Decode memory per sequence: recurrent layers hold a fixed state however long the
// context grows (10k tokens decoded, state bytes unchanged), attention layers grow by
// exactly their per-token KV bytes, and inspect-style per-layer numbers add up.
#include <gtest/gtest.h>

#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/session.hpp"

using namespace braid;

namespace {

std::shared_ptr<const Model> tiny(const json& layers) {
  json j = {{"vocab_size", 64}, {"d_model", 32}, {"layers", layers}, {"mlp", {{"hidden", 48}}}};
  ModelSpec s = spec_from_json(j, "test spec");
  return std::make_shared<Model>(s, init_weights(s, 7), "test");
}

}  // namespace

TEST(StateMemory, RecurrentStateDoesNotGrowOver10kDecodedTokens) {
  const json recurrent = json::array(
      {{{"mixer", {{"type", "mamba2"}, {"n_heads", 4}, {"head_dim", 16}, {"d_state", 16}, {"chunk", 32}}}},
       {{"mixer", {{"type", "gated_deltanet"}, {"n_k_heads", 2}, {"n_v_heads", 4}, {"head_k_dim", 8}}}},
       {{"mixer", {{"type", "mamba"}, {"d_inner", 64}, {"d_state", 8}, {"dt_rank", 4}}}},
       {{"mixer", {{"type", "short_conv"}, {"kernel", 3}}}}});
  auto model = tiny(recurrent);
  EXPECT_EQ(model->state_bytes_per_token(), 0u);
  Session s(model);
  int32_t tok = 1;
  s.feed(&tok, 1);
  const size_t first = s.state_bytes();
  EXPECT_EQ(first, model->fixed_state_bytes());
  for (int i = 0; i < 10000; ++i) {
    tok = int32_t((i * 13 + 5) % 64);
    s.feed(&tok, 1);
  }
  EXPECT_EQ(s.position(), 10001);
  EXPECT_EQ(s.state_bytes(), first);
}

TEST(StateMemory, AttentionGrowsByItsKvBytesPerToken) {
  const json hybrid =
      json::array({{{"mixer", {{"type", "gated_deltanet"}, {"n_k_heads", 2}, {"head_k_dim", 8}}}},
                   {{"mixer", {{"type", "attention"}, {"n_heads", 4}, {"n_kv_heads", 2}, {"head_dim", 8}}}}});
  auto model = tiny(hybrid);
  EXPECT_EQ(model->state_bytes_per_token(), size_t(2 * 2 * 8) * sizeof(float));
  Session s(model);
  std::vector<int32_t> ids(300, 3);
  s.feed(ids.data(), 300);
  EXPECT_EQ(s.state_bytes(), model->fixed_state_bytes() + 300 * model->state_bytes_per_token());
}

TEST(StateMemory, SlidingWindowCacheStaysBoundedOver10kTokens) {
  const json local =
      json::array({{{"mixer",
                     {{"type", "attention"},
                      {"n_heads", 4},
                      {"n_kv_heads", 1},
                      {"head_dim", 8},
                      {"sliding_window", 16}}}},
                   {{"mixer", {{"type", "gated_deltanet"}, {"n_k_heads", 2}, {"head_k_dim", 8}}}}});
  auto model = tiny(local);
  EXPECT_EQ(model->state_bytes_per_token(), 0u);
  Session s(model);
  size_t most = 0;
  for (int i = 0; i < 10000; ++i) {
    int32_t tok = int32_t((i * 7 + 3) % 64);
    s.feed(&tok, 1);
    most = std::max(most, s.state_bytes());
  }
  EXPECT_LE(most, model->fixed_state_bytes());
}
