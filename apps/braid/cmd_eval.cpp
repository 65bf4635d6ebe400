// braid eval TASK: greedy accuracy of a model on a synthetic long-context task, or for
// in-context regression its error / d by the number of points seen, beside least squares.
#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "core/error.hpp"
#include "import/load.hpp"
#include "io/json.hpp"
#include "tasks/tasks.hpp"

namespace braid::cli {

namespace {

struct EvalArgs {
  TaskSpec spec;
  std::string model;
  int64_t n = 100;
  uint64_t seed = 0;
  int64_t loops = 0;
  bool json = false;
};

void eval_regression(const EvalArgs& a, const Model& model) {
  const RegressionScore s = evaluate_regression(model, a.spec, a.n, a.seed, a.loops);
  if (a.json) {
    std::printf("%s\n", json{{"task", a.spec.name},
                             {"seq_len", a.spec.seq_len},
                             {"dim", a.spec.dim},
                             {"examples", s.examples},
                             {"error", s.error},
                             {"least_squares", s.least_squares}}
                            .dump()
                            .c_str());
    return;
  }
  std::printf("task       %s (seq %lld: %lld points in dimension %lld, seed %llu, %lld examples)\n",
              a.spec.name.c_str(), (long long)a.spec.seq_len, (long long)a.spec.seq_len / 2,
              (long long)a.spec.dim, (unsigned long long)a.seed, (long long)s.examples);
  std::printf("points  error/d  least-squares/d\n");
  for (size_t i = 0; i < s.error.size(); ++i)
    std::printf("%6zu  %7.4f  %7.4f\n", i, s.error[i], s.least_squares[i]);
}

void eval(EvalArgs a) {
  std::unique_ptr<Model> model = load_model(a.model);
  if (a.spec.vocab <= 0) a.spec.vocab = model->spec().vocab_size;
  check(a.loops == 0 || model->spec().loop.enabled(), "--loops: the model has no looped blocks");
  if (is_real_task(a.spec.name)) return eval_regression(a, *model);
  const TaskScore s = evaluate_task(*model, a.spec, a.n, a.seed, a.loops);
  if (a.json) {
    std::printf(
        "{\"task\": \"%s\", \"seq_len\": %lld, \"items\": %lld, \"vocab\": %lld, \"examples\": %lld, "
        "\"answers\": %lld, \"correct\": %lld, \"accuracy\": %.6f}\n",
        a.spec.name.c_str(), (long long)a.spec.seq_len, (long long)a.spec.items, (long long)a.spec.vocab,
        (long long)s.examples, (long long)s.answers, (long long)s.correct, s.accuracy());
    return;
  }
  std::printf("task       %s (seq %lld, items %lld, vocab %lld, seed %llu)\n", a.spec.name.c_str(),
              (long long)a.spec.seq_len, (long long)a.spec.items, (long long)a.spec.vocab,
              (unsigned long long)a.seed);
  std::printf("accuracy   %.4f  (%lld of %lld answers, %lld examples)\n", s.accuracy(), (long long)s.correct,
              (long long)s.answers, (long long)s.examples);
}

}  // namespace

void add_eval(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<EvalArgs>();
  a->spec.vocab = 0;  // default: the model's vocabulary
  CLI::App* c = app.add_subcommand("eval",
                                   "Greedy accuracy of a model on a synthetic task (mqar, "
                                   "selective_copy, induction, passkey, listops), or its error on "
                                   "linear_regression");
  c->add_option("task", a->spec.name, "Task name")->required();
  c->add_option("--model", a->model, "Model directory")->required();
  c->add_option("--seq", a->spec.seq_len, "Sequence length")->capture_default_str();
  c->add_option("--items", a->spec.items,
                "mqar: key-value pairs; selective_copy: tokens to copy; passkey: key digits")
      ->capture_default_str();
  c->add_option("--vocab", a->spec.vocab, "Task vocabulary (default: the model's)");
  c->add_option("--dim", a->spec.dim, "linear_regression: the dimension of x")->capture_default_str();
  c->add_option("--power-a", a->spec.power_a, "mqar: power-law exponent of the query gaps")
      ->capture_default_str();
  c->add_option("-n,--examples", a->n, "Examples to draw")->capture_default_str();
  c->add_option("--seed", a->seed, "Seed of the generator")->capture_default_str();
  c->add_option("--loops", a->loops, "Iterations of a looped model's core (0 = the model's default)")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--json", a->json, "One JSON line instead of text");
  c->callback([a, &exit_code] {
    eval(*a);
    exit_code = 0;
  });
}

}  // namespace braid::cli
