// braid init: a randomly initialised model from a braid spec file.
#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"
#include "import/save.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "tokenizer/byte_tokenizer.hpp"

namespace braid::cli {

namespace {

struct InitArgs {
  std::string spec, out;
  uint64_t seed = 0;
  double std = 0.02;
  bool byte_tokenizer = false;
};

void init(const InitArgs& a) {
  ModelSpec spec = spec_from_json(read_json_file(a.spec), a.spec);
  Weights w = init_weights(spec, a.seed, a.std);
  save_model(a.out, spec, w);
  if (a.byte_tokenizer)
    write_json_file((std::filesystem::path(a.out) / "tokenizer.json").string(),
                    byte_level_tokenizer_json(spec.vocab_size));
  int64_t n = 0;
  for (const auto& kv : w) n += kv.second.numel();
  std::printf("wrote %s: %zu layers, %lld parameters, seed %llu (untrained)\n", a.out.c_str(),
              spec.blocks.size(), (long long)n, (unsigned long long)a.seed);
}

}  // namespace

void add_init(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* c = app.add_subcommand(
      "init", "Write a randomly initialised model (config.json + safetensors) from a spec");
  c->add_option("--spec", a->spec, "braid spec JSON (see docs/training.md)")->required();
  c->add_option("--out", a->out, "Output directory")->required();
  c->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  c->add_option("--std", a->std, "Standard deviation of weight matrices")->capture_default_str();
  c->add_flag("--byte-tokenizer", a->byte_tokenizer,
              "Also write a byte-level tokenizer.json (vocab_size >= 257)");
  c->callback([a, &exit_code] {
    init(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
