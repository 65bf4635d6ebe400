// Synthetic task generators: the structure each task promises (MQAR as Zoology defines it,
// selective copying, induction heads, passkey retrieval, ListOps), determinism by seed, one-line errors for
// impossible settings, and `braid eval` counting answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cli_run.hpp"
#include "core/error.hpp"
#include "fixtures.hpp"
#include "import/load.hpp"
#include "tasks/tasks.hpp"

using namespace braid;

namespace {

TaskSpec spec(const std::string& name, int64_t vocab, int64_t seq, int64_t items) {
  TaskSpec s;
  s.name = name, s.vocab = vocab, s.seq_len = seq, s.items = items;
  return s;
}

TEST(Tasks, MqarFollowsZoologysLayout) {
  for (bool random_fill : {false, true}) {
    TaskSpec s = spec("mqar", 512, 128, 8);
    s.random_non_queries = random_fill;
    Rng rng(1);
    for (int e = 0; e < 50; ++e) {
      const TaskExample ex = make_task_example(s, rng);
      ASSERT_EQ(ex.input.size(), 128u);
      ASSERT_EQ(ex.target.size(), 128u);
      std::map<int32_t, int32_t> kv;
      for (int k = 0; k < 8; ++k) {
        const int32_t key = ex.input[size_t(2 * k)], value = ex.input[size_t(2 * k + 1)];
        EXPECT_GE(key, 1);
        EXPECT_LT(key, 256);  // keys from the first half of the vocabulary
        EXPECT_GE(value, 256);
        EXPECT_LT(value, 512);  // values from the second
        EXPECT_TRUE(kv.emplace(key, value).second) << "keys repeat";
      }
      std::set<int32_t> values;
      for (const auto& p : kv) values.insert(p.second);
      EXPECT_EQ(values.size(), 8u) << "values repeat";
      // Each key is queried once, at an even offset after the pairs; the answer is its value.
      std::set<int32_t> asked;
      for (size_t t = 0; t < 128; ++t) {
        if (ex.target[t] < 0) continue;
        EXPECT_GE(t, 16u);
        EXPECT_EQ((t - 16) % 2, 0u);
        ASSERT_TRUE(kv.count(ex.input[t])) << "query at " << t << " is not a key";
        EXPECT_EQ(ex.target[t], kv.at(ex.input[t]));
        asked.insert(ex.input[t]);
      }
      EXPECT_EQ(asked.size(), 8u);
      if (!random_fill) {
        for (size_t t = 16; t < 128; ++t) {
          if (ex.target[t] < 0) {
            EXPECT_EQ(ex.input[t], 0);
          }
        }
      }
    }
  }
}

// With power_a = 0.01 the query gaps follow a steep power law: short gaps dominate. With
// power_a = 1 they are uniform.
TEST(Tasks, MqarQueryGapsFollowThePowerLaw) {
  auto mean_gap = [](double a) {
    TaskSpec s = spec("mqar", 1024, 512, 4);
    s.power_a = a;
    Rng rng(2);
    double sum = 0;
    int n = 0;
    for (int e = 0; e < 200; ++e) {
      const TaskExample ex = make_task_example(s, rng);
      for (size_t t = 0; t < ex.target.size(); ++t)
        if (ex.target[t] >= 0) sum += double(t - 8) / 2.0, ++n;
    }
    return sum / n;
  };
  const double steep = mean_gap(0.01), flat = mean_gap(1.0);
  RecordProperty("mean_gap_power_0.01", std::to_string(steep));
  RecordProperty("mean_gap_uniform", std::to_string(flat));
  EXPECT_LT(steep, 60.0);  // ~ (space^a - 1) / (a ln space) draws concentrate at small gaps
  EXPECT_GT(flat, 100.0);  // uniform over 252 gap slots: mean ~ 125
}

TEST(Tasks, SelectiveCopyAsksForTheDataTokensInOrder) {
  Rng rng(3);
  for (int e = 0; e < 50; ++e) {
    const TaskExample ex = make_task_example(spec("selective_copy", 16, 64, 8), rng);
    std::vector<int32_t> data, answers;
    for (size_t t = 0; t < 56; ++t) {
      EXPECT_EQ(ex.target[t], -1);
      if (ex.input[t] != 0) data.push_back(ex.input[t]);
    }
    for (size_t t = 56; t < 64; ++t) {
      EXPECT_EQ(ex.input[t], 1);
      answers.push_back(ex.target[t]);
    }
    EXPECT_EQ(data.size(), 8u);
    EXPECT_EQ(answers, data);
    for (int32_t d : data) EXPECT_GE(d, 2);
  }
}

TEST(Tasks, InductionAsksForTheTokenAfterTheTrigger) {
  Rng rng(4);
  for (int e = 0; e < 50; ++e) {
    const TaskExample ex = make_task_example(spec("induction", 20, 32, 0), rng);
    EXPECT_EQ(ex.input.back(), 0);
    const auto first = std::find(ex.input.begin(), ex.input.end(), 0) - ex.input.begin();
    ASSERT_LT(first, 30);  // one trigger before the final one, with its answer after it
    EXPECT_EQ(std::count(ex.input.begin(), ex.input.end(), 0), 2);
    EXPECT_EQ(ex.target.back(), ex.input[size_t(first + 1)]);
    EXPECT_EQ(std::count_if(ex.target.begin(), ex.target.end(), [](int32_t t) { return t >= 0; }), 1);
  }
}

TEST(Tasks, PasskeyAsksForTheKeyHiddenInTheFiller) {
  Rng rng(5);
  std::set<int64_t> places;
  for (int e = 0; e < 50; ++e) {
    const TaskExample ex = make_task_example(spec("passkey", 64, 48, 5), rng);
    ASSERT_EQ(ex.input.size(), 48u);
    // One needle: the key marker followed by 5 digits; everything else before the query is
    // the filler cycle, continuing across the needle.
    const auto at = std::find(ex.input.begin(), ex.input.end(), 1) - ex.input.begin();
    ASSERT_LE(at + 5, 42);
    places.insert(at);
    std::vector<int32_t> key(ex.input.begin() + at + 1, ex.input.begin() + at + 6);
    for (int32_t d : key) EXPECT_TRUE(d >= 2 && d < 12) << d;
    int32_t expect = 12;
    for (int64_t t = 0; t < 43; ++t) {
      if (t >= at && t <= at + 5) continue;
      EXPECT_EQ(ex.input[size_t(t)], expect) << t;
      expect = expect == 27 ? 12 : expect + 1;
    }
    EXPECT_EQ(ex.input[43], 0);  // the query marker, then the key's first 4 digits
    std::vector<int32_t> answers;
    for (size_t t = 0; t < 48; ++t) {
      if (t < 43) {
        EXPECT_EQ(ex.target[t], -1);
      }
      if (t >= 44) {
        EXPECT_EQ(ex.input[t], key[t - 44]);
      }
      if (t >= 43) answers.push_back(ex.target[t]);
    }
    EXPECT_EQ(answers, key);
  }
  EXPECT_GT(places.size(), 20u);  // the needle moves
}

// Evaluates a ListOps token sequence with an explicit stack (independently of the generator).
int listops_value(const std::vector<int32_t>& toks, int* max_depth, int* max_args) {
  std::vector<std::pair<int32_t, std::vector<int>>> stack;  // operator, arguments so far
  int value = -1;
  *max_depth = 0, *max_args = 0;
  for (int32_t t : toks) {
    if (t == 16 || t == 15) continue;
    if (t >= 10 && t <= 13) {
      stack.push_back({t, {}});
      *max_depth = std::max(*max_depth, int(stack.size()));
      continue;
    }
    int v = t;
    if (t == 14) {
      auto [op, args] = stack.back();
      stack.pop_back();
      *max_args = std::max(*max_args, int(args.size()));
      std::sort(args.begin(), args.end());
      if (op == 10) v = args.front();
      if (op == 11) v = args.back();
      if (op == 12) {
        const size_t m = args.size() / 2;
        v = args.size() % 2 ? args[m] : (args[m - 1] + args[m]) / 2;
      }
      if (op == 13) {
        v = 0;
        for (int a : args) v += a;
        v %= 10;
      }
    }
    if (stack.empty())
      value = v;
    else
      stack.back().second.push_back(v);
  }
  return value;
}

TEST(Tasks, ListOpsAsksForTheValueOfTheExpression) {
  for (int64_t L : {32, 128, 512}) {
    Rng rng(6);
    std::set<int32_t> answers;
    int deepest = 0, widest = 0;
    for (int e = 0; e < 100; ++e) {
      const TaskExample ex = make_task_example(spec("listops", 20, L, 0), rng);
      ASSERT_EQ(ex.input.size(), size_t(L));
      EXPECT_EQ(ex.input.back(), 15);
      const auto body = std::find_if(ex.input.begin(), ex.input.end(), [](int32_t t) { return t != 16; });
      EXPECT_GE(2 * (ex.input.end() - body - 1), L - 1) << "the expression fills half the sequence";
      EXPECT_TRUE(*body >= 10 && *body <= 13) << "the expression starts with an operator";
      int depth = 0, args = 0;
      EXPECT_EQ(ex.target.back(), listops_value(ex.input, &depth, &args));
      EXPECT_LE(depth, 9);  // operators nest at most 9 deep: depth 10 is a digit
      EXPECT_LE(args, 10);
      EXPECT_GE(args, 2);
      deepest = std::max(deepest, depth), widest = std::max(widest, args);
      for (size_t t = 0; t + 1 < ex.target.size(); ++t) EXPECT_EQ(ex.target[t], -1);
      answers.insert(ex.target.back());
    }
    EXPECT_GE(answers.size(), 8u) << L;
    if (L >= 128) {
      EXPECT_GE(deepest, 4) << L;
      EXPECT_EQ(widest, 10) << L;
    }
  }
}

TEST(Tasks, SameSeedSameExamples) {
  for (const std::string& name : task_names()) {
    Rng a(7), b(7), c(8);
    const TaskSpec s = spec(name, 64, 32, name == "passkey" ? 5 : 4);
    const TaskExample x = make_task_example(s, a), y = make_task_example(s, b), z = make_task_example(s, c);
    EXPECT_EQ(x.input, y.input) << name;
    EXPECT_EQ(x.target, y.target) << name;
    EXPECT_EQ(x.x, y.x) << name;
    EXPECT_EQ(x.y.size(), y.y.size()) << name;  // NaN != NaN: compare the answers
    EXPECT_EQ(x.answers(), y.answers()) << name;
    if (x.real())
      EXPECT_NE(x.x, z.x) << name;
    else
      EXPECT_NE(x.input, z.input) << name;
  }
}

TEST(Tasks, ImpossibleSettingsAreOneLineErrors) {
  auto error_of = [](const TaskSpec& s) -> std::string {
    Rng rng(0);
    try {
      make_task_example(s, rng);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of(spec("mqar", 512, 63, 4)).find("must be even"), std::string::npos);
  EXPECT_NE(error_of(spec("mqar", 64, 64, 4)).find("larger than the sequence length"), std::string::npos);
  EXPECT_NE(error_of(spec("mqar", 512, 64, 17)).find("at least 68"), std::string::npos);
  EXPECT_NE(error_of(spec("selective_copy", 16, 10, 6)).find("at least 12"), std::string::npos);
  EXPECT_NE(error_of(spec("selective_copy", 2, 10, 2)).find("at least 3 tokens"), std::string::npos);
  EXPECT_NE(error_of(spec("induction", 16, 3, 0)).find("at least 4"), std::string::npos);
  EXPECT_NE(error_of(spec("passkey", 12, 64, 5)).find("more than 12 tokens"), std::string::npos);
  EXPECT_NE(error_of(spec("passkey", 64, 11, 5)).find("at least 12 tokens"), std::string::npos);
  EXPECT_NE(error_of(spec("listops", 16, 64, 0)).find("at least 17 tokens"), std::string::npos);
  EXPECT_NE(error_of(spec("listops", 20, 5, 0)).find("at least 6 tokens"), std::string::npos);
  EXPECT_NE(error_of(spec("copy", 16, 16, 2)).find("unknown task 'copy'"), std::string::npos);
}

TEST(Tasks, EvaluateCountsEveryAnswer) {
  REQUIRE_FIXTURES();
  auto model = load_model(hf_fixture("llama"));
  const TaskScore s = evaluate_task(*model, spec("mqar", 256, 64, 4), 5, 1);
  EXPECT_EQ(s.examples, 5);
  EXPECT_EQ(s.answers, 20);
  EXPECT_GE(s.correct, 0);
  EXPECT_LE(s.correct, 20);
  EXPECT_THROW(evaluate_task(*model, spec("mqar", 100000, 64, 4), 5, 1), Error);
}

TEST(Tasks, EvalCommand) {
  auto run = [](const std::string& args) {
    const CliResult r = run_braid("eval " + args);
    return std::make_tuple(r.rc, r.out, r.err);
  };
  auto [rc, out, err] =
      run("induction --model " + std::string(BRAID_SOURCE_DIR) + "/models/default --seq 32 -n 3 --json");
  EXPECT_EQ(rc, 0) << err;
  EXPECT_NE(out.find("\"answers\": 3"), std::string::npos) << out;
  std::tie(rc, out, err) = run("sorting --model " + std::string(BRAID_SOURCE_DIR) + "/models/default");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("unknown task 'sorting'"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

}  // namespace
