// A training curriculum: examples grow from a starting length and (in-context regression)
// number of active dimensions to the task's own, in whole steps and linearly in the
// optimizer step; the trainer draws them by step (so a resumed run draws the same); bad
// settings are named before training; braid compare states and records it.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "cli_run.hpp"
#include "core/error.hpp"
#include "fixtures.hpp"
#include "io/json.hpp"
#include "train/compare.hpp"
#include "train/source.hpp"

using namespace braid;

namespace {

TaskSpec regression(int64_t seq, int64_t dim) {
  TaskSpec t;
  t.name = "linear_regression", t.seq_len = seq, t.dim = dim;
  return t;
}

// The number of coordinates of x that are not 0 in any x row of `ex`.
int64_t used_dims(const TaskExample& ex) {
  const int64_t d = ex.x_dim - 1;
  int64_t used = 0;
  for (int64_t c = 0; c < d; ++c)
    for (int64_t i = 0; i < ex.length(); i += 2)
      if (ex.x[size_t(i * ex.x_dim + c)] != 0.0f) {
        used = std::max(used, c + 1);
        break;
      }
  return used;
}

TEST(Curriculum, GrowsInWholeStepsToTheTask) {
  const TaskSpec task = regression(80, 20);
  const Curriculum c{300, 22, 5};
  int64_t last_seq = 0, last_dim = 0;
  for (int64_t step = 1; step <= 320; ++step) {
    const TaskSpec t = c.at(task, step);
    EXPECT_EQ(t.seq_len % 2, 0) << step;
    EXPECT_GE(t.seq_len, last_seq) << step;
    const int64_t dim = t.active_dim == 0 ? task.dim : t.active_dim;
    EXPECT_GE(dim, last_dim) << step;
    last_seq = t.seq_len, last_dim = dim;
  }
  EXPECT_EQ(c.at(task, 1).seq_len, 22);
  EXPECT_EQ(c.at(task, 1).active_dim, 5);
  // Half way (step 151: 150 of 300 steps done): 22 + 2 * (29 / 2) and 5 + 15 / 2, rounded down.
  EXPECT_EQ(c.at(task, 151).seq_len, 22 + 2 * 14);
  EXPECT_EQ(c.at(task, 151).active_dim, 5 + 7);
  EXPECT_EQ(c.at(task, 300).seq_len, 78);
  EXPECT_EQ(c.at(task, 300).active_dim, 19);
  EXPECT_EQ(c.at(task, 301).seq_len, 80);
  EXPECT_EQ(c.at(task, 301).active_dim, 0);  // all of d
  // Only what is given grows; no curriculum is the task itself.
  EXPECT_EQ((Curriculum{300, 0, 5}.at(task, 1).seq_len), 80);
  EXPECT_EQ((Curriculum{300, 22, 0}.at(task, 1).active_dim), 0);
  EXPECT_EQ(Curriculum{}.at(task, 1).seq_len, 80);
}

TEST(Curriculum, ExamplesUseOnlyTheActiveDimensions) {
  Rng rng(4);
  TaskSpec t = regression(30, 8);
  t.active_dim = 3;
  for (int e = 0; e < 20; ++e) {
    const TaskExample ex = make_task_example(t, rng);
    EXPECT_EQ(used_dims(ex), 3);
    // y = w . x over the three active coordinates: least squares from 3 points on is exact.
    std::vector<float> X, Y;
    for (int64_t i = 0; i < 15; ++i) {
      const float* xr = &ex.x[size_t(2 * i * 9)];
      if (i >= 3) EXPECT_NEAR(least_squares_predict(X.data(), Y.data(), i, 8, xr), ex.y[size_t(2 * i)], 1e-3);
      X.insert(X.end(), xr, xr + 8);
      Y.push_back(ex.y[size_t(2 * i)]);
    }
  }
  t.active_dim = 9;
  EXPECT_NE(error_of([&] { make_task_example(t, rng); }).find("active dimensions must be in [1, 8], got 9"),
            std::string::npos);
}

TEST(Curriculum, TheTrainingSourceDrawsByStep) {
  const TaskSource src({regression(40, 10)}, 4, 7, Curriculum{100, 10, 2});
  Rng rng(1);
  const TaskExample first = src.draw(rng, 1);
  EXPECT_EQ(first.length(), 10);
  EXPECT_EQ(used_dims(first), 2);
  const TaskExample later = src.draw(rng, 101);
  EXPECT_EQ(later.length(), 40);
  EXPECT_EQ(used_dims(later), 10);
  // Held-out examples are the task itself.
  for (const TaskExample& ex : src.held_out()) {
    EXPECT_EQ(ex.length(), 40);
    EXPECT_EQ(used_dims(ex), 10);
  }
  // The draw depends only on the step and the generator's state.
  Rng a(9), b(9);
  EXPECT_EQ(src.draw(a, 50).x, src.draw(b, 50).x);
}

TEST(Curriculum, BadSettingsAreNamed) {
  auto refused = [](std::vector<TaskSpec> configs, Curriculum c) {
    return error_of([&] { TaskSource(std::move(configs), 0, 0, c); });
  };
  const TaskSpec r = regression(40, 10);
  TaskSpec mq;
  mq.name = "mqar", mq.vocab = 64, mq.seq_len = 32, mq.items = 4;
  EXPECT_NE(refused({r}, {100, 42, 0}).find("starting length 42 must be in [1, 40]"), std::string::npos);
  EXPECT_NE(refused({r}, {100, 11, 0}).find("differ from it by a multiple of 2"), std::string::npos);
  EXPECT_NE(refused({r}, {100, 0, 11}).find("starting dimension 11 must be in [1, 10]"), std::string::npos);
  EXPECT_NE(refused({r}, {-1, 0, 0}).find("must not be negative"), std::string::npos);
  EXPECT_NE(refused({r}, {0, 20, 0}).find("needs a number of steps"), std::string::npos);
  EXPECT_NE(refused({mq}, {100, 0, 2}).find("mqar has no dimension to grow"), std::string::npos);
  EXPECT_NE(refused({r, regression(20, 10)}, {100, 10, 0}).find("needs one training length, got 2"),
            std::string::npos);
  // A start the task cannot draw (mqar: 4 pairs need 16 positions) fails before training.
  EXPECT_NE(refused({mq}, {100, 8, 0}).find("mqar"), std::string::npos);
  EXPECT_EQ(refused({mq}, {100, 16, 0}), "");
}

TEST(Curriculum, CompareStatesAndRecordsIt) {
  TempDir d;
  std::ofstream(d / "icl.json") << R"({"name": "icl", "input_dim": 5, "output_dim": 1, "d_model": 16,
    "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 8}}, "layers": ["attn"]})";
  const std::string base = "compare linear_regression --spec " + (d / "icl.json") +
                           " --seq 16 --dim 4 --steps 4 --batch 2 -n 4 --quiet";
  const CliResult r =
      run_braid(base + " --out " + (d / "out") + " --curriculum 3 --curriculum-seq 6 --curriculum-dim 2");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Curriculum: training starts at length 6 and d 2 and grows linearly to the task's "
                       "over the first 3 steps."),
            std::string::npos)
      << r.out;
  const json j = read_json_file(d / "out/results.json");
  EXPECT_EQ(j.at("curriculum"), (json{{"steps", 3}, {"seq", 6}, {"dim", 2}}));
  const CompareResults back = compare_from_json(j, "results.json");
  EXPECT_EQ(back.o.curriculum.steps, 3);
  EXPECT_EQ(back.o.curriculum.seq, 6);
  EXPECT_EQ(back.o.curriculum.dim, 2);
  // Regression results merge (each row's errors read back), but not with a run without the
  // curriculum; a row with fewer errors than points is refused.
  ASSERT_EQ(run_braid(base + " --label icl2 --out " + (d / "out2") +
                      " --curriculum 3 --curriculum-seq 6 --curriculum-dim 2")
                .rc,
            0);
  const CliResult both =
      run_braid("compare --merge " + (d / "out") + "," + (d / "out2") + " --out " + (d / "both"));
  ASSERT_EQ(both.rc, 0) << both.err;
  EXPECT_NE(both.out.find("| icl2 | "), std::string::npos) << both.out;
  json cut = j;
  cut["models"][0]["error"].erase(7);
  EXPECT_NE(error_of([&] {
              compare_from_json(cut, "cut.json");
            }).find("cut.json: model 'icl' has 7 errors and 8 least-squares errors for 8 points"),
            std::string::npos);
  ASSERT_EQ(run_braid(base + " --out " + (d / "plain")).rc, 0);
  EXPECT_FALSE(read_json_file(d / "plain/results.json").contains("curriculum"));
  const CliResult m =
      run_braid("compare --merge " + (d / "out") + "," + (d / "plain") + " --out " + (d / "merged"));
  EXPECT_EQ(m.rc, 2);
  EXPECT_NE(m.err.find("curriculum"), std::string::npos) << m.err;
  const CliResult bad = run_braid(base + " --out " + (d / "bad") + " --curriculum 3 --curriculum-seq 7");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("curriculum: the starting length 7"), std::string::npos) << bad.err;
}

}  // namespace
