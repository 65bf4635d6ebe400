// braid train end to end: a run killed with SIGKILL and resumed logs exactly the losses
// of an uninterrupted run; bad specs, corpora and checkpoints are one-line errors, and a
// corrupt checkpoint is never overwritten.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "fixtures.hpp"
#include "io/json.hpp"

namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Result {
  int rc;
  std::string err;
};

Result braid(const std::string& args, const TempDir& d) {
  const std::string cmd =
      std::string(BRAID_BINARY) + " " + args + " >/dev/null 2>" + (d / "err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(d / "err")};
}

const char* kSpec = R"({
  "name": "cli-hybrid", "vocab_size": 260, "d_model": 32, "tie_embeddings": true, "eos_token_id": 256,
  "mixers": {
    "gdn": {"type": "gated_deltanet", "n_k_heads": 2, "head_k_dim": 8, "chunk": 8},
    "attn": {"type": "attention", "n_heads": 2, "head_dim": 16}
  },
  "mlp": {"hidden": 64},
  "layers": {"pattern": ["gdn", "gdn", "gdn", "attn"], "repeat": 1}
})";

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string corpus(const TempDir& d) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "line " + std::to_string(i * 7 % 31) + " of a small corpus.\n";
  write(d / "corpus.txt", text);
  return d / "corpus.txt";
}

// step -> `field` (loss, val_loss) from a metrics log, for the records that have it.
std::map<int64_t, double> losses(const std::string& path, const char* field = "loss") {
  std::map<int64_t, double> m;
  std::istringstream in(slurp(path));
  std::string line;
  while (std::getline(in, line)) {
    braid::json j = braid::json::parse(line);
    if (j.contains(field)) m[j["step"].get<int64_t>()] = j[field].get<double>();
  }
  return m;
}

std::string train_args(const TempDir& d, const std::string& out, int steps) {
  return "train --spec " + (d / "spec.json") + " --data " + corpus(d) + " --byte-tokenizer --out " + out +
         " --steps " + std::to_string(steps) +
         " --batch 2 --seq 32 --lr 3e-3 --warmup 3 --save-every 5 --eval-every 20 --quiet";
}

TEST(CliTrain, KilledRunResumesWithIdenticalLosses) {
  TempDir d;
  write(d / "spec.json", kSpec);
  const int steps = 80;
  ASSERT_EQ(braid(train_args(d, d / "straight", steps), d).rc, 0) << slurp(d / "err");
  const auto want = losses(d / "straight/metrics.jsonl");
  ASSERT_EQ(want.size(), size_t(steps));
  // Start the same run, SIGKILL it after step 12 (a checkpoint was written at step 10),
  // then resume.
  const std::string cmd = std::string(BRAID_BINARY) + " " + train_args(d, d / "killed", steps);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(), (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(d / "killed/metrics.jsonl") && losses(d / "killed/metrics.jsonl").size() >= 12) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_LT(losses(d / "killed/metrics.jsonl").size(), size_t(steps));
  Result r = braid("train --resume " + (d / "killed") + " --quiet", d);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("resuming"), std::string::npos) << r.err;
  EXPECT_EQ(losses(d / "killed/metrics.jsonl"), want);
  // The resumed run kept the evaluation cadence it was started with.
  const auto evals = losses(d / "straight/metrics.jsonl", "val_loss");
  EXPECT_EQ(evals.size(), 4u);
  EXPECT_EQ(losses(d / "killed/metrics.jsonl", "val_loss"), evals);
  // The trained model loads like any other.
  EXPECT_EQ(braid("run --model " + (d / "killed") + " --prompt line -n 4", d).rc, 0) << slurp(d / "err");
}

TEST(CliTrain, VerifyChecksLossAndGradients) {
  REQUIRE_FIXTURES();
  TempDir d;
  const std::string dir = hf_fixture("qwen3");
  Result r = braid("verify --model " + dir + " --reference " + dir + "/reference.safetensors --grads " + dir +
                       "/grads.safetensors",
                   d);
  EXPECT_EQ(r.rc, 0) << r.err;
}

TEST(CliTrain, BadInputsAreOneLineErrors) {
  TempDir d;
  auto expect_error = [&](const std::string& args, const std::string& what) {
    Result r = braid(args, d);
    EXPECT_EQ(r.rc, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  const std::string data = corpus(d);
  auto spec_with = [&](const std::string& from, const std::string& to) {
    std::string s = kSpec;
    s.replace(s.find(from), from.size(), to);
    write(d / "bad.json", s);
    return "train --spec " + (d / "bad.json") + " --data " + data + " --byte-tokenizer --out " + (d / "o1");
  };
  expect_error(spec_with("\"gated_deltanet\"", "\"hyena\""), "unknown mixer type 'hyena'");
  expect_error(spec_with("\"head_dim\": 16", "\"head_dim\": 0"), "head_dim");
  expect_error(spec_with("[\"gdn\", \"gdn\", \"gdn\", \"attn\"]", "[\"gdn\", \"mamba9\"]"), "mamba9");
  write(d / "spec.json", kSpec);
  const std::string base = "train --spec " + (d / "spec.json") + " --byte-tokenizer --out " + (d / "o2");
  write(d / "empty.txt", "");
  expect_error(base + " --data " + (d / "empty.txt"), "empty.txt: training data file is empty");
  expect_error(base + " --data " + (d / "nope.txt"), "nope.txt: cannot read training data");
  write(d / "tiny.txt", "hi");
  expect_error(base + " --data " + (d / "tiny.txt"), "too few");
  expect_error("train --resume " + (d / "nothing"), "nothing to resume");
  // A corrupt checkpoint: refused, and the file is left exactly as it was.
  ASSERT_EQ(braid(train_args(d, d / "run", 5), d).rc, 0) << slurp(d / "err");
  const std::string state = d / "run/train_state.safetensors";
  fs::resize_file(state, fs::file_size(state) - 100);
  const std::string before = slurp(state);
  expect_error("train --resume " + (d / "run"), "train_state.safetensors");
  EXPECT_EQ(slurp(state), before);
}

}  // namespace
