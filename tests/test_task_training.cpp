// Training on a synthetic task: the step's loss is the mean cross-entropy over the task's
// answers only (checked against the inference path), a run resumes exactly, bad settings are
// refused up front, and a small attention model learns associative recall.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "fixtures.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/session.hpp"
#include "tasks/tasks.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

const char* kSmall = R"({
  "name": "attn", "vocab_size": 40, "d_model": 32, "norm_eps": 1e-6, "tie_embeddings": false,
  "mixers": {"attn": {"type": "attention", "n_heads": 4, "n_kv_heads": 4, "head_dim": 8}},
  "mlp": {"hidden": 64, "activation": "silu", "gated": true},
  "layers": {"pattern": ["attn"], "repeat": 2}
})";

std::unique_ptr<Model> small_model(uint64_t seed) {
  ModelSpec spec = spec_from_json(json::parse(kSmall), "test spec");
  return std::make_unique<Model>(spec, owned_copy(init_weights(spec, seed, 0.05)), "test");
}

TaskSpec task(const std::string& name, int64_t vocab, int64_t seq, int64_t items) {
  TaskSpec s;
  s.name = name, s.vocab = vocab, s.seq_len = seq, s.items = items;
  return s;
}

std::unique_ptr<TaskSource> mqar_source(int64_t held_out = 4) {
  return std::make_unique<TaskSource>(std::vector<TaskSpec>{task("mqar", 40, 16, 2), task("mqar", 40, 32, 4)},
                                      held_out, 77);
}

// Sum of -log p(answer) over the answers of `ex`, from the inference path, in double.
double answer_nll(const Model& m, const TaskExample& ex, int64_t* answers) {
  Session s(std::shared_ptr<const Model>(&m, [](const Model*) {}));
  const std::vector<float> logits = s.feed_all(ex.input.data(), int64_t(ex.input.size()));
  const int64_t V = m.spec().vocab_size;
  double sum = 0;
  for (size_t t = 0; t < ex.target.size(); ++t) {
    if (ex.target[t] < 0) continue;
    const float* row = logits.data() + int64_t(t) * V;
    double mx = row[0], z = 0;
    for (int64_t i = 1; i < V; ++i) mx = std::max(mx, double(row[i]));
    for (int64_t i = 0; i < V; ++i) z += std::exp(double(row[i]) - mx);
    sum += mx + std::log(z) - double(row[ex.target[t]]);
    ++*answers;
  }
  return sum;
}

TEST(TaskTraining, StepLossIsTheMeanOverTheAnswers) {
  TrainOptions o;
  o.steps = 3, o.batch = 3, o.accum = 2, o.seed = 5;
  Trainer tr(small_model(1), o, mqar_source());
  // The same draws the trainer makes: its Rng is seeded with o.seed.
  TaskSource same = *mqar_source();
  Rng rng(o.seed);
  double nll = 0;
  int64_t answers = 0, tokens = 0, lengths_seen = 0;
  for (int i = 0; i < 6; ++i) {
    const TaskExample ex = same.draw(rng, 1);
    nll += answer_nll(tr.model(), ex, &answers);
    tokens += int64_t(ex.input.size());
    lengths_seen |= ex.input.size() == 16 ? 1 : 2;
  }
  EXPECT_EQ(lengths_seen, 3) << "both configurations are drawn";
  const double held = tr.evaluate();
  int64_t held_answers = 0;
  double held_nll = 0;
  for (const TaskExample& ex : same.held_out()) held_nll += answer_nll(tr.model(), ex, &held_answers);
  EXPECT_NEAR(held, held_nll / double(held_answers), 1e-5);
  const StepStats st = tr.step();
  EXPECT_EQ(st.answers, answers);
  EXPECT_EQ(st.tokens, tokens);
  EXPECT_LT(answers, tokens);  // only the queries count
  EXPECT_NEAR(st.loss, nll / double(answers), 1e-5);
}

TEST(TaskTraining, SavedStateResumesToTheSameLosses) {
  TempDir d;
  TrainOptions o;
  o.steps = 5, o.batch = 2, o.seed = 9;
  o.schedule.lr = 3e-3, o.schedule.warmup = 1;
  std::vector<double> straight, resumed;
  {
    Trainer tr(small_model(1), o, mqar_source());
    for (int s = 0; s < 5; ++s) straight.push_back(tr.step().loss);
  }
  Trainer tr(small_model(1), o, mqar_source());
  for (int s = 0; s < 2; ++s) resumed.push_back(tr.step().loss);
  tr.save_state(d / "state.safetensors");
  Trainer other(small_model(42), o, mqar_source());
  other.load_state(d / "state.safetensors");
  for (int s = 2; s < 5; ++s) resumed.push_back(other.step().loss);
  EXPECT_EQ(straight, resumed);
}

TEST(TaskTraining, BadSettingsAreRefusedUpFront) {
  EXPECT_NE(error_of([] { TaskSource({task("mqar", 40, 15, 2)}, 1, 0); }).find("must be even"),
            std::string::npos);
  EXPECT_NE(error_of([] { TaskSource({}, 1, 0); }).find("at least one"), std::string::npos);
  TrainOptions o;
  const std::string big = error_of([&] {
    Trainer(small_model(1), o,
            std::make_unique<TaskSource>(std::vector<TaskSpec>{task("mqar", 64, 16, 2)}, 1, 0));
  });
  EXPECT_NE(big.find("vocabulary (64) is larger than the model's (40)"), std::string::npos) << big;
}

// Two attention layers learn associative recall: held-out accuracy goes from chance (about
// 1 in 20 values) to nearly all answers.
TEST(TaskTraining, AttentionLearnsAssociativeRecall) {
  TrainOptions o;
  o.steps = 1000, o.batch = 16, o.seed = 1, o.clip = 1.0;
  o.schedule.lr = 3e-3, o.schedule.min_lr = 3e-4, o.schedule.warmup = 20;
  o.adam.weight_decay = 0.01;
  const TaskSpec recall = task("mqar", 40, 16, 2);
  Trainer tr(small_model(3), o, std::make_unique<TaskSource>(std::vector<TaskSpec>{recall}, 0, 0));
  const double before = evaluate_task(tr.model(), recall, 100, 123).accuracy();
  for (int64_t s = 0; s < o.steps; ++s) tr.step();
  const double after = evaluate_task(tr.model(), recall, 100, 123).accuracy();
  RecordProperty("accuracy_before", std::to_string(before));
  RecordProperty("accuracy_after", std::to_string(after));
  EXPECT_LT(before, 0.2);
  EXPECT_GT(after, 0.9);
}

}  // namespace
