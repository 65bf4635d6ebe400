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

std::vector<TaskSpec> train_configs(const CompareOptions& o) {
  std::vector<TaskSpec> configs;
  for (int64_t L : train_lengths(o)) configs.push_back(task_at(o, L));
  return configs;
}

}  // namespace

void check_compare(const CompareOptions& o, const std::vector<std::pair<std::string, ModelSpec>>& specs) {
  check(!specs.empty(), "nothing to compare: give at least one spec");
  check(!o.eval_seq.empty(), "give at least one evaluation length (--seq)");
  check(o.items.size() <= 1 || o.items.size() == o.eval_seq.size(), "--items has ", o.items.size(),
        " values for ", o.eval_seq.size(), " lengths: give one value or one per length");
  check(o.eval_examples > 0, "the number of evaluation examples must be positive, got ", o.eval_examples);
  check(!o.out.empty(), "give an output directory (--out)");
  check(
      !is_real_task(o.task.name) || o.eval_seq.size() == 1, o.task.name,
      ": give one evaluation length (--seq, two rows per point); the table reports the error by points seen");
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& [label, spec] = specs[i];
    check(!label.empty() && label.find_first_of("/\\") == std::string::npos && label != "." && label != "..",
          "'", label, "' cannot name a model directory");
    for (size_t j = 0; j < i; ++j)
      check(specs[j].first != label, "two specs are labelled '", label, "': labels name directories");
    try {
      check_task_fits(task_at(o, o.eval_seq[0]), spec);
    } catch (const Error& e) {
      fail(label, ": ", e.what());
    }
  }
  // Every length must give valid examples before hours are spent training.
  Rng rng(0);
  for (int64_t L : o.eval_seq) make_task_example(task_at(o, L), rng);
  TaskSource(train_configs(o), 0, 0, o.curriculum);  // the training lengths and the curriculum
}

CompareRow compare_one(const CompareOptions& o, const std::string& label, const ModelSpec& spec,
                       const std::function<void(int64_t, double)>& progress) {
  CompareRow row;
  row.label = label;
  row.lr = o.train.schedule.lr;
  auto model = std::make_unique<Model>(spec, owned_copy(init_weights(spec, o.init_seed, o.init_std)), label);
  row.params = model->n_params();
  Trainer tr(std::move(model), o.train, std::make_unique<TaskSource>(train_configs(o), 0, 0, o.curriculum));
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
  if (is_real_task(o.task.name)) {
    RegressionScore r =
        evaluate_regression(tr.model(), task_at(o, o.eval_seq[0]), o.eval_examples, o.eval_seed);
    row.error = std::move(r.error), row.least_squares = std::move(r.least_squares);
    return row;
  }
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

// The numbers of points seen a regression table shows: none, d / 2, d - 1, d, 3d / 2 and the
// last, those the sequence has.
std::vector<int64_t> regression_columns(const TaskSpec& t) {
  const int64_t d = t.dim, P = t.seq_len / 2;
  std::vector<int64_t> c;
  for (int64_t k : {int64_t(0), d / 2, d - 1, d, 3 * d / 2, P - 1})
    if (k >= 0 && k < P && (c.empty() || k > c.back())) c.push_back(k);
  return c;
}

}  // namespace

std::string compare_markdown(const CompareOptions& o, const std::vector<CompareRow>& rows,
                             const std::string& command) {
  const bool real = is_real_task(o.task.name);
  const std::vector<int64_t> cols =
      real ? regression_columns(task_at(o, o.eval_seq[0])) : std::vector<int64_t>{};
  std::string md = "### " + o.task.name +
                   (real ? ": error / d by points seen (d = " + std::to_string(o.task.dim) + ")"
                         : ": accuracy (%) by sequence length") +
                   "\n\n| model | params |";
  std::string rule = "|---|---:|";
  for (int64_t k : cols) {
    md += " " + std::to_string(k) + " |";
    rule += "---:|";
  }
  for (int64_t L : real ? std::vector<int64_t>{} : o.eval_seq) {
    const TaskSpec t = task_at(o, L);
    md += " " + std::to_string(L);
    if (has_items(o.task.name)) md += " (" + std::to_string(t.items) + ")";
    md += " |";
    rule += "---:|";
  }
  // One learning rate for all is stated below the table; several get a column.
  const bool lr_column =
      std::any_of(rows.begin(), rows.end(), [&](const CompareRow& r) { return r.lr != rows.front().lr; });
  md += lr_column ? " final loss | lr | train time |\n" : " final loss | train time |\n";
  md += rule + (lr_column ? "---:|---:|---:|\n" : "---:|---:|\n");
  auto errors = [&](const std::vector<double>& e) {
    std::string cells;
    for (int64_t k : cols) {
      char b[32];
      std::snprintf(b, sizeof(b), " %.3f |", e[size_t(k)]);
      cells += b;
    }
    return cells;
  };
  for (const CompareRow& r : rows) {
    md += "| " + r.label + " | " + params_str(r.params) + " |";
    if (real) md += errors(r.error);
    for (double a : r.accuracy) {
      char b[32];
      std::snprintf(b, sizeof(b), " %.1f |", 100.0 * a);
      md += b;
    }
    char b[64];
    std::snprintf(b, sizeof(b), " %.3f |", r.final_loss);
    md += b;
    if (lr_column) {
      std::snprintf(b, sizeof(b), " %g |", r.lr);
      md += b;
    }
    md += " " + duration_str(r.train_seconds) + " |\n";
  }
  if (real && !rows.empty())
    md += "| least squares | - |" + errors(rows.front().least_squares) + (lr_column ? " | | |\n" : " | |\n");
  const TrainOptions& t = o.train;
  // The schedule as text: "lr 0.001 (warmup 50, cosine decay to 0.0001)", or with a column of
  // learning rates "each model's lr (warmup 50, cosine decay to 0.1 x it)".
  char sched[160];
  const char* decay = t.schedule.decay == Decay::Cosine   ? "cosine"
                      : t.schedule.decay == Decay::Linear ? "linear"
                                                          : "no";
  if (lr_column)
    std::snprintf(sched, sizeof(sched), "each model's lr (warmup %lld, %s decay to %g x it)",
                  (long long)t.schedule.warmup, decay, t.schedule.min_lr / t.schedule.lr);
  else
    std::snprintf(sched, sizeof(sched), "lr %g (warmup %lld, %s decay to %g)", t.schedule.lr,
                  (long long)t.schedule.warmup, decay, t.schedule.min_lr);
  char b[768];
  std::snprintf(b, sizeof(b),
                "\n%s%s. Each model: %lld steps x %lld sequences, lengths {%s} drawn "
                "uniformly, AdamW %s, weight decay %g, clip %g, data seed %llu, init seed %llu (std %g). "
                "%s, over %lld examples per length (seed %llu).\n",
                real ? ("Rows of " + std::to_string(o.task.dim + 1) + " values, two per point").c_str()
                     : ("Task vocabulary " + std::to_string(o.task.vocab)).c_str(),
                o.eval_seq.size() > 1 && has_items(o.task.name) ? "; items per length in parentheses" : "",
                (long long)t.steps, (long long)(t.batch * t.accum), lengths_str(train_lengths(o)).c_str(),
                sched, t.adam.weight_decay, t.clip, (unsigned long long)t.seed,
                (unsigned long long)o.init_seed, o.init_std,
                real ? "Error: the squared error of each prediction / d" : "Accuracy: greedy",
                (long long)o.eval_examples, (unsigned long long)o.eval_seed);
  md += b;
  if (const Curriculum& c = o.curriculum; c.active()) {
    std::string from;
    if (c.seq > 0) from += "length " + std::to_string(c.seq);
    if (c.dim > 0) from += (from.empty() ? "" : " and ") + std::string("d ") + std::to_string(c.dim);
    md += "Curriculum: training starts at " + (from.empty() ? std::string("the task itself") : from) +
          " and grows linearly to the task's over the first " + std::to_string(c.steps) + " steps.\n";
  }
  if (!command.empty()) md += "\n```\n" + command + "\n```\n";
  return md;
}

std::string compare_svg(const CompareOptions& o, const std::vector<CompareRow>& rows) {
  if (is_real_task(o.task.name)) {
    LineChart c;
    c.title = o.task.name + ": error / d by points seen";
    c.x_label = "points seen", c.y_label = "squared error / d";
    c.y_min = 0, c.y_max = 1.25;
    const size_t P = rows.empty() ? 0 : rows.front().error.size();
    std::vector<double> xs(P);
    for (size_t i = 0; i < P; ++i) xs[i] = double(i);
    for (size_t r = 0; r < rows.size(); ++r)
      c.series.push_back({rows[r].label, xs, rows[r].error, int(r), ChartSeries::Style::Solid, false, true});
    if (!rows.empty())
      c.series.push_back({"least squares", xs, rows.front().least_squares, int(rows.size()),
                          ChartSeries::Style::Dashed, false, true});
    return line_chart_svg(c);
  }
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
  for (const CompareRow& r : rows) {
    models.push_back({{"label", r.label},
                      {"params", r.params},
                      {"lr", r.lr},
                      {"final_loss", r.final_loss},
                      {"train_seconds", r.train_seconds},
                      {"accuracy", r.accuracy}});
    if (!r.error.empty()) models.back()["error"] = r.error, models.back()["least_squares"] = r.least_squares;
  }
  std::vector<int64_t> items;
  for (int64_t L : o.eval_seq) items.push_back(task_at(o, L).items);
  json j{{"task", o.task.name},
         {"vocab", o.task.vocab},
         {"dim", o.task.dim},
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
  if (o.curriculum.active())
    j["curriculum"] = {{"steps", o.curriculum.steps}, {"seq", o.curriculum.seq}, {"dim", o.curriculum.dim}};
  return j;
}

CompareResults compare_from_json(const json& j, const std::string& where) {
  CompareResults r;
  CompareOptions& o = r.o;
  try {
    o.task.name = j.at("task").get<std::string>(), o.task.vocab = j.at("vocab"), o.task.dim = j.at("dim");
    o.task.power_a = j.at("power_a");
    o.eval_seq = j.at("eval_seq").get<std::vector<int64_t>>();
    o.items = j.at("items").get<std::vector<int64_t>>();
    o.train_seq = j.at("train_seq").get<std::vector<int64_t>>();
    o.init_seed = j.at("init_seed"), o.init_std = j.at("init_std");
    o.eval_examples = j.at("eval_examples"), o.eval_seed = j.at("eval_seed");
    r.command = j.value("command", std::string());
    if (j.contains("curriculum")) {
      const json& c = j.at("curriculum");
      o.curriculum.steps = c.at("steps"), o.curriculum.seq = c.at("seq"), o.curriculum.dim = c.at("dim");
    }
    for (const json& m : j.at("models")) {
      CompareRow row;
      row.label = m.at("label").get<std::string>(), row.params = m.at("params"), row.lr = m.at("lr");
      row.final_loss = m.at("final_loss"), row.train_seconds = m.at("train_seconds");
      row.accuracy = m.at("accuracy").get<std::vector<double>>();
      if (m.contains("error")) {
        row.error = m.at("error").get<std::vector<double>>();
        row.least_squares = m.at("least_squares").get<std::vector<double>>();
      }
      if (is_real_task(o.task.name)) {
        // One error per point of the one evaluation length (the table indexes them).
        const size_t points = o.eval_seq.size() == 1 ? size_t(std::max<int64_t>(o.eval_seq[0] / 2, 0)) : 0;
        check(points > 0 && row.error.size() == points && row.least_squares.size() == points, "model '",
              row.label, "' has ", row.error.size(), " errors and ", row.least_squares.size(),
              " least-squares errors for ", points, " points");
      } else {
        check(row.accuracy.size() == o.eval_seq.size(), "model '", row.label, "' has ", row.accuracy.size(),
              " accuracies for ", o.eval_seq.size(), " lengths");
      }
      r.rows.push_back(std::move(row));
    }
  } catch (const json::exception& e) {
    fail(where, ": not a braid compare results file (", e.what(), ")");
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  check(o.items.size() == o.eval_seq.size(), where, ": ", o.items.size(), " item counts for ",
        o.eval_seq.size(), " lengths");
  check(j.contains("train"), where, ": not a braid compare results file (no training options)");
  o.train = options_from_json(j["train"], where);
  return r;
}

CompareResults merge_compare(const std::vector<CompareResults>& parts,
                             const std::vector<std::string>& names) {
  check(!parts.empty() && parts.size() == names.size(), "nothing to merge");
  // Every setting but the learning rate: the options as written, without the schedule's lr.
  auto settings = [](const CompareOptions& o) {
    json j = compare_json(o, {});
    j.erase("models");
    j["train"].erase("lr");
    j["train"].erase("min_lr");
    j["min_lr_ratio"] = o.train.schedule.min_lr / o.train.schedule.lr;
    return j;
  };
  CompareResults m;
  m.o = parts[0].o;
  const json first = settings(parts[0].o);
  for (size_t i = 0; i < parts.size(); ++i) {
    const json s = settings(parts[i].o);
    if (s != first)
      for (const auto& [key, value] : first.items())
        check(s.contains(key) && s[key] == value, names[i], ": its setting '", key, "' (",
              s.contains(key) ? s[key].dump() : "missing", ") differs from ", names[0], "'s (", value.dump(),
              ")");
    check(s == first, names[i], ": its settings differ from ", names[0], "'s");
    for (const CompareRow& row : parts[i].rows) {
      for (const CompareRow& seen : m.rows)
        check(seen.label != row.label, names[i], ": a model labelled '", row.label,
              "' is already in the table");
      m.rows.push_back(row);
    }
    if (!parts[i].command.empty()) m.command += (m.command.empty() ? "" : "\n") + parts[i].command;
  }
  return m;
}

}  // namespace braid
