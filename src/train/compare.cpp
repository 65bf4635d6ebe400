#include "train/compare.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "import/save.hpp"
#include "model/init.hpp"
#include "train/plot.hpp"

namespace braid {

namespace fs = std::filesystem;

TaskSpec task_at(const CompareOptions& o, int64_t L) {
  TaskSpec t = o.task;
  t.seq_len = L;
  if (o.items.size() == 1) {
    t.items = o.items[0];
  } else if (!o.items.empty()) {
    const auto at = std::find(o.eval_seq.begin(), o.eval_seq.end(), L);
    check(at != o.eval_seq.end(), "length ", L, " has no item count: give one --items value, or list ", L,
          " in --seq with its own");
    t.items = o.items[size_t(at - o.eval_seq.begin())];
  }
  return t;
}

namespace {

// Whether the task's examples depend on `items` (shown beside each length in the table).
bool has_items(const std::string& task) {
  return task == "mqar" || task == "selective_copy" || task == "passkey";
}

const std::vector<int64_t>& train_lengths(const CompareOptions& o) {
  return o.train_seq.empty() ? o.eval_seq : o.train_seq;
}

}  // namespace

void check_compare(const CompareOptions& o, const std::vector<std::pair<std::string, ModelSpec>>& specs) {
  check(!specs.empty(), "nothing to compare: give at least one spec");
  check(!o.eval_seq.empty(), "give at least one evaluation length (--seq)");
  check(o.items.size() <= 1 || o.items.size() == o.eval_seq.size(), "--items has ", o.items.size(),
        " values for ", o.eval_seq.size(), " lengths: give one value or one per length");
  check(o.eval_examples > 0, "the number of evaluation examples must be positive, got ", o.eval_examples);
  check(!o.out.empty(), "give an output directory (--out)");
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& [label, spec] = specs[i];
    check(!label.empty() && label.find_first_of("/\\") == std::string::npos && label != "." && label != "..",
          "'", label, "' cannot name a model directory");
    for (size_t j = 0; j < i; ++j)
      check(specs[j].first != label, "two specs are labelled '", label, "': labels name directories");
    check(o.task.vocab <= spec.vocab_size, label, ": the task's vocabulary (", o.task.vocab,
          ") is larger than the model's (", spec.vocab_size, ")");
  }
  // Every length must give valid examples before hours are spent training.
  Rng rng(0);
  for (const std::vector<int64_t>* ls : {&o.eval_seq, &train_lengths(o)})
    for (int64_t L : *ls) make_task_example(task_at(o, L), rng);
}

CompareRow compare_one(const CompareOptions& o, const std::string& label, const ModelSpec& spec,
                       const std::function<void(int64_t, double)>& progress) {
  CompareRow row;
  row.label = label;
  std::vector<TaskSpec> configs;
  for (int64_t L : train_lengths(o)) configs.push_back(task_at(o, L));
  auto model = std::make_unique<Model>(spec, owned_copy(init_weights(spec, o.init_seed, o.init_std)), label);
  row.params = model->n_params();
  Trainer tr(std::move(model), o.train, std::make_unique<TaskSource>(configs, 0, 0));
  const fs::path dir = fs::path(o.out) / label;
  fs::create_directories(dir);
  std::ofstream metrics(dir / "metrics.jsonl", std::ios::trunc);
  const int64_t tail = std::max<int64_t>(1, o.train.steps / 10);
  double tail_sum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (tr.steps_done() < o.train.steps) {
    const StepStats st = tr.step();
    metrics << json{{"step", st.step}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm}}.dump()
            << "\n";
    if (st.step > o.train.steps - tail) tail_sum += st.loss;
    if (progress) progress(st.step, st.loss);
  }
  row.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  row.final_loss = tail_sum / double(tail);
  metrics.close();
  check(metrics.good(), (dir / "metrics.jsonl").string(), ": could not be written");
  save_model(dir.string(), tr.model().spec(), tr.model().weights());
  for (int64_t L : o.eval_seq)
    row.accuracy.push_back(evaluate_task(tr.model(), task_at(o, L), o.eval_examples, o.eval_seed).accuracy());
  return row;
}

namespace {

std::string lengths_str(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

std::string params_str(int64_t n) {
  char b[32];
  if (n >= 1000000)
    std::snprintf(b, sizeof(b), "%.2fM", double(n) / 1e6);
  else
    std::snprintf(b, sizeof(b), "%.1fk", double(n) / 1e3);
  return b;
}

std::string duration_str(double s) {
  char b[32];
  if (s >= 60)
    std::snprintf(b, sizeof(b), "%dm %02ds", int(s) / 60, int(s) % 60);
  else
    std::snprintf(b, sizeof(b), "%.1fs", s);
  return b;
}

}  // namespace

std::string compare_markdown(const CompareOptions& o, const std::vector<CompareRow>& rows,
                             const std::string& command) {
  std::string md = "### " + o.task.name + ": accuracy (%) by sequence length\n\n| model | params |";
  std::string rule = "|---|---:|";
  for (int64_t L : o.eval_seq) {
    const TaskSpec t = task_at(o, L);
    md += " " + std::to_string(L);
    if (has_items(o.task.name)) md += " (" + std::to_string(t.items) + ")";
    md += " |";
    rule += "---:|";
  }
  md += " final loss | train time |\n" + rule + "---:|---:|\n";
  for (const CompareRow& r : rows) {
    md += "| " + r.label + " | " + params_str(r.params) + " |";
    for (double a : r.accuracy) {
      char b[32];
      std::snprintf(b, sizeof(b), " %.1f |", 100.0 * a);
      md += b;
    }
    char b[64];
    std::snprintf(b, sizeof(b), " %.3f | %s |\n", r.final_loss, duration_str(r.train_seconds).c_str());
    md += b;
  }
  const TrainOptions& t = o.train;
  char b[512];
  std::snprintf(
      b, sizeof(b),
      "\nTask vocabulary %lld%s. Each model: %lld steps x %lld sequences, lengths {%s} drawn uniformly, "
      "AdamW lr %g (warmup %lld, %s decay to %g), weight decay %g, clip %g, data seed %llu, init seed "
      "%llu (std %g). Accuracy: greedy, over %lld examples per length (seed %llu).\n",
      (long long)o.task.vocab,
      o.eval_seq.size() > 1 && has_items(o.task.name) ? "; items per length in parentheses" : "",
      (long long)t.steps, (long long)(t.batch * t.accum), lengths_str(train_lengths(o)).c_str(),
      t.schedule.lr, (long long)t.schedule.warmup,
      t.schedule.decay == Decay::Cosine   ? "cosine"
      : t.schedule.decay == Decay::Linear ? "linear"
                                          : "no",
      t.schedule.min_lr, t.adam.weight_decay, t.clip, (unsigned long long)t.seed,
      (unsigned long long)o.init_seed, o.init_std, (long long)o.eval_examples,
      (unsigned long long)o.eval_seed);
  md += b;
  if (!command.empty()) md += "\n```\n" + command + "\n```\n";
  return md;
}

std::string compare_svg(const CompareOptions& o, const std::vector<CompareRow>& rows) {
  LineChart c;
  c.title = o.task.name + ": accuracy by sequence length";
  c.x_label = "sequence length", c.y_label = "accuracy";
  c.log2_x = true, c.y_min = 0, c.y_max = 1;
  std::vector<double> xs(o.eval_seq.begin(), o.eval_seq.end());
  for (size_t r = 0; r < rows.size(); ++r)
    c.series.push_back({rows[r].label, xs, rows[r].accuracy, int(r), ChartSeries::Style::Solid, true, true});
  return line_chart_svg(c);
}

json compare_json(const CompareOptions& o, const std::vector<CompareRow>& rows) {
  json models = json::array();
  for (const CompareRow& r : rows)
    models.push_back({{"label", r.label},
                      {"params", r.params},
                      {"final_loss", r.final_loss},
                      {"train_seconds", r.train_seconds},
                      {"accuracy", r.accuracy}});
  std::vector<int64_t> items;
  for (int64_t L : o.eval_seq) items.push_back(task_at(o, L).items);
  return json{{"task", o.task.name},
              {"vocab", o.task.vocab},
              {"power_a", o.task.power_a},
              {"eval_seq", o.eval_seq},
              {"items", items},
              {"train_seq", train_lengths(o)},
              {"train", options_to_json(o.train)},
              {"init_seed", o.init_seed},
              {"init_std", o.init_std},
              {"eval_examples", o.eval_examples},
              {"eval_seed", o.eval_seed},
              {"models", models}};
}

}  // namespace braid
