// The long-context runner: lengths parsed as users write them, the prompt streamed in chunks,
// recurrent state constant in context and a KV cache growing with it, and the two ways a
// length stops (time budget, memory) reported rather than run.
#include <gtest/gtest.h>

#include "fixtures.hpp"
#include "io/json.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/context_bench.hpp"
#include "train/trainer.hpp"

namespace braid {
namespace {

std::shared_ptr<const Model> task_model(const std::string& name) {
  const std::string path = std::string(BRAID_SOURCE_DIR) + "/bench/specs/tasks/" + name + ".json";
  const ModelSpec spec = spec_from_json(read_json_file(path), path);
  return std::make_shared<const Model>(spec, owned_copy(init_weights(spec, 3, 0.02)), name);
}

TEST(ContextBench, ParsesLengths) {
  EXPECT_EQ(parse_context_list("1k,4k,16k,64k,256k,1M"),
            (std::vector<int64_t>{1024, 4096, 16384, 65536, 262144, 1048576}));
  EXPECT_EQ(parse_context_list("100"), (std::vector<int64_t>{100}));
  for (const char* bad : {"", "4x", "1k,,2", "k", "-5", "1.5k", "0"})
    EXPECT_NE(error_of([&] { parse_context_list(bad); }).find("--context"), std::string::npos) << bad;
}

TEST(ContextBench, RecurrentStateIsConstantAndKvGrows) {
  ContextBenchOptions o;
  o.chunk = 96, o.decode = 4;
  auto mamba2 = task_model("mqar-d64-mamba2"), attn = task_model("mqar-d64-attention");
  const ContextPoint m1 = run_context_point(mamba2, 200, o), m2 = run_context_point(mamba2, 700, o);
  EXPECT_EQ(m1.status, "ok");
  EXPECT_EQ(m2.fed, 700);
  EXPECT_GT(m2.prefill_tokens_per_s, 0);
  EXPECT_GT(m2.decode_tokens_per_s, 0);
  EXPECT_EQ(m1.state_bytes, m2.state_bytes);
  EXPECT_EQ(m1.state_bytes, mamba2->fixed_state_bytes());
  const ContextPoint a1 = run_context_point(attn, 200, o), a2 = run_context_point(attn, 700, o);
  EXPECT_EQ(a2.status, "ok");
  EXPECT_GE(a2.state_bytes, size_t(704) * attn->state_bytes_per_token());
  EXPECT_GT(a2.state_bytes, a1.state_bytes);
}

TEST(ContextBench, StopsAtTheBudgetOrTheMemoryLimit) {
  auto m = task_model("mqar-d64-mamba2");
  ContextBenchOptions o;
  o.chunk = 64, o.decode = 2, o.max_seconds = 0;
  const ContextPoint t = run_context_point(m, 1000, o);
  EXPECT_EQ(t.status, "timeout");
  EXPECT_EQ(t.fed, 64);
  EXPECT_EQ(t.decode_tokens_per_s, 0);
  o.max_seconds = 600, o.memory_limit = 1 << 20;
  const ContextPoint oom = run_context_point(m, 1000, o);
  EXPECT_EQ(oom.status, "out_of_memory");
  EXPECT_EQ(oom.fed, 0);
  EXPECT_GT(oom.predicted_bytes, size_t(1) << 20);
}

TEST(ContextBench, SweepGrowsOneSessionThroughTheLengths) {
  ContextBenchOptions o;
  o.chunk = 96, o.decode = 4;
  auto mamba2 = task_model("mqar-d64-mamba2"), attn = task_model("mqar-d64-attention");
  std::vector<int64_t> reported;
  const std::vector<ContextPoint> m =
      run_context_sweep(mamba2, {200, 700}, o, [&](const ContextPoint& p) { reported.push_back(p.context); });
  EXPECT_EQ(reported, (std::vector<int64_t>{200, 700}));
  ASSERT_EQ(m.size(), 2u);
  for (const ContextPoint& p : m) {
    EXPECT_EQ(p.status, "ok");
    EXPECT_EQ(p.fed, p.context);  // prompt tokens; the decoded ones are counted apart
    EXPECT_GT(p.prefill_tokens_per_s, 0);
    EXPECT_GT(p.decode_tokens_per_s, 0);
    EXPECT_EQ(p.state_bytes, mamba2->fixed_state_bytes());
  }
  const std::vector<ContextPoint> a = run_context_sweep(attn, {200, 700}, o);
  // The cache holds the prompt and both lengths' decoded tokens.
  EXPECT_GE(a[1].state_bytes, size_t(700 + 2 * 4) * attn->state_bytes_per_token());
  EXPECT_GT(a[1].state_bytes, a[0].state_bytes);
  EXPECT_GT(a[1].predicted_bytes, a[0].predicted_bytes);

  o.max_seconds = 0;  // stops inside the first length; the rest are not reached
  const std::vector<ContextPoint> t = run_context_sweep(mamba2, {200, 700}, o);
  EXPECT_EQ(t[0].status, "timeout");
  EXPECT_EQ(t[0].fed, 96);
  EXPECT_EQ(t[1].status, "timeout");
  EXPECT_EQ(t[1].fed, 96);
  EXPECT_EQ(t[1].decode_tokens_per_s, 0);

  o.max_seconds = 600;  // the second length alone would exceed the limit
  o.memory_limit = (a[0].predicted_bytes + a[1].predicted_bytes) / 2;
  const std::vector<ContextPoint> mem = run_context_sweep(attn, {200, 700}, o);
  EXPECT_EQ(mem[0].status, "ok");
  EXPECT_EQ(mem[1].status, "out_of_memory");
  EXPECT_EQ(mem[1].fed, 0);

  for (const std::vector<int64_t>& bad : {std::vector<int64_t>{700, 200}, {200, 200}, {0, 5}})
    EXPECT_NE(error_of([&] { run_context_sweep(mamba2, bad, o); }).find("ascending"), std::string::npos);
}

}  // namespace
}  // namespace braid
