// The braid CLI end to end: bad input gives one line on stderr and exit code 2;
// verify passes on the fixtures; init -> inspect -> run works on a new model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cli_run.hpp"
#include "fixtures.hpp"
#include "io/json.hpp"

namespace {

using Result = CliResult;
Result braid(const std::string& args) { return run_braid(args); }

// Exit code 2, exactly one line on stderr, containing `what`.
void expect_usage_error(const Result& r, const std::string& what) {
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("braid: error: ", 0), 0u) << r.err;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

TEST(Cli, VerifyPassesOnSupportedFixtures) {
  REQUIRE_FIXTURES();
  for (const char* arch : {"llama", "qwen3", "mamba", "falcon_mamba", "mamba2", "bamba", "nemotron_h", "lfm2",
                           "jamba", "granitemoehybrid"}) {
    Result r = braid("verify --model " + hf_fixture(arch) + " --reference " + hf_fixture(arch) +
                     "/reference.safetensors");
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("greedy     16/16 tokens equal  ok"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("PASS"), std::string::npos);
  }
}

TEST(Cli, VerifyFailsBeyondTolerance) {
  REQUIRE_FIXTURES();
  // llama's logits differ from the reference by ~1e-6: a 1e-9 tolerance must fail.
  Result r = braid("verify --model " + hf_fixture("llama") + " --reference " + hf_fixture("llama") +
                   "/reference.safetensors --tolerance 1e-9");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("FAIL"), std::string::npos);
  // A reference from another model does not match either.
  r = braid("verify --model " + hf_fixture("llama") + " --reference " + hf_fixture("qwen3") +
            "/reference.safetensors");
  EXPECT_EQ(r.rc, 1) << r.out;
}

TEST(Cli, BadInputsAreOneLineErrorsWithExitCode2) {
  REQUIRE_FIXTURES();
  TempDir d;
  const std::string llama = hf_fixture("llama");
  { std::ofstream(d / "config.json") << R"({"model_type": "bert", "vocab_size": 8})"; }
  expect_usage_error(braid("run --model " + d.path.string() + " --prompt-ids 1"),
                     "unknown architecture 'bert'");
  std::filesystem::remove(d / "config.json");
  expect_usage_error(braid("run --model " + llama + " --prompt hello"), "tokenizer.json: missing");
  expect_usage_error(braid("run --model " + llama + " --prompt-ids 1,x"), "'x' is not a token id");
  expect_usage_error(braid("run --model " + llama + " --prompt-ids 1,999"), "outside the vocabulary");
  expect_usage_error(braid("run --model " + d.path.string() + " --prompt x"), "config.json: missing");
  expect_usage_error(braid("run --model /nonexistent --prompt x"), "not a directory");
  expect_usage_error(braid("verify --model " + llama + " --reference " + llama + "/config.json"),
                     "config.json");
  expect_usage_error(braid("run --model " + llama), "--prompt");
  expect_usage_error(braid("frobnicate"), "");
  expect_usage_error(braid("run --model " + llama + " --prompt-ids 1 --temperature -1"), "temperature");

  // Truncated and corrupt weights, bad config.
  const std::string m = d / "m";
  std::filesystem::create_directories(m);
  std::filesystem::copy_file(llama + "/config.json", m + "/config.json");
  std::filesystem::copy_file(llama + "/model.safetensors", m + "/model.safetensors");
  std::filesystem::resize_file(m + "/model.safetensors", 4000);
  expect_usage_error(braid("inspect --model " + m), "past the data buffer");
  { std::ofstream(m + "/model.safetensors", std::ios::binary) << "garbage!garbage!"; }
  expect_usage_error(braid("inspect --model " + m), "model.safetensors");
  { std::ofstream(m + "/config.json") << "{\"model_type\": \"llama\", \"vocab_size\": 384"; }
  expect_usage_error(braid("inspect --model " + m), "invalid JSON");
  { std::ofstream(m + "/config.json") << "{\"model_type\": \"llama\"}"; }
  expect_usage_error(braid("inspect --model " + m), "field 'vocab_size' is missing");
}

TEST(Cli, InitInspectRunOnANewModel) {
  TempDir d;
  const std::string spec = d / "spec.json";
  braid::write_json_file(
      spec, {{"vocab_size", 260},
             {"d_model", 32},
             {"mlp", {{"hidden", 64}}},
             {"layers",
              {{"pattern", {{{"mixer", {{"type", "attention"}, {"n_heads", 2}, {"head_dim", 16}}}}}},
               {"repeat", 2}}}});
  Result r = braid("init --spec " + spec + " --out " + (d / "m") + " --seed 5 --byte-tokenizer");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = braid("inspect --model " + (d / "m") + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  braid::json j = braid::json::parse(r.out);
  EXPECT_EQ(j["layers"].size(), 2u);
  EXPECT_EQ(j["kv_bytes_per_token"].get<int64_t>(), 2 * 2 * 2 * 16 * 4);
  // Seeded sampling is reproducible; greedy output is a continuation of the prompt.
  Result a =
      braid("run --model " + (d / "m") + " --prompt " + q("Hello") + " -n 12 --temperature 0.9 --seed 3");
  Result b =
      braid("run --model " + (d / "m") + " --prompt " + q("Hello") + " -n 12 --temperature 0.9 --seed 3");
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out.rfind("Hello", 0), 0u);
  expect_usage_error(braid("run --model " + (d / "m") + " --prompt ''"), "prompt is empty");
  // A spec with an unknown mixer is refused.
  braid::write_json_file(
      spec, {{"vocab_size", 260}, {"d_model", 32}, {"layers", {{{"mixer", {{"type", "lstm"}}}}}}});
  expect_usage_error(braid("init --spec " + spec + " --out " + (d / "m2")), "unknown mixer type 'lstm'");
}

// braid bench --json: the bytes a token writes (each recurrent state in full, one position of
// KV cache) on top of those it reads, and the fraction of the same limit they give.
TEST(Cli, BenchCountsTheStatesWriteBack) {
  TempDir d;
  const std::string spec = d / "spec.json";
  braid::write_json_file(
      spec, {{"vocab_size", 260},
             {"d_model", 32},
             {"layers",
              {{{"mixer", {{"type", "attention"}, {"n_heads", 2}, {"head_dim", 16}}}},
               {{"mixer", {{"type", "mamba2"}, {"n_heads", 4}, {"head_dim", 16}, {"d_state", 8}}}}}}});
  Result r = braid("init --spec " + spec + " --out " + (d / "m") + " --seed 5 --byte-tokenizer");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = braid("inspect --model " + (d / "m") + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const braid::json info = braid::json::parse(r.out);
  r = braid("bench --model " + (d / "m") + " --prompt-len 4 --decode 2 --runs 1 --threads 1 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const braid::json j = braid::json::parse(r.out);
  const double reads = j["decode_bytes_per_token"].get<double>();
  const double traffic = j["decode_traffic_bytes_per_token"].get<double>();
  // state_bytes_per_sequence: the recurrent states, whose size does not grow with the context
  const double kv = info["kv_bytes_per_token"].get<double>(),
               state = info["state_bytes_per_sequence"].get<double>();
  ASSERT_GT(kv, 0);
  ASSERT_GT(state, 0);
  EXPECT_DOUBLE_EQ(traffic - reads, state + kv);
  EXPECT_NEAR(j["decode_traffic_fraction"].get<double>() / j["decode_roofline_fraction"].get<double>(),
              traffic / reads, 1e-9);
}

// braid quantize writes a model that loads and runs; braid verify --against reports what
// it costs on a text (nothing for a model against itself); bad requests are one-line errors.
TEST(Cli, QuantizeAndVerifyQuality) {
  TempDir d;
  const std::string def = std::string(BRAID_SOURCE_DIR) + "/models/default";
  const std::string text = d / "text.txt";
  {
    std::ofstream out(text);
    for (int i = 0; i < 20; ++i)
      out << "In the beginning God created the heaven and the earth. And the earth was without form, and "
             "void; and darkness was upon the face of the deep.\n";
  }
  Result r = braid("quantize --model " + def + " --format q8_0 --out " + (d / "q8"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("as Q8_0"), std::string::npos) << r.out;
  r = braid("run --model " + (d / "q8") + " --prompt " + q("And God said") + " -n 8");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = braid("verify --model " + def + " --against " + def + " --text " + text + " --window 64 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  braid::json same = braid::json::parse(r.out);
  EXPECT_EQ(same["logits_max_abs_error"].get<double>(), 0.0);
  EXPECT_EQ(same["perplexity_change_percent"].get<double>(), 0.0);
  EXPECT_EQ(same["top1_agreement"].get<double>(), 1.0);
  r = braid("verify --model " + (d / "q8") + " --against " + def + " --text " + text + " --window 64 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  braid::json q8 = braid::json::parse(r.out);
  EXPECT_GT(q8["logits_max_abs_error"].get<double>(), 0.0);
  EXPECT_LT(std::abs(q8["perplexity_change_percent"].get<double>()), 5.0) << r.out;
  // --decode: the quantized model reads the text one token at a time (int8 activations, on by
  // default, and with them off).
  for (const char* int8 : {"1", "0"}) {
    ::setenv("BRAID_INT8_ACTIVATIONS", int8, 1);
    r = braid("verify --model " + (d / "q8") + " --against " + def + " --text " + text +
              " --window 64 --decode --json");
    ASSERT_EQ(r.rc, 0) << r.err;
    const braid::json dec = braid::json::parse(r.out);
    EXPECT_TRUE(dec["decode"].get<bool>());
    EXPECT_GT(dec["logits_max_abs_error"].get<double>(), 0.0);
    EXPECT_LT(std::abs(dec["perplexity_change_percent"].get<double>()), 5.0) << r.out;
  }
  // The f32 model decodes exactly as it prefills; a setting that is not 0 or 1 is reported
  // (by the first int8 product) and the default kept.
  r = braid("verify --model " + def + " --against " + def + " --text " + text +
            " --window 64 --decode --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_LT(braid::json::parse(r.out)["logits_max_abs_error"].get<double>(), 1e-3) << r.out;
  ::setenv("BRAID_INT8_ACTIVATIONS", "2", 1);
  r = braid("run --model " + (d / "q8") + " --prompt-ids 1,2,3 -n 2");
  ::unsetenv("BRAID_INT8_ACTIVATIONS");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("BRAID_INT8_ACTIVATIONS=2 is not 0 or 1"), std::string::npos) << r.err;

  expect_usage_error(braid("quantize --model " + def + " --format q5_1 --out " + (d / "x")),
                     "unknown weight format 'q5_1'");
  expect_usage_error(braid("quantize --model " + def + " --format q8_0 --out " + def),
                     "source model's directory");
  expect_usage_error(braid("quantize --model " + def + " --format q4_0 --out " + (d / "q8")), "--overwrite");
  expect_usage_error(braid("verify --model " + def + " --text " + text), "--against");
  expect_usage_error(braid("verify --model " + def + " --decode --reference " + text),
                     "--decode needs --against");
  expect_usage_error(braid("verify --model " + def + " --against " + def + " --text " + (d / "none.txt")),
                     "cannot read");
  // The kernels can be lowered to another path; a name that is not one is reported, not fatal.
  ::setenv("BRAID_ISA", "scalar", 1);
  Result scalar = braid("run --model " + (d / "q8") + " --prompt-ids 1,2,3 -n 4");
  ::setenv("BRAID_ISA", "sse9", 1);
  Result bogus = braid("run --model " + (d / "q8") + " --prompt-ids 1,2,3 -n 4");
  ::unsetenv("BRAID_ISA");
  EXPECT_EQ(scalar.rc, 0) << scalar.err;
  EXPECT_EQ(bogus.rc, 0) << bogus.err;
  EXPECT_NE(bogus.err.find("BRAID_ISA=sse9 is not scalar, avx2 or avx512"), std::string::npos) << bogus.err;
  // How far ahead the weight kernels ask for lines changes no value; a setting that is not a
  // distance is reported, not fatal.
  const std::string ids = "run --model " + (d / "q8") + " --prompt-ids 1,2,3 -n 4";
  const Result plain = braid(ids);
  ASSERT_EQ(plain.rc, 0) << plain.err;
  for (const char* v : {"0", "65536", "100"}) {
    ::setenv("BRAID_STREAM_PREFETCH", v, 1);
    const Result p = braid(ids);
    ::unsetenv("BRAID_STREAM_PREFETCH");
    ASSERT_EQ(p.rc, 0) << p.err;
    EXPECT_EQ(p.out, plain.out) << v;
    EXPECT_EQ(p.err.find("BRAID_STREAM_PREFETCH") != std::string::npos, std::string(v) == "100") << p.err;
  }
  // --overwrite replaces the 8-bit model with a 4-bit one, which runs.
  r = braid("quantize --model " + def + " --format q4_0 --out " + (d / "q8") + " --overwrite");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = braid("run --model " + (d / "q8") + " --prompt-ids 1,2,3 -n 2");
  EXPECT_EQ(r.rc, 0) << r.err;
}

}  // namespace
