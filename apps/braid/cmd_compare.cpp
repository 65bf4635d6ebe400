// braid compare TASK: trains several specs on one synthetic task under one budget, evaluates
// each at every length, and writes results.md (a markdown table), results.json and
// accuracy.svg into --out (each model in its own sub-directory).
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "commands.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "io/json.hpp"
#include "io/text_file.hpp"
#include "model/spec_json.hpp"
#include "train/compare.hpp"

namespace braid::cli {

namespace {

namespace fs = std::filesystem;

struct CompareArgs {
  CompareOptions o;
  std::vector<std::string> specs, labels;
  std::vector<double> lrs = {1e-3};  // one, or one per spec
  std::string decay = "cosine";
  double min_lr_ratio = 0.1;
  int threads = 0;
  bool quiet = false;
  std::string command;             // as typed, quoted in results.md
  std::vector<std::string> merge;  // result directories to tabulate together instead
};

// results.md (quoting `shown`), results.json (recording `command`) and accuracy.svg in o.out.
void write_results(const CompareOptions& o, const std::vector<CompareRow>& rows, const std::string& shown,
                   const std::string& command) {
  json j = compare_json(o, rows);
  if (!command.empty()) j["command"] = command;
  write_text_file((fs::path(o.out) / "results.md").string(), compare_markdown(o, rows, shown));
  write_text_file((fs::path(o.out) / "results.json").string(), j.dump(2) + "\n");
  write_text_file((fs::path(o.out) / "accuracy.svg").string(), compare_svg(o, rows));
}

void compare(CompareArgs a) {
  check(!a.o.task.name.empty() && !a.specs.empty() && !a.o.eval_seq.empty(),
        "compare needs a task, --spec and --seq (or --merge with result directories)");
  set_num_threads(a.threads);
  check(a.labels.empty() || a.labels.size() == a.specs.size(), "--label: ", a.labels.size(), " labels for ",
        a.specs.size(), " specs");
  check(a.lrs.size() == 1 || a.lrs.size() == a.specs.size(), "--lr: ", a.lrs.size(), " learning rates for ",
        a.specs.size(), " specs: give one value or one per spec");
  for (double lr : a.lrs) check(lr > 0, "--lr: learning rates must be positive, got ", lr);
  std::vector<std::pair<std::string, ModelSpec>> specs;
  for (size_t i = 0; i < a.specs.size(); ++i)
    specs.emplace_back(a.labels.empty() ? fs::path(a.specs[i]).stem().string() : a.labels[i],
                       spec_from_json(read_json_file(a.specs[i]), a.specs[i]));
  CompareOptions& o = a.o;
  if (o.task.vocab <= 0) {
    o.task.vocab = specs.at(0).second.vocab_size;
    for (const auto& s : specs) o.task.vocab = std::min(o.task.vocab, s.second.vocab_size);
  }
  check(parse_decay(a.decay, &o.train.schedule.decay), "--decay: '", a.decay,
        "' is not cosine, linear or constant");
  o.train.schedule.lr = a.lrs[0];
  o.train.schedule.min_lr = o.train.schedule.lr * a.min_lr_ratio;
  o.train.val_fraction = 0;
  check_compare(o, specs);
  fs::create_directories(o.out);
  const bool tty = isatty(2);
  std::vector<CompareRow> rows;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& [label, spec] = specs[i];
    CompareOptions oi = o;
    oi.train.schedule.lr = a.lrs[a.lrs.size() == 1 ? 0 : i];
    oi.train.schedule.min_lr = oi.train.schedule.lr * a.min_lr_ratio;
    if (!a.quiet) std::fprintf(stderr, "%s: training %lld steps\n", label.c_str(), (long long)o.train.steps);
    const int64_t every = std::max<int64_t>(1, o.train.steps / 20);
    rows.push_back(compare_one(oi, label, spec, [&](int64_t step, double loss) {
      if (a.quiet || (step % every != 0 && step != o.train.steps)) return;
      std::fprintf(stderr, "%s  step %lld/%lld  loss %.4f%s", tty ? "\r\033[K" : "", (long long)step,
                   (long long)o.train.steps, loss, tty ? "" : "\n");
      std::fflush(stderr);
    }));
    const CompareRow& r = rows.back();
    if (!a.quiet) {
      std::fprintf(stderr, "%s%s: %lld parameters, final loss %.4f, %.1fs; accuracy", tty ? "\n" : "",
                   label.c_str(), (long long)r.params, r.final_loss, r.train_seconds);
      for (size_t i = 0; i < r.accuracy.size(); ++i)
        std::fprintf(stderr, "  %lld: %.3f", (long long)o.eval_seq[i], r.accuracy[i]);
      std::fprintf(stderr, "\n");
    }
    // Written after every model, so an interrupted comparison keeps what it finished.
    write_results(o, rows, a.command, a.command);
  }
  std::printf("%s", compare_markdown(o, rows, a.command).c_str());
}

// --merge: the tables of several runs as one (the rows in order), written to --out.
void merge(const CompareArgs& a) {
  std::vector<CompareResults> parts;
  std::vector<std::string> names;
  check(!a.o.out.empty(), "--merge needs --out");
  for (const std::string& dir : a.merge) {
    check(fs::weakly_canonical(dir) != fs::weakly_canonical(a.o.out), "--out ", a.o.out,
          " is one of the merged directories: its results would be overwritten");
    const std::string file = (fs::path(dir) / "results.json").string();
    parts.push_back(compare_from_json(read_json_file(file), file));
    names.push_back(dir);
  }
  CompareResults m = merge_compare(parts, names);
  m.o.out = a.o.out;
  fs::create_directories(m.o.out);
  const std::string commands = m.command.empty() ? a.command : m.command + "\n" + a.command;
  write_results(m.o, m.rows, commands, m.command);
  std::printf("%s", compare_markdown(m.o, m.rows, commands).c_str());
}

}  // namespace

void add_compare(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<CompareArgs>();
  a->o.task.vocab = 0;
  a->o.train.steps = 1000, a->o.train.batch = 16, a->o.train.schedule.warmup = 50;
  a->o.train.adam.weight_decay = 0.1;
  CLI::App* c = app.add_subcommand("compare",
                                   "Train several specs on one synthetic task under one budget and tabulate "
                                   "their accuracy by sequence length");
  c->add_option("task", a->o.task.name,
                "Task: mqar, selective_copy, induction, passkey, listops, linear_regression");
  c->add_option("--spec", a->specs, "braid spec JSON files (repeat, or a comma-separated list)")
      ->delimiter(',');
  c->add_option("--label", a->labels, "A label per spec (default: the file names)")->delimiter(',');
  c->add_option("--out", a->o.out, "Output directory")->required();
  c->add_option("--seq", a->o.eval_seq, "Evaluation lengths, e.g. 64,128,256")->delimiter(',');
  c->add_option("--train-seq", a->o.train_seq, "Training lengths (default: the evaluation lengths)")
      ->delimiter(',');
  c->add_option("--items", a->o.items,
                "mqar pairs / selective_copy tokens / passkey digits: one value or one per --seq length")
      ->delimiter(',');
  c->add_option("--vocab", a->o.task.vocab, "Task vocabulary (default: the smallest model vocabulary)");
  c->add_option("--dim", a->o.task.dim, "linear_regression: the dimension of x")->capture_default_str();
  c->add_option("--power-a", a->o.task.power_a, "mqar: power-law exponent of the query gaps")
      ->capture_default_str();
  c->add_option("--steps", a->o.train.steps, "Optimizer steps per model")->capture_default_str();
  c->add_option("--curriculum", a->o.curriculum.steps,
                "Grow the training examples from --curriculum-seq / --curriculum-dim to the task's over "
                "this many steps");
  c->add_option("--curriculum-seq", a->o.curriculum.seq, "Curriculum: the training length at the first step");
  c->add_option("--curriculum-dim", a->o.curriculum.dim,
                "Curriculum (linear_regression): the active dimensions of x at the first step");
  c->add_option("--batch", a->o.train.batch, "Sequences per step")->capture_default_str();
  c->add_option("--lr", a->lrs, "Peak learning rate: one, or one per spec")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--min-lr-ratio", a->min_lr_ratio, "Final learning rate / peak")->capture_default_str();
  c->add_option("--warmup", a->o.train.schedule.warmup, "Linear warmup steps")->capture_default_str();
  c->add_option("--decay", a->decay, "cosine, linear or constant")->capture_default_str();
  c->add_option("--weight-decay", a->o.train.adam.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--clip", a->o.train.clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  c->add_option("--seed", a->o.train.seed, "Seed of the training examples")->capture_default_str();
  c->add_option("--init-seed", a->o.init_seed, "Seed of the weight initialisation")->capture_default_str();
  c->add_option("--init-std", a->o.init_std, "Std of initial weight matrices")->capture_default_str();
  c->add_option("-n,--examples", a->o.eval_examples, "Evaluation examples per length")->capture_default_str();
  c->add_option("--eval-seed", a->o.eval_seed, "Seed of the evaluation examples")->capture_default_str();
  c->add_option("--threads", a->threads, "Threads (0: all cores)");
  c->add_flag("--quiet", a->quiet, "No progress");
  c->add_option("--merge", a->merge,
                "Instead of training: tabulate the models of several comparisons' --out directories "
                "(same settings but the learning rate) as one, written to --out")
      ->delimiter(',');
  c->callback([a, &exit_code] {
    a->command = invocation();
    if (!a->merge.empty()) {
      check(a->specs.empty() && a->o.task.name.empty(), "--merge takes only result directories and --out");
      merge(*a);
    } else {
      compare(*a);
    }
    exit_code = 0;
  });
}

}  // namespace braid::cli
