// Real-valued sequences and in-context linear regression: the task's generator and its
// least-squares reference, a model with a linear read-in and real outputs (its training
// loss equals its forward's squared error, prefill equals decode, gradients match finite
// differences through a looped core and persistent tokens), bad input named, and a small
// model that learns to regress in context.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cli_run.hpp"
#include "core/error.hpp"
#include "fixtures.hpp"
#include "model/init.hpp"
#include "model/model.hpp"
#include "model/spec_json.hpp"
#include "model_grad_check.hpp"
#include "tasks/tasks.hpp"
#include "train/trainer.hpp"

using namespace braid;

namespace {

constexpr int64_t kDim = 4;

TaskSpec regression(int64_t points, int64_t dim = kDim) {
  TaskSpec t;
  t.name = "linear_regression";
  t.seq_len = 2 * points;
  t.dim = dim;
  return t;
}

// One attention block looped `loops` times (step embeddings on), two persistent tokens.
json looped_json(int64_t loops = 3) {
  json j = json::parse(R"({
    "name": "icl", "input_dim": 5, "output_dim": 1, "d_model": 16, "persistent_tokens": 2,
    "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 8}},
    "mlp": {"hidden": 32},
    "layers": ["attn"],
    "loop": {"begin": 0, "end": 1, "loops": 3, "max_loops": 4, "step_embedding": true}
  })");
  j["loop"]["loops"] = loops;
  return j;
}

std::unique_ptr<Model> make_model(const json& j, uint64_t seed, double std = 0.2) {
  const ModelSpec s = spec_from_json(j, "icl.json");
  return std::make_unique<Model>(s, owned_copy(init_weights(s, seed, std)), "test");
}

}  // namespace

TEST(Regression, ExamplesAreLinearAndLeastSquaresSolvesThem) {
  const int64_t d = 6, P = 12;
  Rng rng(3);
  const int64_t n = 400;
  std::vector<double> ls(static_cast<size_t>(P), 0.0);
  for (int64_t e = 0; e < n; ++e) {
    const TaskExample ex = make_task_example(regression(P, d), rng);
    ASSERT_TRUE(ex.real());
    ASSERT_EQ(ex.x_dim, d + 1);
    ASSERT_EQ(ex.length(), 2 * P);
    EXPECT_EQ(ex.answers(), P);
    std::vector<float> X, Y;
    for (int64_t i = 0; i < P; ++i) {
      const float* xr = &ex.x[size_t(2 * i * (d + 1))];
      const float* yr = xr + (d + 1);
      EXPECT_EQ(xr[d], 0.0f);  // an x row has no y
      for (int64_t c = 0; c < d; ++c) EXPECT_EQ(yr[c], 0.0f);
      EXPECT_EQ(yr[d], ex.y[size_t(2 * i)]);  // the y row carries the answer of the x row
      EXPECT_TRUE(std::isnan(ex.y[size_t(2 * i + 1)]));
      const double err = least_squares_predict(X.data(), Y.data(), i, d, xr) - ex.y[size_t(2 * i)];
      ls[size_t(i)] += err * err / double(d);
      X.insert(X.end(), xr, xr + d);
      Y.push_back(ex.y[size_t(2 * i)]);
    }
  }
  // Noiseless: from d points on, least squares is exact; below, the minimum-norm fit leaves
  // the unseen directions, an expected error of 1 - i/d.
  for (int64_t i = 0; i < P; ++i) {
    ls[size_t(i)] /= double(n);
    if (i >= d)
      EXPECT_LT(ls[size_t(i)], 1e-8) << i;
    else
      EXPECT_NEAR(ls[size_t(i)], 1.0 - double(i) / double(d), 0.12) << i;
  }
  EXPECT_NE(error_of([] {
              Rng r(1);
              TaskSpec t = regression(3);
              t.seq_len = 7;
              make_task_example(t, r);
            }).find("must be even"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Rng r(1);
              make_task_example(regression(3, 0), r);
            }).find("dimension must be positive"),
            std::string::npos);
}

TEST(Regression, TrainingLossIsTheForwardsSquaredErrorAndPrefillEqualsDecode) {
  auto m = make_model(looped_json(), 5);
  Rng rng(9);
  const TaskExample ex = make_task_example(regression(6), rng);
  const int64_t T = ex.length();
  Gradients g(*m);
  const LossSum loss = m->regression_loss_and_grad(ex.x.data(), ex.y.data(), T, 1.0f, g);
  EXPECT_EQ(loss.count, 6);
  std::vector<float> all(static_cast<size_t>(T)), last(1);
  Workspace ws;
  auto states = m->make_states();
  m->forward_vectors(ex.x.data(), T, states, ws, LogitsMode::All, all.data());
  double sum = 0;
  for (int64_t t = 0; t < T; t += 2) sum += std::pow(double(all[size_t(t)]) - ex.y[size_t(t)], 2);
  EXPECT_NEAR(loss.sum, sum, 1e-5 * sum);
  auto step = m->make_states();
  for (int64_t t = 0; t < T; ++t) {
    m->forward_vectors(ex.x.data() + t * ex.x_dim, 1, step, ws, LogitsMode::Last, last.data());
    EXPECT_NEAR(last[0], all[size_t(t)], 1e-5 * (1 + std::abs(all[size_t(t)]))) << t;
  }
}

TEST(Regression, GradientsMatchFiniteDifferences) {
  auto m = make_model(looped_json(), 6);
  Rng rng(10);
  const TaskExample ex = make_task_example(regression(4), rng);
  for (int64_t loops : {1, 3}) {
    expect_model_grads_match_of(
        *m,
        [&](GradSink& g) {
          return m->regression_loss_and_grad(ex.x.data(), ex.y.data(), ex.length(), 1.0f, g, loops).sum;
        },
        6, 3e-3);
  }
  // The read-in's gradients are not zero (the check above samples them too).
  Gradients g(*m);
  m->regression_loss_and_grad(ex.x.data(), ex.y.data(), ex.length(), 1.0f, g);
  for (const char* name : {"read_in.weight", "read_in.bias", "persistent.weight"}) {
    const auto& v = g.by_name().at(name);
    EXPECT_TRUE(std::any_of(v.begin(), v.end(), [](float x) { return x != 0.0f; })) << name;
  }
}

TEST(Regression, BadInputIsNamed) {
  auto m = make_model(looped_json(), 7);
  Workspace ws;
  auto states = m->make_states();
  const int32_t tok[2] = {0, 1};
  std::vector<float> out(4);
  EXPECT_NE(error_of([&] {
              m->forward(tok, 2, states, ws, LogitsMode::All, out.data());
            }).find("reads vectors of 5 values, not token ids"),
            std::string::npos);
  std::vector<float> x(10, 0.5f), y(2, 1.0f);
  x[7] = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] {
              m->forward_vectors(x.data(), 2, states, ws, LogitsMode::All, out.data());
            }).find("input value inf at position 1 is not finite"),
            std::string::npos);
  Gradients g(*m);
  x[7] = 0.5f;
  y[1] = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] {
              m->regression_loss_and_grad(x.data(), y.data(), 2, 1.0f, g);
            }).find("target value inf at position 1 is not finite"),
            std::string::npos);
  // A token model cannot take vectors.
  const ModelSpec ts = spec_from_json(json::parse(R"({"name": "t", "vocab_size": 11, "d_model": 16,
      "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 8}}, "layers": ["attn"]})"),
                                      "t.json");
  Model tm(ts, owned_copy(init_weights(ts, 1, 0.02)), "t");
  auto ts_states = tm.make_states();
  EXPECT_NE(error_of([&] {
              tm.forward_vectors(x.data(), 2, ts_states, ws, LogitsMode::All, out.data());
            }).find("reads token ids, not vectors"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              tm.regression_loss_and_grad(x.data(), y.data(), 2, 1.0f, g);
            }).find("reads token ids, not vectors"),
            std::string::npos);
  // Spec fields.
  json both = looped_json();
  both["vocab_size"] = 3;
  EXPECT_NE(error_of([&] { spec_from_json(both, "s.json"); }).find("has output_dim, not vocab_size"),
            std::string::npos);
  json tied = looped_json();
  tied["tie_embeddings"] = true;
  EXPECT_NE(error_of([&] { spec_from_json(tied, "s.json"); }).find("no embedding table to tie"),
            std::string::npos);
  json out_only = json::parse(R"({"name": "t", "vocab_size": 11, "output_dim": 1, "d_model": 16,
      "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 8}}, "layers": ["attn"]})");
  EXPECT_NE(error_of([&] { spec_from_json(out_only, "s.json"); }).find("output_dim needs input_dim"),
            std::string::npos);
  // Tasks and models that do not fit.
  EXPECT_NE(error_of([&] {
              check_task_fits(regression(4, 7), m->spec());
            }).find("needs a model with input_dim 8 and output_dim 1, got input_dim 5"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_task_fits(regression(4), ts); }).find("got a token model"),
            std::string::npos);
  TaskSpec mq;
  mq.name = "mqar";
  mq.vocab = 11;
  EXPECT_NE(error_of([&] { check_task_fits(mq, m->spec()); }).find("needs a token model"), std::string::npos);
  EXPECT_NE(error_of([&] { evaluate_task(*m, regression(4), 2, 1); }).find("scored by its error"),
            std::string::npos);
}

TEST(Regression, SpecRoundTrips) {
  const ModelSpec s = spec_from_json(looped_json(), "icl.json");
  EXPECT_EQ(s.input_dim, 5);
  EXPECT_EQ(s.vocab_size, 1);
  EXPECT_FALSE(s.tie_embeddings);
  const json j = spec_to_json(s);
  EXPECT_FALSE(j.contains("vocab_size"));
  EXPECT_EQ(j.at("output_dim"), 1);
  const ModelSpec r = spec_from_json(j, "round-trip");
  EXPECT_EQ(r.input_dim, 5);
  EXPECT_EQ(r.vocab_size, 1);
  for (const auto& p : param_decls(r)) EXPECT_NE(p.name, "embed.weight");
}

// A small looped model trained briefly regresses in context (d = 2): after the points it has
// seen, its error falls well below that of predicting 0 (error / d = 1), and so does the loss.
TEST(Regression, ALoopedModelLearnsToRegressInContext) {
  auto m = make_model(json::parse(R"({
    "name": "icl", "input_dim": 3, "output_dim": 1, "d_model": 32,
    "mixers": {"attn": {"type": "attention", "n_heads": 4, "head_dim": 8}},
    "mlp": {"hidden": 64}, "layers": ["attn"],
    "loop": {"begin": 0, "end": 1, "loops": 3, "max_loops": 3, "train_min_loops": 3, "train_max_loops": 3}
  })"),
                      11, 0.02);
  TrainOptions o;
  o.steps = 600, o.batch = 16, o.val_fraction = 0;
  o.schedule.lr = 3e-3, o.schedule.warmup = 50, o.schedule.min_lr = 3e-4;
  o.adam.weight_decay = 0.1;
  const TaskSpec task = regression(8, 2);
  Trainer tr(std::move(m), o, std::make_unique<TaskSource>(std::vector<TaskSpec>{task}, 64, 99));
  const double before = tr.evaluate();
  while (tr.steps_done() < o.steps) tr.step();
  const double after = tr.evaluate();
  EXPECT_LT(after, 0.6 * before) << before << " -> " << after;
  const RegressionScore s = evaluate_regression(tr.model(), task, 200, 1234);
  EXPECT_GT(s.error[0], 0.7);  // nothing seen yet: no better than the prior
  EXPECT_LT(s.error[7], 0.5) << "error / d after 7 points";
  EXPECT_LT(s.least_squares[7], 1e-8);
}
