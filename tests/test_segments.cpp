// Segment recurrence with memory tokens (RMT-style): training's loss equals the loss of the
// logits a session computes (the write rows at every segment end, the next segment reading
// their output); prefill equals decode in any chunking; the memory is what carries context
// across segments; gradients match finite differences with full backpropagation through
// the segments, and truncation stops them where it should; the spec round-trips and bad
// values are named.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "model/init.hpp"
#include "model/model.hpp"
#include "model/spec_json.hpp"
#include "model_grad_check.hpp"
#include "ops/cpu/backward.hpp"
#include "runtime/session.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

constexpr int64_t kVocab = 23;

json spec_json(int64_t bptt = 0) {
  json j = json::parse(R"({
    "name": "rmt", "vocab_size": 23, "d_model": 16,
    "mixers": {
      "attn": {"type": "attention", "n_heads": 2, "head_dim": 8},
      "gdn": {"type": "gated_deltanet", "n_k_heads": 2, "head_k_dim": 4, "chunk": 4}
    },
    "mlp": {"hidden": 24},
    "layers": ["attn", "gdn"],
    "segments": {"length": 5, "memory_tokens": 2}
  })");
  j["segments"]["bptt"] = bptt;
  return j;
}

std::shared_ptr<Model> make_model(const json& j, uint64_t seed = 3, double std = 0.3) {
  const ModelSpec s = spec_from_json(j, "rmt.json");
  return std::make_shared<Model>(s, owned_copy(init_weights(s, seed, std)), "test");
}

std::vector<int32_t> tokens(int64_t T, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& v : t) v = int32_t(r.next() % uint64_t(kVocab));
  return t;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, size_t from = 0) {
  double e = 0;
  for (size_t i = from; i < a.size(); ++i) e = std::max(e, double(std::abs(a[i] - b[i])));
  return e;
}

}  // namespace

TEST(Segments, TrainingLossIsTheLossOfTheSessionsLogits) {
  auto m = make_model(spec_json());
  const int64_t T = 17;  // three full segments and a partial one
  const auto tok = tokens(T, 1), tgt = tokens(T, 2);
  Session s(m);
  std::vector<float> logits = s.feed_all(tok.data(), T);
  const double expect = ops::cross_entropy_fused(logits.data(), tgt.data(), T, kVocab, 1.0f);
  Gradients g(*m);
  const LossSum loss = m->loss_and_grad(tok.data(), tgt.data(), T, 1.0f, g);
  EXPECT_EQ(loss.count, T);
  EXPECT_NEAR(loss.sum, expect, 1e-5 * expect);
}

TEST(Segments, PrefillEqualsDecodeInAnyChunking) {
  auto m = make_model(spec_json());
  const int64_t T = 23;
  const auto tok = tokens(T, 4);
  Session full(m), one(m), chunks(m);
  const std::vector<float> all = full.feed_all(tok.data(), T);
  std::vector<float> step, parts;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<float> l = one.feed_all(tok.data() + t, 1);
    step.insert(step.end(), l.begin(), l.end());
  }
  int64_t at = 0;
  for (int64_t c : {3, 7, 2, 5, 6}) {
    const std::vector<float> l = chunks.feed_all(tok.data() + at, c);
    parts.insert(parts.end(), l.begin(), l.end());
    at += c;
  }
  ASSERT_EQ(step.size(), all.size());
  ASSERT_EQ(parts.size(), all.size());
  EXPECT_LE(max_abs_diff(step, all), 1e-4);
  EXPECT_LE(max_abs_diff(parts, all), 1e-4);
  EXPECT_EQ(one.position(), T);
  // A snapshot taken mid-segment resumes to the same logits.
  Session a(m);
  a.feed(tok.data(), 8);
  const Session::Snapshot snap = a.snapshot();
  const std::vector<float> rest = a.feed_all(tok.data() + 8, T - 8);
  a.restore(snap);
  EXPECT_EQ(a.feed_all(tok.data() + 8, T - 8), rest);
}

TEST(Segments, TheMemoryCarriesContextAcrossSegments) {
  auto m = make_model(spec_json());
  const int64_t T = 15, V = kVocab;
  auto tok = tokens(T, 5);
  Session a(m);
  const std::vector<float> before = a.feed_all(tok.data(), T);
  tok[1] = (tok[1] + 1) % int32_t(V);  // a token of the first segment
  Session b(m);
  const std::vector<float> after = b.feed_all(tok.data(), T);
  EXPECT_GT(max_abs_diff(before, after, size_t(10 * V)), 1e-4) << "the third segment sees it";
}

TEST(Segments, GradientsMatchFiniteDifferencesThroughTheMemory) {
  auto m = make_model(spec_json(), 6, 0.2);
  const auto tok = tokens(13, 7), tgt = tokens(13, 8);
  Gradients g(*m);
  m->loss_and_grad(tok.data(), tgt.data(), 13, 1.0f, g);
  const auto& gm = g.by_name().at("segment.memory.weight");
  EXPECT_TRUE(std::any_of(gm.begin(), gm.end(), [](float v) { return v != 0.0f; }));
  expect_model_grads_match(*m, tok, tgt, 0, 6, 3e-3);
}

// bptt 1 detaches every boundary: the first memory then learns from the first segment's
// loss alone, exactly as with full backpropagation and targets only in the first segment.
TEST(Segments, TruncationStopsTheGradientAtTheBoundary) {
  auto full = make_model(spec_json(0), 6, 0.2), cut = make_model(spec_json(1), 6, 0.2);
  const auto tok = tokens(13, 7), tgt = tokens(13, 8);
  std::vector<int32_t> first = tgt;
  for (size_t t = 5; t < first.size(); ++t) first[t] = -1;
  Gradients gf(*full), gc(*cut);
  full->loss_and_grad(tok.data(), first.data(), 13, 1.0f, gf);
  cut->loss_and_grad(tok.data(), tgt.data(), 13, 1.0f, gc);
  const auto &a = gf.by_name().at("segment.memory.weight"), &b = gc.by_name().at("segment.memory.weight");
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * (1 + std::abs(a[i]))) << i;
  // bptt 2 lets the second segment's loss reach the first memory, which bptt 1 does not.
  auto two = make_model(spec_json(2), 6, 0.2);
  Gradients g2(*two);
  two->loss_and_grad(tok.data(), tgt.data(), 13, 1.0f, g2);
  EXPECT_GT(max_abs_diff(g2.by_name().at("segment.memory.weight"), b), 1e-6);
}

TEST(Segments, SpecRoundTripsAndBadValuesAreNamed) {
  const ModelSpec s = spec_from_json(spec_json(3), "rmt.json");
  EXPECT_EQ(s.segment.length, 5);
  EXPECT_EQ(s.segment.memory_tokens, 2);
  const ModelSpec r = spec_from_json(spec_to_json(s), "round-trip");
  EXPECT_EQ(r.segment.length, 5);
  EXPECT_EQ(r.segment.memory_tokens, 2);
  EXPECT_EQ(r.segment.bptt, 3);
  json bad = spec_json();
  bad["segments"]["memory_tokens"] = 0;
  EXPECT_NE(error_of([&] { spec_from_json(bad, "s.json"); }).find("memory_tokens >= 1"), std::string::npos);
  bad = spec_json(-1);
  EXPECT_NE(error_of([&] { spec_from_json(bad, "s.json"); }).find("bptt >= 0"), std::string::npos);
  bad = spec_json();
  bad["persistent_tokens"] = 2;
  EXPECT_NE(error_of([&] { spec_from_json(bad, "s.json"); }).find("do not combine with persistent tokens"),
            std::string::npos);
  auto m = make_model(spec_json());
  auto states = m->make_states();
  Workspace ws;
  HiddenCapture cap;
  const int32_t t = 1;
  EXPECT_NE(error_of([&] {
              m->forward(&t, 1, states, ws, LogitsMode::None, nullptr, &cap);
            }).find("capture is not supported for segmented models"),
            std::string::npos);
}

TEST(Segments, StateStaysBoundedBySegment) {
  auto m = make_model(spec_json());
  EXPECT_EQ(m->state_bytes_per_token(), 0u);
  Session s(m);
  const auto tok = tokens(60, 9);
  size_t most = 0;
  for (int64_t t = 0; t < 60; ++t) {
    s.feed(tok.data() + t, 1);
    most = std::max(most, s.state_bytes());
  }
  EXPECT_LE(most, m->fixed_state_bytes());
  // The bound is what one segment's rows need: well under what 60 tokens would.
  json plain = spec_json();
  plain.erase("segments");
  const ModelSpec ps = spec_from_json(plain, "plain");
  EXPECT_LT(m->fixed_state_bytes(),
            ps.blocks.size() * 0 +
                60 * Model(ps, owned_copy(init_weights(ps, 1, 0.02)), "p").state_bytes_per_token());
}
