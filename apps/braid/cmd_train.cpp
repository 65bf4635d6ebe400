// braid train: train a model described by a braid spec on text files, with live
// progress, a JSONL metrics log, atomic checkpoints (every N steps and on SIGINT /
// SIGTERM) and exact resume.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/sysinfo.hpp"
#include "import/save.hpp"
#include "io/safetensors.hpp"
#include "io/text_file.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "tokenizer/byte_tokenizer.hpp"
#include "train/trainer.hpp"

namespace braid::cli {

namespace {

namespace fs = std::filesystem;

struct TrainArgs {
  std::string spec, out, resume, tokenizer, tokens;
  std::vector<std::string> data;
  bool byte_tokenizer = false;
  TrainOptions o;
  std::string decay = "cosine";
  double min_lr_ratio = 0.1;
  uint64_t init_seed = 0;
  double init_std = 0.02;
  int64_t log_every = 0;
  int threads = 0;
  bool quiet = false, steps_set = false, eval_every_set = false, save_every_set = false;
};

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

// Keeps only the lines of a metrics log at or before `step` (a resumed run rewrites the
// steps after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  write_text_file(path, kept);
}

void save_all(const Trainer& tr, const std::string& out) {
  save_model(out, tr.model().spec(), tr.model().weights());
  tr.save_state((fs::path(out) / "train_state.safetensors").string());
}

void train(TrainArgs a) {
  set_num_threads(a.threads);
  const bool resuming = !a.resume.empty();
  const std::string out = resuming ? a.resume : a.out;
  check(!out.empty(), "give --out DIR for a new run or --resume DIR to continue one");
  const std::string state_path = (fs::path(out) / "train_state.safetensors").string();
  const std::string cache_path = (fs::path(out) / "tokens.bin").string();
  const std::string metrics_path = (fs::path(out) / "metrics.jsonl").string();
  ModelSpec spec;
  std::vector<int32_t> tokens;
  TrainOptions o = a.o;
  if (resuming) {
    check(fs::exists(state_path), state_path, ": missing (nothing to resume)");
    auto f = SafetensorsFile::open(state_path);
    const auto& meta = f->metadata();
    check(meta.count("braid.spec") && meta.count("braid.options"), state_path,
          ": not a braid training state (no spec / options metadata)");
    json sj = json::parse(meta.at("braid.spec"), nullptr, false);
    json oj = json::parse(meta.at("braid.options"), nullptr, false);
    check(!sj.is_discarded() && !oj.is_discarded(), state_path, ": spec / options metadata is not JSON");
    spec = spec_from_json(sj, state_path);
    const int64_t steps = o.steps;
    o = options_from_json(oj, state_path);
    // --steps may extend a resumed run; --eval-every / --save-every may change its cadence.
    if (a.steps_set) o.steps = steps;
    if (a.eval_every_set) o.eval_every = a.o.eval_every;
    if (a.save_every_set) o.save_every = a.o.save_every;
    tokens = read_token_cache(cache_path);
  } else {
    check(!a.spec.empty(), "give --spec SPEC.json for a new run");
    check(!fs::exists(state_path), state_path, ": exists; use --resume ", out, " to continue that run");
    spec = spec_from_json(read_json_file(a.spec), a.spec);
    check(parse_decay(a.decay, &o.schedule.decay), "--decay: '", a.decay,
          "' is not cosine, linear or constant");
    o.schedule.min_lr = o.schedule.lr * a.min_lr_ratio;
    std::unique_ptr<Tokenizer> tok;
    json tok_json;
    if (!a.tokens.empty()) {
      tokens = read_token_cache(a.tokens);
    } else {
      check(!a.tokenizer.empty() || a.byte_tokenizer, "give --tokenizer tokenizer.json or --byte-tokenizer");
      tok_json = a.byte_tokenizer ? byte_level_tokenizer_json(spec.vocab_size) : read_json_file(a.tokenizer);
      tok = Tokenizer::from_json(tok_json, a.byte_tokenizer ? "byte-level tokenizer" : a.tokenizer);
      check(tok->vocab_size() <= spec.vocab_size, "the tokenizer has ", tok->vocab_size(),
            " tokens but the spec's vocab_size is ", spec.vocab_size);
      int32_t sep = tok->token_id("<|endoftext|>");
      if (sep < 0 && !spec.eos_token_ids.empty()) sep = int32_t(spec.eos_token_ids[0]);
      tokens = tokenize_files(a.data, *tok, sep);
    }
    fs::create_directories(out);
    write_token_cache(cache_path, tokens);
    if (!tok_json.is_null()) write_json_file((fs::path(out) / "tokenizer.json").string(), tok_json);
  }
  TokenSplit split = split_tokens(tokens, o.val_fraction, o.seq + 1);
  Weights w = init_weights(spec, a.init_seed, a.init_std);
  auto model = std::make_unique<Model>(spec, owned_copy(w), resuming ? state_path : a.spec);
  const int64_t n_params = model->n_params();
  Trainer tr(std::move(model), o, std::move(split));
  if (resuming) {
    tr.load_state(state_path);
    truncate_metrics(metrics_path, tr.steps_done());
    std::fprintf(stderr, "resuming %s at step %lld of %lld\n", out.c_str(), (long long)tr.steps_done(),
                 (long long)o.steps);
  } else {
    std::fprintf(stderr, "training %s: %lld parameters, %zu tokens (%lld steps x %lld x %lld tokens)\n",
                 out.c_str(), (long long)n_params, tokens.size(), (long long)o.steps,
                 (long long)(o.batch * o.accum), (long long)o.seq);
  }
  std::ofstream metrics(metrics_path, std::ios::app);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const bool tty = isatty(2);
  if (a.log_every <= 0) a.log_every = tty ? 1 : 10;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const int64_t first = tr.steps_done();
  int64_t tokens_done = 0;
  while (tr.steps_done() < o.steps) {
    const auto ts = clock::now();
    StepStats st = tr.step();
    const double dt = std::chrono::duration<double>(clock::now() - ts).count();
    const double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    tokens_done += st.tokens;
    const double tps = double(tokens_done) / elapsed;
    const double eta = elapsed / double(st.step - first) * double(o.steps - st.step);
    json line = {{"step", st.step},     {"loss", st.loss},
                 {"lr", st.lr},         {"grad_norm", st.grad_norm},
                 {"tokens", st.tokens}, {"tokens_per_s", double(st.tokens) / dt}};
    const bool eval = (o.eval_every > 0 && st.step % o.eval_every == 0) || st.step == o.steps;
    if (eval) {
      const double vl = tr.evaluate();
      if (!std::isnan(vl)) line["val_loss"] = vl, line["val_ppl"] = std::exp(vl);
    }
    metrics << line.dump() << "\n" << std::flush;
    if (!a.quiet && (st.step % a.log_every == 0 || eval || st.step == o.steps)) {
      // On a terminal one line is rewritten in place; otherwise each report is a line.
      std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %.0fs",
                   tty ? "\r\033[K" : "", (long long)st.step, (long long)o.steps, st.loss, st.lr, tps, eta);
      if (line.contains("val_loss"))
        std::fprintf(stderr, "  val %.4f (ppl %.2f)", line["val_loss"].get<double>(),
                     line["val_ppl"].get<double>());
      if (!tty || line.contains("val_loss")) std::fprintf(stderr, "\n");
      std::fflush(stderr);
    }
    const bool last = st.step == o.steps;
    if (last || g_stop || (o.save_every > 0 && st.step % o.save_every == 0)) save_all(tr, out);
    if (g_stop && !last) {
      std::fprintf(stderr, "\ninterrupted: checkpoint at step %lld saved in %s (continue with --resume %s)\n",
                   (long long)st.step, out.c_str(), out.c_str());
      throw Interrupted{};
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  std::printf("trained %s to step %lld\n", out.c_str(), (long long)tr.steps_done());
}

}  // namespace

void add_train(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = app.add_subcommand("train", "Train a model from a braid spec on text files");
  c->add_option("--spec", a->spec, "braid spec JSON (see docs/training.md)");
  c->add_option("--data", a->data, "Text files, one document each");
  c->add_option("--tokens", a->tokens, "A token cache (tokens.bin) instead of --data");
  c->add_option("--tokenizer", a->tokenizer, "tokenizer.json used to tokenize --data (copied to --out)");
  c->add_flag("--byte-tokenizer", a->byte_tokenizer, "Use (and write) a byte-level tokenizer");
  c->add_option("--out", a->out, "Output directory (model, tokenizer, checkpoints, metrics.jsonl)");
  c->add_option("--resume", a->resume, "Continue the run in this directory from its last checkpoint");
  c->add_option("--steps", a->o.steps, "Optimizer steps (with --resume: the new total)")
      ->capture_default_str();
  c->add_option("--batch", a->o.batch, "Sequences per micro-batch")->capture_default_str();
  c->add_option("--seq", a->o.seq, "Tokens per sequence")->capture_default_str();
  c->add_option("--accum", a->o.accum, "Micro-batches accumulated per step")->capture_default_str();
  c->add_option("--lr", a->o.schedule.lr, "Peak learning rate")->capture_default_str();
  c->add_option("--min-lr-ratio", a->min_lr_ratio, "Final learning rate / peak")->capture_default_str();
  c->add_option("--warmup", a->o.schedule.warmup, "Linear warmup steps")->capture_default_str();
  c->add_option("--decay", a->decay, "cosine, linear or constant")->capture_default_str();
  c->add_option("--weight-decay", a->o.adam.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_flag("--decay-all", a->o.adam.decay_all, "Also decay norms, biases and embeddings");
  c->add_option("--beta1", a->o.adam.beta1, "AdamW beta1")->capture_default_str();
  c->add_option("--beta2", a->o.adam.beta2, "AdamW beta2")->capture_default_str();
  c->add_option("--clip", a->o.clip, "Clip the global gradient norm to this (0: off)")->capture_default_str();
  c->add_option("--seed", a->o.seed, "Seed of the data order")->capture_default_str();
  c->add_option("--init-seed", a->init_seed, "Seed of the weight initialisation")->capture_default_str();
  c->add_option("--init-std", a->init_std, "Std of initial weight matrices")->capture_default_str();
  c->add_option("--val-fraction", a->o.val_fraction, "Held-out fraction of the tokens")
      ->capture_default_str();
  c->add_option("--eval-every", a->o.eval_every, "Evaluate held-out loss every N steps (and at the end)");
  c->add_option("--eval-windows", a->o.eval_windows, "Held-out windows per evaluation")
      ->capture_default_str();
  c->add_option("--save-every", a->o.save_every, "Checkpoint every N steps (and at the end / on a signal)");
  c->add_option("--log-every", a->log_every,
                "Progress line every N steps (default: 1 on a terminal, else 10)");
  c->add_option("--threads", a->threads, "Threads (0: all cores)");
  c->add_flag("--quiet", a->quiet, "No progress line");
  c->callback([a, c, &exit_code] {
    a->steps_set = c->count("--steps") > 0;
    a->eval_every_set = c->count("--eval-every") > 0;
    a->save_every_set = c->count("--save-every") > 0;
    train(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
