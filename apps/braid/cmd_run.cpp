// braid run: stream a completion for a prompt.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "import/load.hpp"
#include "runtime/generate.hpp"
#include "runtime/loop_exit.hpp"
#include "runtime/text_stream.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::cli {

namespace {

struct RunArgs {
  std::string model, prompt, prompt_ids;
  bool has_prompt = false;
  int64_t n = 64;
  float temperature = 0.0f, top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  int threads = 0;
  int64_t loops = 0;
  double loop_exit_tol = 0;  // > 0: choose the depth by the exit rule
  bool no_special = false;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      check(used == item.size() && v >= 0 && v < (1L << 31), "--prompt-ids: '", item, "' is not a token id");
      ids.push_back(int32_t(v));
    } catch (const std::logic_error&) {
      fail("--prompt-ids: '", item, "' is not a token id");
    }
  }
  return ids;
}

void run(RunArgs a) {
  set_num_threads(a.threads);
  check(a.has_prompt || !a.prompt_ids.empty(), "give --prompt TEXT or --prompt-ids 1,2,3");
  std::shared_ptr<const Model> model = load_model(a.model);
  const std::string tok_path = (std::filesystem::path(a.model) / "tokenizer.json").string();
  std::unique_ptr<Tokenizer> tok;
  if (std::filesystem::exists(tok_path)) tok = Tokenizer::load(tok_path);
  std::vector<int32_t> prompt;
  if (!a.prompt_ids.empty()) {
    prompt = parse_ids(a.prompt_ids);
  } else {
    check(tok != nullptr, tok_path,
          ": missing; the model has no tokenizer, so give --prompt-ids instead of --prompt");
    check(!a.prompt.empty(), "the prompt is empty");
    prompt = tok->encode(a.prompt, !a.no_special);
  }
  check(!prompt.empty(), "the prompt is empty after tokenization");
  check(a.n >= 0, "-n must be >= 0");

  GenerateOptions opt;
  opt.max_new_tokens = a.n;
  opt.sampling = {a.temperature, a.top_k, a.top_p, a.seed};
  opt.stop_ids = default_stop_ids(*model, tok.get());

  check(a.loops == 0 || model->spec().loop.enabled(), "--loops: the model has no looped blocks");
  if (a.loop_exit_tol != 0) {
    check(a.loops == 0, "--loops and --loop-exit-tol exclude each other: give a depth or a rule");
    const LoopExit e = loops_by_convergence(*model, prompt.data(), int64_t(prompt.size()), a.loop_exit_tol);
    std::string changes;
    for (double r : e.change) changes += (changes.empty() ? "" : " ") + std::to_string(r);
    std::fprintf(
        stderr,
        "loops: %lld (exit rule: the first iteration changing the stream by less than %g; changes %s)\n",
        (long long)e.loops, a.loop_exit_tol, changes.c_str());
    a.loops = e.loops;
  }
  Session s(model, a.loops);
  if (tok && !a.prompt.empty()) std::fputs(a.prompt.c_str(), stdout);
  TextStream text(tok.get());
  generate(s, prompt, opt, [&](int32_t id) {
    std::fputs(text.push(id).c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputs(text.finish().c_str(), stdout);
  std::printf("\n");
}

}  // namespace

void add_run(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* c = app.add_subcommand("run", "Generate text from a prompt, streaming tokens as they are chosen");
  c->add_option("--model", a->model, "Model directory (config.json, safetensors, tokenizer.json)")
      ->required();
  auto* p = c->add_option("--prompt", a->prompt, "Prompt text");
  c->add_option("--prompt-ids", a->prompt_ids,
                "Prompt as comma-separated token ids (models without a tokenizer)");
  c->add_option("-n,--max-tokens", a->n, "Tokens to generate")->capture_default_str();
  c->add_option("--temperature", a->temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  c->add_option("--top-p", a->top_p, "Nucleus sampling mass")->capture_default_str();
  c->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  c->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0 = all cores)")->capture_default_str();
  c->add_option("--loops", a->loops, "Iterations of a looped model's core (0 = the model's default)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--loop-exit-tol", a->loop_exit_tol,
                "Looped models: choose the depth from the prompt, stopping before the first iteration that "
                "changes the stream by less than this (relative)");
  c->add_flag("--no-special", a->no_special, "Do not add the tokenizer's special tokens (e.g. BOS)");
  c->callback([a, p, &exit_code] {
    a->has_prompt = p->count() > 0;
    run(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
