// Where a Trainer's sequences come from: random windows of a token stream (language
// modelling), or the generator of a synthetic task (loss only on the task's answers).
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.hpp"
#include "tasks/tasks.hpp"
#include "train/data.hpp"

namespace braid {

class TrainingSource {
 public:
  virtual ~TrainingSource() = default;
  // One training sequence (inputs and, per position, the token to predict or -1). Every
  // random choice comes from `rng`, which the trainer checkpoints, so a resumed run draws
  // the same sequences.
  virtual TaskExample draw(Rng& rng) const = 0;
  // The fixed held-out sequences Trainer::evaluate averages the loss over (may be empty).
  virtual const std::vector<TaskExample>& held_out() const = 0;
  // Throws when the model cannot take these sequences (a token outside its vocabulary, a
  // real-valued task's widths), naming what does not fit.
  virtual void check_model(const ModelSpec& model) const = 0;
};

// Windows of seq + 1 tokens of the training stream: seq inputs and their next tokens. Held
// out: up to `eval_windows` consecutive windows of the held-out stream.
class TextWindows final : public TrainingSource {
 public:
  TextWindows(TokenSplit data, int64_t seq, int64_t eval_windows);
  TaskExample draw(Rng& rng) const override;
  const std::vector<TaskExample>& held_out() const override { return held_out_; }
  void check_model(const ModelSpec& model) const override;

 private:
  // The window of seq tokens from `at` and its next-token targets.
  TaskExample window(std::vector<int32_t>::const_iterator at) const {
    TaskExample e;
    e.input.assign(at, at + seq_);
    e.target.assign(at + 1, at + seq_ + 1);
    return e;
  }
  TokenSplit data_;
  int64_t seq_;
  std::vector<TaskExample> held_out_;
};

// Examples of one task, each drawn at one of `configs` chosen uniformly (e.g. the same task
// at several lengths). Held out: `n_held_out` examples drawn from `held_out_seed`, cycling
// through the configs.
class TaskSource final : public TrainingSource {
 public:
  TaskSource(std::vector<TaskSpec> configs, int64_t n_held_out, uint64_t held_out_seed);
  TaskExample draw(Rng& rng) const override;
  const std::vector<TaskExample>& held_out() const override { return held_out_; }
  void check_model(const ModelSpec& model) const override;
  const std::vector<TaskSpec>& configs() const { return configs_; }

 private:
  std::vector<TaskSpec> configs_;
  std::vector<TaskExample> held_out_;
};

}  // namespace braid
