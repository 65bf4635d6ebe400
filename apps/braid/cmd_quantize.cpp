// braid quantize: a copy of a model with its projection matrices in a compact format.
#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "import/load.hpp"
#include "import/quantize.hpp"
#include "import/save.hpp"

namespace braid::cli {

namespace {

struct QuantizeArgs {
  std::string model, format, out;
  bool overwrite = false;
  int threads = 0;
};

// Files of a model directory that describe its text side; copied unchanged.
const char* const kSideFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "chat_template.jinja", "generation_config.json"};

void quantize(const QuantizeArgs& a) {
  namespace fs = std::filesystem;
  set_num_threads(a.threads);
  const DType format = parse_weight_format(a.format);
  std::error_code ec;
  check(!fs::exists(a.out) || !fs::equivalent(a.model, a.out, ec), a.out,
        ": is the source model's directory; give another --out");
  check(a.overwrite || !fs::exists(fs::path(a.out) / "config.json"), a.out,
        ": already holds a model (config.json); pass --overwrite to replace it");
  std::unique_ptr<Model> model = load_model(a.model);
  QuantizedWeights q = quantize_weights(*model, format);
  save_model(a.out, model->spec(), q.weights);
  for (const char* f : kSideFiles) {
    const fs::path src = fs::path(a.model) / f;
    if (!fs::exists(src)) continue;
    fs::copy_file(src, fs::path(a.out) / f, fs::copy_options::overwrite_existing, ec);
    check(!ec, a.out, ": cannot copy ", f, ": ", ec.message());
  }
  std::printf("wrote %s: %lld matrices as %s, %.1f MiB -> %.1f MiB of weights\n", a.out.c_str(),
              (long long)q.matrices, dtype_name(format), double(q.bytes_before) / (1 << 20),
              double(q.bytes_after) / (1 << 20));
  if (!q.fallback.empty()) {
    std::printf("of which %zu as F16 (rows not a whole number of 32-value blocks):", q.fallback.size());
    for (size_t i = 0; i < q.fallback.size() && i < 4; ++i) std::printf(" %s", q.fallback[i].c_str());
    std::printf("%s\n", q.fallback.size() > 4 ? " ..." : "");
  }
}

}  // namespace

void add_quantize(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* c = app.add_subcommand(
      "quantize", "Copy a model with its projection matrices stored as bf16, f16, q8_0 or q4_0");
  c->add_option("--model", a->model, "Model directory (Hugging Face or braid format)")->required();
  c->add_option("--format", a->format, "f32, bf16, f16, q8_0 (8-bit, 32-value blocks) or q4_0 (4-bit)")
      ->required();
  c->add_option("--out", a->out, "Output directory (braid format)")->required();
  c->add_flag("--overwrite", a->overwrite, "Replace a model already in --out");
  c->add_option("--threads", a->threads, "Threads (0 = all cores)");
  c->callback([a, &exit_code] {
    quantize(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
