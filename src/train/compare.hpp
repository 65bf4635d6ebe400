// Several model specs trained on one synthetic task under one budget (same steps, batch,
// schedule, training lengths and data order), then evaluated by greedy accuracy at each
// evaluation length; the results as a markdown table and an SVG chart.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/spec.hpp"
#include "tasks/tasks.hpp"
#include "train/source.hpp"
#include "train/trainer.hpp"

namespace braid {

struct CompareOptions {
  TaskSpec task;                   // name, vocab, power_a (lengths and items come below)
  std::vector<int64_t> eval_seq;   // evaluation lengths
  std::vector<int64_t> train_seq;  // training lengths, drawn uniformly (empty: eval_seq)
  std::vector<int64_t> items;      // one value, or one per evaluation length
  TrainOptions train;              // steps, batch, schedule, seed of the data order
  Curriculum curriculum;           // grows the training examples into the task (none by default)
  uint64_t init_seed = 0;          // weight initialisation, the same for every spec
  double init_std = 0.02;
  int64_t eval_examples = 200;   // per evaluation length
  uint64_t eval_seed = 1000003;  // examples never drawn in training (another stream)
  std::string out;               // directory: one sub-directory per model, results
};

// The task at length L: its items from `items` (a single value, or the value at L's place
// in eval_seq; a training length missing from eval_seq needs a single value).
TaskSpec task_at(const CompareOptions& o, int64_t L);

struct CompareRow {
  std::string label;
  int64_t params = 0;
  double lr = 0;          // peak learning rate it was trained with
  double final_loss = 0;  // mean training loss of the last 10% of steps
  double train_seconds = 0;
  std::vector<double> accuracy;  // per evaluation length
  // Real-valued tasks (linear_regression, one evaluation length) instead: error / d by the
  // number of points seen, and least squares' on the same examples.
  std::vector<double> error, least_squares;
};

// Checks the options and the specs (one-line errors) before training anything.
void check_compare(const CompareOptions& o, const std::vector<std::pair<std::string, ModelSpec>>& specs);

// Trains and evaluates one spec: the model and its metrics.jsonl go to out/<label>/.
// `progress(step, loss)` is called after every step.
CompareRow compare_one(const CompareOptions& o, const std::string& label, const ModelSpec& spec,
                       const std::function<void(int64_t, double)>& progress = {});

// Markdown: a heading, one row per model (parameters, accuracy % per length, final loss,
// or for a real-valued task error / d at a few numbers of points seen, with a least-squares
// row;
// training time, and the peak learning rate when the models differ in it) and a line stating
// the budget. `command` (if any) is quoted to reproduce it.
std::string compare_markdown(const CompareOptions& o, const std::vector<CompareRow>& rows,
                             const std::string& command);
std::string compare_svg(const CompareOptions& o, const std::vector<CompareRow>& rows);
json compare_json(const CompareOptions& o, const std::vector<CompareRow>& rows);

// A results.json read back (the inverse of compare_json; `command`, if the file has one, is
// the command line that wrote it). Throws a one-line error naming `where` when malformed.
struct CompareResults {
  CompareOptions o;
  std::vector<CompareRow> rows;
  std::string command;
};
CompareResults compare_from_json(const json& j, const std::string& where);
// The rows of several comparisons as one (in order), for a table whose models were trained
// by separate runs: compare_one depends only on the options and the spec, so a row is the
// same whichever run trained it. Every setting must agree except the peak learning rate
// (kept per row); labels must differ. `names` name the parts in errors.
CompareResults merge_compare(const std::vector<CompareResults>& parts, const std::vector<std::string>& names);

}  // namespace braid
