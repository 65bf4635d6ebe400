// braid compare: item counts per length, settings refused before training, the table,
// chart and JSON it writes, and accuracies that braid eval reproduces from the saved models.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "cli_run.hpp"
#include "core/error.hpp"
#include "fixtures.hpp"
#include "model/spec_json.hpp"
#include "train/compare.hpp"

using namespace braid;

namespace {

const char* kAttention = R"({
  "name": "attn", "vocab_size": 96, "d_model": 16, "norm_eps": 1e-6, "tie_embeddings": false,
  "mixers": {"attn": {"type": "attention", "n_heads": 2, "n_kv_heads": 2, "head_dim": 8}},
  "mlp": {"hidden": 32, "activation": "silu", "gated": true},
  "layers": ["attn"]
})";

const char* kGla = R"({
  "name": "gla", "vocab_size": 128, "d_model": 16, "norm_eps": 1e-6, "tie_embeddings": false,
  "mixers": {"g": {"type": "gla", "n_heads": 2, "head_k_dim": 8, "chunk": 8}},
  "mlp": {"hidden": 32, "activation": "silu", "gated": true},
  "layers": ["g"]
})";

ModelSpec spec_of(const char* text) { return spec_from_json(json::parse(text), "test spec"); }

CompareOptions options(const std::string& out) {
  CompareOptions o;
  o.task.name = "mqar", o.task.vocab = 96;
  o.eval_seq = {16, 32}, o.train_seq = {16}, o.items = {2, 4};
  o.train.steps = 6, o.train.batch = 4, o.train.val_fraction = 0;
  o.eval_examples = 8, o.out = out;
  return o;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Compare, ItemsFollowTheirLengths) {
  CompareOptions o = options("x");
  EXPECT_EQ(task_at(o, 16).items, 2);
  EXPECT_EQ(task_at(o, 32).items, 4);
  EXPECT_EQ(task_at(o, 32).seq_len, 32);
  EXPECT_NE(error_of([&] { task_at(o, 24); }).find("length 24 has no item count"), std::string::npos);
  o.items = {3};
  EXPECT_EQ(task_at(o, 24).items, 3);
}

TEST(Compare, BadSettingsAreRefusedBeforeTraining) {
  const std::vector<std::pair<std::string, ModelSpec>> two = {{"a", spec_of(kAttention)},
                                                              {"b", spec_of(kGla)}};
  CompareOptions o = options("x");
  EXPECT_EQ(error_of([&] { check_compare(o, two); }), "");
  auto with = [&](auto change) {
    CompareOptions c = options("x");
    change(c);
    return error_of([&] { check_compare(c, two); });
  };
  EXPECT_NE(with([](CompareOptions& c) {
              c.items = {1, 2, 3};
            }).find("3 values for 2 lengths"),
            std::string::npos);
  EXPECT_NE(with([](CompareOptions& c) { c.train_seq = {24}; }).find("length 24 has no item count"),
            std::string::npos);
  EXPECT_NE(with([](CompareOptions& c) { c.task.vocab = 100; }).find("a: mqar: the task's vocabulary (100)"),
            std::string::npos);
  EXPECT_NE(with([](CompareOptions& c) { c.eval_seq = {15, 32}; }).find("must be even"), std::string::npos);
  EXPECT_NE(with([](CompareOptions& c) { c.task.name = "sort"; }).find("unknown task 'sort'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              check_compare(o, {{"a", spec_of(kAttention)}, {"a", spec_of(kGla)}});
            }).find("two specs are labelled 'a'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              check_compare(o, {{"../a", spec_of(kAttention)}});
            }).find("cannot name"),
            std::string::npos);
}

TEST(Compare, WritesModelsTableChartAndJson) {
  TempDir d;
  const CompareOptions o = options(d.path);
  std::vector<CompareRow> rows;
  int64_t calls = 0;
  rows.push_back(compare_one(o, "attn", spec_of(kAttention), [&](int64_t step, double loss) {
    EXPECT_EQ(step, ++calls);
    EXPECT_TRUE(std::isfinite(loss));
  }));
  rows.push_back(compare_one(o, "gla", spec_of(kGla)));
  EXPECT_EQ(calls, 6);
  for (const CompareRow& r : rows) {
    EXPECT_GT(r.params, 0);
    ASSERT_EQ(r.accuracy.size(), 2u);
    for (double a : r.accuracy) EXPECT_TRUE(a >= 0 && a <= 1);
    EXPECT_TRUE(std::filesystem::exists(d / (r.label + "/model.safetensors")));
    std::ifstream m(d / (r.label + "/metrics.jsonl"));
    std::string line;
    int lines = 0;
    while (std::getline(m, line)) ++lines;
    EXPECT_EQ(lines, 6);
  }
  const std::string md = compare_markdown(o, rows, "braid compare mqar ...");
  EXPECT_NE(md.find("| model | params | 16 (2) | 32 (4) | final loss | train time |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("| attn | "), std::string::npos);
  EXPECT_NE(md.find("| gla | "), std::string::npos);
  EXPECT_NE(md.find("lengths {16} drawn uniformly"), std::string::npos) << md;
  EXPECT_NE(md.find("```\nbraid compare mqar ...\n```"), std::string::npos);
  const std::string svg = compare_svg(o, rows);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 4u);
  EXPECT_NE(svg.find(">16</text>"), std::string::npos);  // ticks at powers of two
  EXPECT_NE(svg.find(">32</text>"), std::string::npos);
  const json j = compare_json(o, rows);
  EXPECT_EQ(j["items"], json::array({2, 4}));
  EXPECT_EQ(j["models"].size(), 2u);
  EXPECT_EQ(j["models"][1]["accuracy"].size(), 2u);
}

TEST(Compare, CommandWritesResultsThatEvalReproduces) {
  TempDir d;
  std::ofstream(d / "attn.json") << kAttention;
  std::ofstream(d / "gla.json") << kGla;
  const CliResult r =
      run_braid("compare mqar --spec " + (d / "attn.json") + "," + (d / "gla.json") + " --out " +
                (d / "out") + " --seq 16,32 --items 2,4 --steps 8 --batch 4 -n 10 --quiet");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("| attn | "), std::string::npos) << r.out;
  for (const char* f :
       {"results.md", "results.json", "accuracy.svg", "attn/config.json", "gla/metrics.jsonl"})
    EXPECT_TRUE(std::filesystem::exists(d / ("out/" + std::string(f)))) << f;
  const json j = read_json_file(d / "out/results.json");
  EXPECT_EQ(j["vocab"], 96);  // the smaller of the two model vocabularies
  // The saved model, evaluated by braid eval on the same examples, scores the same.
  const CliResult e = run_braid("eval mqar --model " + (d / "out/gla") +
                                " --seq 32 --items 4 --vocab 96 -n 10 --seed 1000003 --json");
  ASSERT_EQ(e.rc, 0) << e.err;
  const json ej = json::parse(e.out);
  EXPECT_DOUBLE_EQ(ej["accuracy"].get<double>(), j["models"][1]["accuracy"][1].get<double>());

  const CliResult bad = run_braid("compare mqar --spec " + (d / "attn.json") + " --out " + (d / "o2") +
                                  " --seq 16,32 --items 2,4,8");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("--items has 3 values for 2 lengths"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(d / "o2/attn")) << "nothing trained";
}

TEST(Compare, LearningRatePerSpec) {
  TempDir d;
  std::ofstream(d / "attn.json") << kAttention;
  std::ofstream(d / "gla.json") << kGla;
  const std::string specs = " --spec " + (d / "attn.json") + "," + (d / "gla.json");
  const CliResult r = run_braid("compare mqar" + specs + " --out " + (d / "out") +
                                " --seq 16 --items 2 --steps 4 --batch 2 -n 4 --lr 1e-3,5e-3 --quiet");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("| final loss | lr | train time |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("each model's lr (warmup 50, cosine decay to 0.1 x it)"), std::string::npos) << r.out;
  const json j = read_json_file(d / "out/results.json");
  EXPECT_DOUBLE_EQ(j["models"][0]["lr"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(j["models"][1]["lr"].get<double>(), 5e-3);
  // Each model's own schedule is what it trained with (the last step's lr, warmup still on).
  std::ifstream m(d / "out/gla/metrics.jsonl");
  std::string line, last;
  while (std::getline(m, line)) last = line;
  EXPECT_DOUBLE_EQ(json::parse(last)["lr"].get<double>(), 5e-3 * 4 / 50) << last;

  const CliResult bad =
      run_braid("compare mqar" + specs + " --out " + (d / "o2") + " --seq 16 --lr 1e-3,2e-3,3e-3");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("--lr: 3 learning rates for 2 specs"), std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(d / "o2/attn")) << "nothing trained";
}

// Models trained by separate runs tabulate as one: the merged table equals the table of one
// run training both, and settings that differ are named.
TEST(Compare, MergeTabulatesSeparateRuns) {
  TempDir d;
  std::ofstream(d / "attn.json") << kAttention;
  std::ofstream(d / "gla.json") << kGla;
  const std::string common = " --seq 16,32 --items 2,4 --vocab 96 --steps 5 --batch 2 -n 6 --quiet";
  auto run = [&](const std::string& specs, const std::string& out, const std::string& extra) {
    const CliResult r = run_braid("compare mqar --spec " + specs + " --out " + (d / out) + common + extra);
    EXPECT_EQ(r.rc, 0) << r.err;
  };
  run(d / "attn.json" + "," + (d / "gla.json"), "both", " --lr 1e-3,5e-3");
  run(d / "attn.json", "a", " --lr 1e-3");
  run(d / "gla.json", "g", " --lr 5e-3");
  run(d / "gla.json", "g8", " --lr 5e-3 --seed 5");
  const CliResult m =
      run_braid("compare --merge " + (d / "a") + "," + (d / "g") + " --out " + (d / "merged"));
  ASSERT_EQ(m.rc, 0) << m.err;
  const json both = read_json_file(d / "both/results.json"),
             merged = read_json_file(d / "merged/results.json");
  ASSERT_EQ(merged["models"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(merged["models"][i]["label"], both["models"][i]["label"]);
    EXPECT_EQ(merged["models"][i]["accuracy"], both["models"][i]["accuracy"]) << i;
    EXPECT_EQ(merged["models"][i]["final_loss"], both["models"][i]["final_loss"]) << i;
  }
  // Both runs' commands and the merge are quoted, and the table has the lr column.
  EXPECT_NE(m.out.find("| final loss | lr | train time |"), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("--out " + (d / "a")), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("--out " + (d / "g")), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("compare --merge"), std::string::npos) << m.out;
  // The merged file reads back as a results file.
  EXPECT_EQ(compare_from_json(merged, "merged").rows.size(), 2u);

  auto refused = [&](const std::string& args) {
    const CliResult r = run_braid("compare --merge " + args);
    EXPECT_EQ(r.rc, 2);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    return r.err;
  };
  EXPECT_NE(refused(d / "a" + "," + (d / "g8") + " --out " + (d / "x")).find("its setting 'train'"),
            std::string::npos);
  EXPECT_NE(
      refused(d / "a" + "," + (d / "both") + " --out " + (d / "x")).find("'attn' is already in the table"),
      std::string::npos);
  EXPECT_NE(refused(d / "a" + "," + (d / "g") + " --out " + (d / "a")).find("would be overwritten"),
            std::string::npos);
  EXPECT_NE(refused(d / "a" + "," + (d / "nowhere") + " --out " + (d / "x")).find("nowhere/results.json"),
            std::string::npos);
  const CliResult none = run_braid("compare --out " + (d / "x"));
  EXPECT_EQ(none.rc, 2);
  EXPECT_NE(none.err.find("compare needs a task, --spec and --seq"), std::string::npos) << none.err;
  std::filesystem::create_directories(d / "bad");
  std::ofstream(d / "bad/results.json") << "{\"task\": \"mqar\"}";
  EXPECT_NE(
      refused(d / "a" + "," + (d / "bad") + " --out " + (d / "x")).find("not a braid compare results file"),
      std::string::npos);
}

TEST(Compare, RegressionTableAndEvalAgree) {
  TempDir d;
  std::ofstream(d / "icl.json") << R"({"name": "icl", "input_dim": 4, "output_dim": 1, "d_model": 16,
    "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 8}}, "layers": ["attn"],
    "loop": {"begin": 0, "end": 1, "loops": 2, "max_loops": 2}})";
  const CliResult r = run_braid("compare linear_regression --spec " + (d / "icl.json") + " --out " +
                                (d / "out") + " --seq 12 --dim 3 --steps 3 --batch 2 -n 8 --quiet");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("### linear_regression: error / d by points seen (d = 3)"), std::string::npos)
      << r.out;
  // Columns: none, d / 2, d - 1, d, 3d / 2 (4, past d / 2 = 1 and d = 3) and the last point (5).
  EXPECT_NE(r.out.find("| model | params | 0 | 1 | 2 | 3 | 4 | 5 | final loss | train time |"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("| least squares | - |"), std::string::npos) << r.out;
  const json j = read_json_file(d / "out/results.json");
  ASSERT_EQ(j["models"][0]["error"].size(), 6u);
  EXPECT_LT(j["models"][0]["least_squares"][5].get<double>(), 1e-8);  // 5 points >= d: exact
  const CliResult e = run_braid("eval linear_regression --model " + (d / "out/icl") +
                                " --seq 12 --dim 3 -n 8 --seed 1000003 --json");
  ASSERT_EQ(e.rc, 0) << e.err;
  const json ej = json::parse(e.out);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_DOUBLE_EQ(ej["error"][i].get<double>(), j["models"][0]["error"][i].get<double>()) << i;

  const CliResult info = run_braid("inspect --model " + (d / "out/icl"));
  ASSERT_EQ(info.rc, 0) << info.err;
  EXPECT_NE(info.out.find("4 real values per position (linear read-in), 1 outputs"), std::string::npos)
      << info.out;

  const CliResult two = run_braid("compare linear_regression --spec " + (d / "icl.json") + " --out " +
                                  (d / "o2") + " --seq 12,24 --dim 3");
  EXPECT_EQ(two.rc, 2);
  EXPECT_NE(two.err.find("give one evaluation length"), std::string::npos) << two.err;
  const CliResult wide = run_braid("compare linear_regression --spec " + (d / "icl.json") + " --out " +
                                   (d / "o3") + " --seq 12 --dim 5");
  EXPECT_EQ(wide.rc, 2);
  EXPECT_NE(wide.err.find("icl: linear_regression in dimension 5 needs a model with input_dim 6"),
            std::string::npos)
      << wide.err;
}

}  // namespace
