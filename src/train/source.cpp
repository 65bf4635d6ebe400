#include "train/source.hpp"

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

TaskExample TextWindows::draw(Rng& rng) const {
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

TaskSource::TaskSource(std::vector<TaskSpec> configs, int64_t n_held_out, uint64_t held_out_seed)
    : configs_(std::move(configs)) {
  check(!configs_.empty(), "a task source needs at least one task configuration");
  Rng rng(held_out_seed);
  for (const TaskSpec& c : configs_) make_task_example(c, rng);  // bad settings fail here, once
  for (int64_t i = 0; i < n_held_out; ++i)
    held_out_.push_back(make_task_example(configs_[size_t(i) % configs_.size()], rng));
}

TaskExample TaskSource::draw(Rng& rng) const {
  const TaskSpec& c = configs_.size() == 1 ? configs_[0] : configs_[rng.next() % configs_.size()];
  return make_task_example(c, rng);
}

void TaskSource::check_model(const ModelSpec& model) const {
  for (const TaskSpec& c : configs_) check_task_fits(c, model);
}

}  // namespace braid
