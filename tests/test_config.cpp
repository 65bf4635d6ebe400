// config.json parsing and model loading: real-world quirks and clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/error.hpp"
#include "fixtures.hpp"
#include "import/hf/importer.hpp"
#include "import/load.hpp"
#include "import/save.hpp"
#include "io/json.hpp"
#include "io/safetensors.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/session.hpp"

using namespace braid;

namespace {

// A copy of a fixture model directory whose files the test may modify.
std::string copy_fixture(const TempDir& d, const std::string& arch) {
  const std::string out = d / arch;
  std::filesystem::create_directories(out);
  for (const char* f : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(hf_fixture(arch) + "/" + f, out + "/" + f);
  return out;
}

TEST(Config, ReadsFloatSpellingsOfNonFiniteValues) {
  REQUIRE_FIXTURES();
  json j = read_json_file(hf_fixture("mamba2") + "/config.json");
  JsonObject o(j, "mamba2/config.json");
  ASSERT_TRUE(j["time_step_limit"].is_array());
  EXPECT_TRUE(std::isinf(json_to_double(j["time_step_limit"][1], "time_step_limit[1]")));
  EXPECT_EQ(json_to_double(j["time_step_limit"][0], "time_step_limit[0]"), 0.0);
  EXPECT_TRUE(std::isnan(json_to_double(json{{"__float__", "NaN"}}, "x")));
  EXPECT_NE(error_of([] {
              json_to_double(json{{"__float__", "lots"}}, "x");
            }).find("lots"),
            std::string::npos);
}

// Found by fuzz_tokenizer: a number beyond double's range escaped as nlohmann's own exception.
TEST(Config, NumberOverflowIsInvalidJson) {
  const std::string e = error_of([] { parse_json("{\"a\": 7E7777777777}", "tokenizer.json"); });
  EXPECT_NE(e.find("tokenizer.json: invalid JSON: number overflow"), std::string::npos) << e;
}

// Found by fuzz_config: num_attention_heads = 0 in a Jamba config divided by zero. Every
// integer field (nested ones too) of every fixture's config.json, set to values a
// hand-edited or corrupt file may hold, must give a model spec or braid's one-line error;
// under the sanitizer build this also rules out division by zero and overflow.
TEST(Config, EveryIntegerFieldSurvivesOddValues) {
  REQUIRE_FIXTURES();
  TempDir d;
  int refused = 0, loaded = 0;
  std::vector<std::filesystem::path> configs;
  for (const auto& entry : std::filesystem::directory_iterator(fixtures_dir() + "/hf"))
    configs.push_back(entry.path() / "config.json");
  configs.push_back(std::filesystem::path(BRAID_SOURCE_DIR) /
                    "models/default/config.json");  // braid's format
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(std::string(BRAID_SOURCE_DIR) + "/bench/specs"))
    if (entry.path().extension() == ".json" && entry.path().filename().string().rfind("train-", 0) != 0)
      configs.push_back(entry.path());
  for (const auto& config : configs) {
    const json original = read_json_file(config.string());
    // Paths (as JSON pointers) of every integer in the config.
    std::vector<json::json_pointer> ints;
    const json flat = original.flatten();
    for (const auto& [ptr, v] : flat.items())
      if (v.is_number_integer()) ints.emplace_back(ptr);
    ASSERT_FALSE(ints.empty()) << config;
    for (const auto& ptr : ints)
      for (const int64_t value :
           {int64_t(0), int64_t(-1), int64_t(3), (int64_t(1) << 31) - 1, int64_t(1) << 40}) {
        json j = original;
        j[ptr] = value;
        write_json_file(d / "config.json", j);
        const std::string what = config.string() + ptr.to_string() + " = " + std::to_string(value);
        try {
          (void)load_spec(d.path.string());
          ++loaded;
        } catch (const Error&) {
          ++refused;
        } catch (const std::exception& e) {
          ADD_FAILURE() << what << ": " << e.what();
        }
      }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(loaded, 0);
  const std::string e = error_of([&] {
    json j = read_json_file(hf_fixture("jamba") + "/config.json");
    j["num_attention_heads"] = 0;
    write_json_file(d / "config.json", j);
    (void)load_spec(d.path.string());
  });
  EXPECT_NE(e.find("field 'num_attention_heads' should be a positive integer, found 0"), std::string::npos)
      << e;
  EXPECT_NE(error_of([&] {
              json j = read_json_file(hf_fixture("llama") + "/config.json");
              j["hidden_size"] = int64_t(1) << 40;
              write_json_file(d / "config.json", j);
              (void)load_spec(d.path.string());
            }).find("field 'hidden_size' = 1099511627776 is out of range"),
            std::string::npos);
}

TEST(Config, MissingAndWrongTypedFieldsAreNamed) {
  json j = {{"hidden_size", "64"}, {"n", 3.5}, {"flag", 1}};
  JsonObject o(j, "config.json");
  EXPECT_EQ(error_of([&] { o.get_int("vocab_size"); }), "config.json: field 'vocab_size' is missing");
  EXPECT_EQ(error_of([&] { o.get_int("hidden_size"); }),
            "config.json: field 'hidden_size' should be an integer, found a string");
  EXPECT_NE(error_of([&] { o.get_int("n"); }).find("should be an integer"), std::string::npos);
  EXPECT_NE(error_of([&] { o.get_bool("flag", false); }).find("should be a boolean"), std::string::npos);
  EXPECT_EQ(o.get_int("absent", 7), 7);
}

TEST(Config, LlamaImportReadsRopeAndHeads) {
  json j = {{"model_type", "llama"},
            {"vocab_size", 100},
            {"hidden_size", 64},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 8},
            {"num_key_value_heads", 2},
            {"intermediate_size", 128},
            {"rope_theta", 500000.0},
            {"partial_rotary_factor", 0.5},
            {"rope_scaling",
             {{"rope_type", "llama3"},
              {"factor", 8.0},
              {"low_freq_factor", 1.0},
              {"high_freq_factor", 4.0},
              {"original_max_position_embeddings", 8192}}}};
  hf::Import im = hf::find_importer("llama")->fn(JsonObject(j, "config.json"));
  const AttentionSpec& a = im.spec.blocks[0].attn;
  EXPECT_EQ(a.head_dim, 8);
  EXPECT_EQ(a.n_kv_heads, 2);
  EXPECT_EQ(a.rope.rotary_dim, 4);
  EXPECT_EQ(a.rope.type, "llama3");
  EXPECT_EQ(a.rope.theta, 500000.0);
  EXPECT_EQ(im.tensor_name("blocks.1.attn.q_proj.weight"), "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(im.tensor_name("blocks.0.norm2.weight"), "model.layers.0.post_attention_layernorm.weight");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of([&] {
              hf::find_importer("llama")->fn(JsonObject(j, "config.json"));
            }).find("'yarn' is not supported"),
            std::string::npos);
}

TEST(ModelLoad, UnknownArchitectureIsNamed) {
  TempDir d;
  { std::ofstream(d / "config.json") << R"({"model_type": "bert", "vocab_size": 8})"; }
  const std::string m = error_of([&] { load_model(d.path.string()); });
  EXPECT_NE(m.find("unknown architecture 'bert'"), std::string::npos) << m;
}

TEST(ModelLoad, ZooImportersNameWhatTheyRefuse) {
  REQUIRE_FIXTURES();
  // Each case edits one config field of a fixture and expects a one-line error naming it.
  struct Case {
    const char* arch;
    std::function<void(json&)> edit;
    const char* expect;
  };
  const Case cases[] = {
      {"qwen3_next", [](json& j) { j["layer_types"][1] = "mamba"; },
       "layer_types[1] = 'mamba' is not supported"},
      {"qwen3_next", [](json& j) { j["linear_num_value_heads"] = 3; },
       "n_v_heads 3 is not a multiple of n_k_heads 2"},
      {"falcon_h1", [](json& j) { j["mamba_d_ssm"] = 96; }, "mamba_d_ssm = 96"},
      {"falcon_h1",
       [](json& j) {
         j["ssm_multipliers"] = {1.0, 2.0};
       },
       "ssm_multipliers must be a list of 5"},
      {"xlstm", [](json& j) { j["weight_mode"] = "fused"; }, "weight_mode 'fused' is not supported"},
      {"recurrent_gemma",
       [](json& j) {
         j["block_types"] = {"recurrent", "mlp"};
       },
       "block type 'mlp'"},
      {"minimax", [](json& j) { j["layer_types"] = {"linear_attention"}; },
       "layer_types has 1 entries for 4"},
      {"rwkv", [](json& j) { j["rescale_every"] = -1; }, "rescale_every must be >= 0"},
  };
  for (const Case& c : cases) {
    TempDir d;
    const std::string dir = copy_fixture(d, c.arch);
    json j = read_json_file(dir + "/config.json");
    c.edit(j);
    write_json_file(dir + "/config.json", j);
    const std::string m = error_of([&] { load_model(dir); });
    EXPECT_NE(m.find(c.expect), std::string::npos) << c.arch << ": " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(ModelLoad, ShapeDtypeAndMissingTensorErrors) {
  REQUIRE_FIXTURES();
  TempDir d;
  const std::string dir = copy_fixture(d, "llama");
  auto load_modified = [&](const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit) {
    auto f = SafetensorsFile::open(hf_fixture("llama") + "/model.safetensors");
    std::vector<std::pair<std::string, Tensor>> ts;
    for (const auto& ti : f->tensors()) ts.emplace_back(ti.name, f->get(ti.name));
    edit(ts);
    write_safetensors(dir + "/model.safetensors", ts);
    return error_of([&] { load_model(dir); });
  };
  std::string m = load_modified([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.self_attn.q_proj.weight") t = Tensor::zeros(DType::F32, {32, 64});
  });
  EXPECT_NE(m.find("'model.layers.0.self_attn.q_proj.weight' has shape [32, 64], expected [64, 64]"),
            std::string::npos)
      << m;
  m = load_modified([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.norm.weight") t = Tensor::zeros(DType::I32, {64});
  });
  EXPECT_NE(m.find("dtype I32"), std::string::npos) << m;
  m = load_modified(
      [](auto& ts) { std::erase_if(ts, [](const auto& p) { return p.first == "lm_head.weight"; }); });
  EXPECT_NE(m.find("no tensor 'lm_head.weight'"), std::string::npos) << m;
  // BF16 weights load (converted to F32) and still give close logits.
  m = load_modified([](auto& ts) {
    for (auto& [n, t] : ts) {
      Tensor b = Tensor::zeros(DType::BF16, t.shape());
      for (int64_t i = 0; i < t.numel(); ++i) b.data_mut<uint16_t>()[i] = f32_to_bf16(t.f32()[i]);
      t = b;
    }
  });
  EXPECT_EQ(m, "");
}

TEST(ModelLoad, TruncatedWeightsFile) {
  REQUIRE_FIXTURES();
  TempDir d;
  const std::string dir = copy_fixture(d, "qwen3");
  std::filesystem::resize_file(dir + "/model.safetensors", 100000);
  const std::string m = error_of([&] { load_model(dir); });
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
  EXPECT_NE(m.find("past the data buffer"), std::string::npos) << m;
}

TEST(SpecJson, PatternExpandsAndRoundTrips) {
  json j = {{"vocab_size", 300},
            {"d_model", 32},
            {"mlp", {{"hidden", 64}}},
            {"mixers",
             {{"a", {{"type", "attention"}, {"n_heads", 4}, {"n_kv_heads", 2}, {"head_dim", 8}}},
              {"w", {{"type", "attention"}, {"n_heads", 2}, {"head_dim", 16}, {"sliding_window", 16}}}}},
            {"layers", {{"pattern", {"w", "w", "a"}}, {"repeat", 2}}}};
  ModelSpec s = spec_from_json(j, "spec.json");
  ASSERT_EQ(s.blocks.size(), 6u);
  EXPECT_EQ(s.blocks[0].attn.sliding_window, 16);
  EXPECT_EQ(s.blocks[2].attn.n_kv_heads, 2);
  ModelSpec r = spec_from_json(spec_to_json(s), "round-trip");
  EXPECT_EQ(spec_to_json(r), spec_to_json(s));
  j["layers"] = {"zzz"};
  EXPECT_NE(error_of([&] { spec_from_json(j, "spec.json"); }).find("mixer 'zzz' is not defined"),
            std::string::npos);
  j["layers"] = {{{"mixer", {{"type", "mamba9"}}}}};
  EXPECT_NE(error_of([&] { spec_from_json(j, "spec.json"); }).find("unknown mixer type 'mamba9'"),
            std::string::npos);
}

TEST(SpecJson, InitSaveLoadGivesTheSameModel) {
  json j = {{"vocab_size", 300},
            {"d_model", 32},
            {"tie_embeddings", false},
            {"mlp", {{"hidden", 48}}},
            {"layers",
             {{{"mixer", {{"type", "attention"}, {"n_heads", 2}, {"head_dim", 16}, {"qk_norm", true}}}},
              {{"mixer", {{"type", "mamba"}, {"d_state", 8}, {"bcdt_norm_eps", 1e-6}}}, {"mlp", nullptr}}}}};
  ModelSpec s = spec_from_json(j, "spec.json");
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.blocks[1].mamba.d_inner, 64);  // expand 2 x d_model
  EXPECT_EQ(s.blocks[1].mamba.dt_rank, 2);   // ceil(32 / 16)
  EXPECT_FALSE(s.blocks[1].has_mlp);
  EXPECT_EQ(spec_to_json(spec_from_json(spec_to_json(s), "round-trip")), spec_to_json(s));
  Weights w = init_weights(s, 3);
  EXPECT_FLOAT_EQ(w.at("blocks.1.mamba.A_log").f32()[9], std::log(2.0f));  // row 1, state 1
  TempDir d;
  save_model(d / "m", s, w);
  auto m = load_model(d / "m");
  for (const auto& [name, t] : w) {
    const Tensor& u = m->weights().at(name);
    ASSERT_EQ(u.shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(u.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  EXPECT_EQ(init_weights(s, 3).at("embed.weight").f32()[5], w.at("embed.weight").f32()[5]);  // deterministic
}

}  // namespace

namespace {

// A freshly initialised hybrid runs, and its chunked prefill equals token-by-token decode.
TEST(SpecJson, InitialisedHybridPrefillEqualsDecode) {
  json j = {
      {"vocab_size", 64},
      {"d_model", 32},
      {"mlp", {{"hidden", 48}}},
      {"mixers",
       {{"m", {{"type", "mamba"}, {"chunk", 8}}},
        {"s", {{"type", "mamba2"}, {"head_dim", 8}, {"d_state", 8}, {"n_groups", 2}, {"chunk", 6}}},
        {"d",
         {{"type", "gated_deltanet"}, {"n_k_heads", 2}, {"n_v_heads", 4}, {"head_k_dim", 8}, {"chunk", 5}}},
        {"g", {{"type", "gla"}, {"n_heads", 2}, {"head_k_dim", 8}, {"gate_rank", 4}, {"chunk", 9}}},
        {"l", {{"type", "lightning"}, {"n_heads", 2}, {"head_dim", 8}, {"chunk", 7}}},
        {"r", {{"type", "rglru"}, {"n_heads", 2}}},
        {"x", {{"type", "mlstm"}, {"n_heads", 2}, {"chunk", 6}}},
        {"a", {{"type", "attention"}, {"n_heads", 2}, {"head_dim", 16}, {"output_gate", true}}}}},
      {"layers",
       {{"pattern",
         {"m",
          "s",
          "d",
          "g",
          "l",
          "r",
          "x",
          "a",
          {{"mixer", {{"type", "gated_deltanet"}, {"n_k_heads", 2}, {"head_k_dim", 8}}},
           {"moe",
            {{"n_experts", 4}, {"top_k", 2}, {"hidden", 16}, {"shared_hidden", 8}, {"shared_gate", true}}}}}},
        {"repeat", 1}}}};
  ModelSpec s = spec_from_json(j, "spec.json");
  EXPECT_EQ(s.blocks[1].mamba2.n_heads, 8);  // expand 2 x 32 / head_dim 8
  EXPECT_TRUE(s.blocks[8].has_moe && !s.blocks[8].has_mlp);
  EXPECT_EQ(spec_to_json(spec_from_json(spec_to_json(s), "round-trip")), spec_to_json(s));
  auto model = std::make_shared<Model>(s, init_weights(s, 11, 0.2), "init");
  std::vector<int32_t> ids(50);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % 64);
  Session a(model), b(model);
  std::vector<float> all = a.feed_all(ids.data(), 50);
  for (int64_t t = 0; t < 50; ++t) {
    const auto& l = b.feed(ids.data() + t, 1);
    for (int64_t v = 0; v < 64; ++v) ASSERT_NEAR(l[size_t(v)], all[size_t(t * 64 + v)], 1e-4) << t;
  }
}

}  // namespace

// Every spec the repository ships (bench/specs, the documented experiments) parses, and its
// parameter list is what a model of it declares.
TEST(SpecJson, BundledSpecsAreValid) {
  int n = 0;
  for (const auto& e :
       std::filesystem::recursive_directory_iterator(std::string(BRAID_SOURCE_DIR) + "/bench/specs")) {
    if (e.path().extension() != ".json") continue;
    ++n;
    try {
      const ModelSpec s = spec_from_json(read_json_file(e.path().string()), e.path().string());
      EXPECT_FALSE(param_decls(s).empty()) << e.path();
    } catch (const Error& err) {
      ADD_FAILURE() << err.what();
    }
  }
  EXPECT_GE(n, 20);
}
