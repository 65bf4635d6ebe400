#include "train/source.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace braid {

TextWindows::TextWindows(TokenSplit data, int64_t seq, int64_t eval_windows)
    : data_(std::move(data)), seq_(seq) {
  check(seq_ > 0, "the sequence length must be positive, got ", seq_);
  check(int64_t(data_.train.size()) >= seq_ + 1, "training data has ", data_.train.size(),
        " tokens, fewer than one window of ", seq_ + 1);
  const int64_t n = std::min<int64_t>(eval_windows, (int64_t(data_.val.size()) - 1) / seq_);
  for (int64_t w = 0; w < n; ++w) {
    const auto at = data_.val.begin() + w * seq_;
    held_out_.push_back(window(at));
  }
}

TaskExample TextWindows::draw(Rng& rng, int64_t /*step*/) const {
  const auto start = int64_t(rng.next() % uint64_t(int64_t(data_.train.size()) - seq_));
  const auto at = data_.train.begin() + start;
  return window(at);
}

void TextWindows::check_model(const ModelSpec& model) const {
  check(model.input_dim == 0, "training text needs a token model, got one with input_dim ", model.input_dim);
  const int64_t vocab = model.vocab_size;
  for (const auto* part : {&data_.train, &data_.val})
    for (int32_t t : *part)
      check(t >= 0 && t < vocab, "training data has token id ", t, " outside the model's vocabulary [0, ",
            vocab, ")");
}

TaskSpec Curriculum::at(const TaskSpec& task, int64_t step) const {
  if (!active() || step > steps) return task;
  // The fraction of the way, in whole units: lengths by 2, dimensions by 1.
  const int64_t done = std::max<int64_t>(step - 1, 0);
  TaskSpec t = task;
  if (seq > 0) t.seq_len = seq + 2 * ((task.seq_len - seq) / 2 * done / steps);
  if (dim > 0) t.active_dim = dim + (task.dim - dim) * done / steps;
  return t;
}

void Curriculum::check_fits(const TaskSpec& task) const {
  check(steps >= 0, "curriculum: the number of steps must not be negative, got ", steps);
  check(active() || (seq == 0 && dim == 0),
        "curriculum: a starting length or dimension needs a number of steps to grow over");
  if (seq != 0)
    check(seq > 0 && seq <= task.seq_len && (task.seq_len - seq) % 2 == 0, "curriculum: the starting length ",
          seq, " must be in [1, ", task.seq_len, "] and differ from it by a multiple of 2");
  if (dim != 0) {
    check(is_real_task(task.name), "curriculum: ", task.name, " has no dimension to grow (only ",
          "linear_regression does)");
    check(dim > 0 && dim <= task.dim, "curriculum: the starting dimension ", dim, " must be in [1, ",
          task.dim, "]");
  }
}

TaskSource::TaskSource(std::vector<TaskSpec> configs, int64_t n_held_out, uint64_t held_out_seed,
                       Curriculum curriculum)
    : configs_(std::move(configs)), curriculum_(curriculum) {
  check(!configs_.empty(), "a task source needs at least one task configuration");
  check(curriculum_.seq == 0 || configs_.size() == 1, "curriculum: a starting length needs one training ",
        "length, got ", configs_.size());
  Rng rng(held_out_seed);
  for (const TaskSpec& c : configs_) {  // bad settings fail here, once
    curriculum_.check_fits(c);
    make_task_example(c, rng);
    if (curriculum_.active()) make_task_example(curriculum_.at(c, 1), rng);
  }
  for (int64_t i = 0; i < n_held_out; ++i)
    held_out_.push_back(make_task_example(configs_[size_t(i) % configs_.size()], rng));
}

TaskExample TaskSource::draw(Rng& rng, int64_t step) const {
  const TaskSpec& c = configs_.size() == 1 ? configs_[0] : configs_[rng.next() % configs_.size()];
  return make_task_example(curriculum_.at(c, step), rng);
}

void TaskSource::check_model(const ModelSpec& model) const {
  for (const TaskSpec& c : configs_) check_task_fits(c, model);
}

}  // namespace braid
