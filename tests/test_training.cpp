// Training: whole-model gradients against finite differences (a GDN / attention / MoE
// hybrid with tied embeddings and multipliers), overfitting a small batch, AdamW and
// schedules, the token cache and data errors, and exact resume from a training state.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/rng.hpp"
#include "fixtures.hpp"
#include "grad_check.hpp"
#include "import/load.hpp"
#include "mixer_forms.hpp"
#include "model/grads.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "model_grad_check.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

ModelSpec spec_of(const std::string& text) { return spec_from_json(json::parse(text), "test spec"); }

// Three GDN blocks and one attention block, MLP and MoE channel mixers.
const char* kHybrid = R"({
  "name": "hybrid", "vocab_size": 23, "d_model": 16, "norm_eps": 1e-6, "tie_embeddings": true,
  "embedding_multiplier": 1.5, "residual_multiplier": 0.8, "logits_scaling": 1.25,
  "mixers": {
    "gdn": {"type": "gated_deltanet", "n_k_heads": 1, "n_v_heads": 2, "head_k_dim": 8, "head_v_dim": 4, "chunk": 4},
    "attn": {"type": "attention", "n_heads": 2, "n_kv_heads": 1, "head_dim": 8, "qk_norm": true}
  },
  "mlp": {"hidden": 24, "activation": "silu", "gated": true},
  "layers": ["gdn", "gdn", {"mixer": "gdn", "moe": {"n_experts": 3, "top_k": 2, "hidden": 8, "renormalize": true}},
             "attn"]
})";

const char* kAttention = R"({
  "name": "attn2", "vocab_size": 17, "d_model": 32, "norm_eps": 1e-6, "tie_embeddings": false,
  "mixers": {"attn": {"type": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 8}},
  "mlp": {"hidden": 64, "activation": "silu", "gated": true},
  "layers": {"pattern": ["attn"], "repeat": 2}
})";

std::unique_ptr<Model> make_model(const ModelSpec& spec, uint64_t seed, double std = 0.2) {
  return std::make_unique<Model>(spec, owned_copy(init_weights(spec, seed, std)), "test");
}

TEST(ModelBackward, HybridMatchesFiniteDifferences) {
  // Without the MoE layer: its top-k choice is piecewise constant, so finite differences
  // through the whole model can cross a routing change (moe_backward has its own check).
  json j = json::parse(kHybrid);
  j["layers"][2] = "gdn";
  ModelSpec spec = spec_from_json(j, "test spec");
  auto model = make_model(spec, 3, 0.1);
  Rng r(4);
  const int64_t T = 11;
  std::vector<int32_t> tok(T), tgt(T);
  for (int64_t t = 0; t < T; ++t)
    tok[size_t(t)] = int32_t(r.next() % 23), tgt[size_t(t)] = int32_t(r.next() % 23);
  tgt[3] = -1;  // a position without a target
  Gradients g(*model);
  LossSum l = model->loss_and_grad(tok.data(), tgt.data(), T, 1.0f, g);
  EXPECT_EQ(l.count, T - 1);
  expect_model_grads_match(*model, tok, tgt);
}

// Trains on one fixed batch until the loss is near zero.
double overfit(const char* spec_text, int64_t steps, double lr) {
  ModelSpec spec = spec_of(spec_text);
  TrainOptions o;
  o.steps = steps, o.batch = 4, o.seq = 16, o.val_fraction = 0, o.clip = 1.0;
  o.schedule.lr = lr, o.schedule.min_lr = lr, o.schedule.decay = Decay::Constant;
  o.adam.weight_decay = 0;
  // A stream of exactly one window: every step sees the same sequence.
  Rng r(5);
  std::vector<int32_t> tokens(size_t(o.seq + 1));
  for (auto& t : tokens) t = int32_t(r.next() % uint64_t(spec.vocab_size));
  Trainer tr(make_model(spec, 1, 0.05), o, split_tokens(tokens, 0, o.seq + 1));
  double loss = 0;
  for (int64_t s = 0; s < steps; ++s) loss = tr.step().loss;
  return loss;
}

TEST(Training, TwoLayerAttentionOverfitsABatch) { EXPECT_LT(overfit(kAttention, 150, 1e-2), 0.05); }

TEST(Training, GatedDeltaNetHybridOverfitsABatch) { EXPECT_LT(overfit(kHybrid, 200, 1e-2), 0.05); }

// A step splits its sequences across threads, each with its own gradients; the result
// must be the serial step's up to float summation order.
TEST(Training, ThreadedStepMatchesSerialStep) {
  ModelSpec spec = spec_of(kHybrid);
  TrainOptions o;
  o.steps = 4, o.batch = 5, o.seq = 12, o.val_fraction = 0;
  o.schedule.lr = 3e-3, o.schedule.warmup = 1;
  Rng r(8);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = int32_t(r.next() % uint64_t(spec.vocab_size));
  auto losses = [&](int threads) {
    set_num_threads(threads);
    Trainer tr(make_model(spec, 1), o, split_tokens(tokens, 0, o.seq + 1));
    std::vector<double> l;
    for (int s = 0; s < 4; ++s) l.push_back(tr.step().loss);
    l.push_back(double(tr.model().weights().at("embed.weight").f32()[7]));
    return l;
  };
  const auto serial = losses(1), threaded = losses(2);
  set_num_threads(0);
  for (size_t i = 0; i < serial.size(); ++i) EXPECT_NEAR(serial[i], threaded[i], 1e-5 * std::abs(serial[i]));
  const std::vector<double> again = losses(2);
  set_num_threads(0);
  EXPECT_EQ(again, threaded);  // deterministic for a given thread count
}

// A worker's error reaches the caller (the lowest failing thread's), after every worker ends.
TEST(Training, WorkerErrorsAreRethrown) {
  std::vector<int> ran(3, 0);
  try {
    run_on_threads(3, [&](int t) {
      ran[size_t(t)] = 1;
      if (t > 0) fail("worker ", t, " failed");
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "worker 1 failed");
  }
  EXPECT_EQ(ran, std::vector<int>({1, 1, 1}));
  EXPECT_THROW(run_on_threads(1, [](int) { fail("inline"); }), Error);
}

// Trains a few steps; the held-out loss must fall, and the trained model must compute what a
// model freshly built from the same weights computes (mixers that derive values from their
// weights, such as -exp(A_log), must refresh them after each optimizer step).
void expect_trains_consistently(const ModelSpec& spec, Weights weights, double lr) {
  TrainOptions o;
  o.steps = 5, o.batch = 2, o.seq = 12, o.val_fraction = 0.2;
  o.schedule.lr = lr, o.schedule.warmup = 0;
  Rng r(9);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = int32_t(r.next() % uint64_t(std::min<int64_t>(spec.vocab_size, 23)));
  Trainer tr(std::make_unique<Model>(spec, std::move(weights), "test"), o,
             split_tokens(tokens, o.val_fraction, o.seq + 1));
  const double before = tr.evaluate();
  for (int s = 0; s < 5; ++s) tr.step();
  EXPECT_LT(tr.evaluate(), before);
  Trainer fresh(std::make_unique<Model>(spec, owned_copy(tr.model().weights()), "copy"), o,
                split_tokens(tokens, o.val_fraction, o.seq + 1));
  EXPECT_EQ(tr.evaluate(), fresh.evaluate());
}

TEST(Training, RecurrentModelsStayConsistentWithTheirWeights) {
  const ModelSpec spec = spec_of(R"({"name": "m", "vocab_size": 23, "d_model": 16,
      "mixers": {"m": {"type": "mamba", "expand": 2, "d_state": 4, "d_conv": 4, "chunk": 8},
                 "s": {"type": "mamba2", "head_dim": 8, "d_state": 4, "chunk": 8},
                 "x": {"type": "mlstm", "n_heads": 2, "chunk": 5},
                 "t": {"type": "titans", "n_heads": 2, "head_dim": 8, "chunk": 4, "window": 2},
                 "a": {"type": "attention", "n_heads": 2, "head_dim": 8, "sliding_window": 6}},
      "mlp": {"hidden": 32}, "layers": {"pattern": ["m", "s", "x", "t", "a"], "repeat": 1}})");
  expect_trains_consistently(spec, owned_copy(init_weights(spec, 1, 0.2)), 3e-2);
}

// RWKV-4 (from a Hugging Face checkpoint: braid's spec format has no RWKV blocks) derives
// -exp(time_decay); its stateful channel mixer trains too.
TEST(Training, RwkvModelStaysConsistentWithItsWeights) {
  REQUIRE_FIXTURES();
  const std::string dir = hf_fixture("rwkv");
  expect_trains_consistently(load_spec(dir), owned_copy(load_model(dir)->weights()), 1e-3);
}

TEST(Training, ADivergedStepIsRefusedAndNotApplied) {
  const ModelSpec spec = spec_of(kAttention);
  TrainOptions o;
  o.steps = 3, o.batch = 2, o.seq = 8, o.val_fraction = 0;
  Rng r(2);
  std::vector<int32_t> tokens(100);
  for (auto& t : tokens) t = int32_t(r.next() % uint64_t(spec.vocab_size));
  Weights w = owned_copy(init_weights(spec, 1, 0.05));
  w.at("blocks.0.mlp.up_proj.weight").f32_mut()[0] = std::numeric_limits<float>::infinity();
  Trainer tr(std::make_unique<Model>(spec, std::move(w), "test"), o, split_tokens(tokens, 0, o.seq + 1));
  const float before = tr.model().weights().at("embed.weight").f32()[3];
  try {
    tr.step();
    FAIL() << "a non-finite loss was applied";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: the loss"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("training diverged"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(first non-finite gradient: blocks."), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(tr.model().weights().at("embed.weight").f32()[3], before);
  EXPECT_EQ(tr.steps_done(), 0);
}

TEST(Training, ScheduleWarmsUpThenDecays) {
  Schedule s;
  s.lr = 1.0, s.min_lr = 0.1, s.warmup = 10, s.total = 110;
  EXPECT_DOUBLE_EQ(lr_at(s, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(s, 10), 1.0);
  EXPECT_NEAR(lr_at(s, 60), 0.55, 1e-12);  // cosine half way
  EXPECT_NEAR(lr_at(s, 110), 0.1, 1e-12);
  s.decay = Decay::Linear;
  EXPECT_NEAR(lr_at(s, 60), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(s, 35), 0.775, 1e-12);
  s.decay = Decay::Constant;
  EXPECT_DOUBLE_EQ(lr_at(s, 100), 1.0);
}

TEST(Training, AdamWDecaysOnlyMatricesByDefault) {
  auto model = make_model(spec_of(kAttention), 2);
  AdamW opt(*model, AdamWConfig{});
  EXPECT_TRUE(opt.decays("blocks.0.attn.q_proj.weight"));
  EXPECT_TRUE(opt.decays("lm_head.weight"));
  EXPECT_FALSE(opt.decays("embed.weight"));
  EXPECT_FALSE(opt.decays("blocks.0.norm1.weight"));
  AdamWConfig all;
  all.decay_all = true;
  EXPECT_TRUE(AdamW(*model, all).decays("embed.weight"));
  // With zero gradients only decayed parameters move: p -= lr * wd * p.
  Gradients g(*model);
  const float before = model->weights().at("lm_head.weight").f32()[0];
  const float norm_before = model->weights().at("final_norm.weight").f32()[0];
  opt.step(*model, g, 0.5);
  EXPECT_FLOAT_EQ(model->weights().at("lm_head.weight").f32()[0], before * (1 - 0.5f * 0.1f));
  EXPECT_EQ(model->weights().at("final_norm.weight").f32()[0], norm_before);
}

TEST(Training, ClipScalesToTheGlobalNorm) {
  auto model = make_model(spec_of(kAttention), 2);
  Gradients g(*model);
  g.of(std::string("embed.weight"))[0] = 3, g.of(std::string("lm_head.weight"))[0] = 4;
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 1.0), 5.0);
  EXPECT_NEAR(g.global_norm(), 1.0, 1e-6);
}

TEST(TrainingData, TokenCacheRoundTripsAndRejectsCorruption) {
  TempDir d;
  const std::vector<int32_t> t = {5, 0, 256, 7, 1};
  write_token_cache(d / "tokens.bin", t);
  EXPECT_EQ(read_token_cache(d / "tokens.bin"), t);
  std::filesystem::resize_file(d / "tokens.bin", 24 + 3 * 4);
  try {
    read_token_cache(d / "tokens.bin");
    FAIL() << "truncated cache accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::ofstream(d / "junk.bin") << "not a token cache at all, really";
  EXPECT_THROW(read_token_cache(d / "junk.bin"), Error);
  EXPECT_THROW(read_token_cache(d / "missing.bin"), Error);
}

TEST(TrainingData, SplitHoldsOutTheTailAndRefusesTinyCorpora) {
  std::vector<int32_t> t(1000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i % 50);
  TokenSplit s = split_tokens(t, 0.1, 33);
  EXPECT_EQ(s.train.size(), 900u);
  EXPECT_EQ(s.val.size(), 100u);
  EXPECT_EQ(s.val.front(), t[900]);
  EXPECT_THROW(split_tokens(std::vector<int32_t>(40), 0.1, 33), Error);
  EXPECT_THROW(split_tokens(t, 1.5, 33), Error);
}

TEST(Training, SavedStateResumesToTheSameLosses) {
  TempDir d;
  ModelSpec spec = spec_of(kHybrid);
  TrainOptions o;
  o.steps = 6, o.batch = 2, o.seq = 12, o.val_fraction = 0.1;
  o.schedule.lr = 3e-3, o.schedule.warmup = 2;
  Rng r(6);
  std::vector<int32_t> tokens(400);
  for (auto& t : tokens) t = int32_t(r.next() % 23);
  auto run = [&](int64_t from_state_at) {
    std::vector<double> losses;
    Trainer tr(make_model(spec, 1), o, split_tokens(tokens, o.val_fraction, o.seq + 1));
    for (int64_t s = 0; s < o.steps; ++s) {
      if (s == from_state_at) {
        tr.save_state(d / "state.safetensors");
        // A fresh trainer with different initial weights, restored from the state.
        Trainer other(make_model(spec, 99), o, split_tokens(tokens, o.val_fraction, o.seq + 1));
        other.load_state(d / "state.safetensors");
        for (; s < o.steps; ++s) losses.push_back(other.step().loss);
        return losses;
      }
      losses.push_back(tr.step().loss);
    }
    return losses;
  };
  const std::vector<double> straight = run(-1), resumed = run(3);
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(straight[i], resumed[i]) << "step " << i + 1;
  // A corrupt state is refused before anything changes.
  const std::string path = d / "state.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  Trainer tr(make_model(spec, 1), o, split_tokens(tokens, o.val_fraction, o.seq + 1));
  const float w0 = tr.model().weights().at("embed.weight").f32()[0];
  EXPECT_THROW(tr.load_state(path), Error);
  EXPECT_EQ(tr.model().weights().at("embed.weight").f32()[0], w0);
}

}  // namespace
