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
  // One training sequence (inputs and, per position, the token to predict or -1) for
  // optimizer step `step` (1-based). Every random choice comes from `rng`, which the trainer
  // checkpoints with the step, so a resumed run draws the same sequences.
  virtual TaskExample draw(Rng& rng, int64_t step) const = 0;
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
  TaskExample draw(Rng& rng, int64_t step) const override;
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

// A curriculum (as Garg et al. train in-context regression): training starts on shorter
// sequences and, for linear_regression, fewer active dimensions of x, and both grow in whole
// steps, linearly in the optimizer step, to the task's own over the first `steps` steps.
struct Curriculum {
  int64_t steps = 0;  // 0: no curriculum
  int64_t seq = 0;    // the length at step 1 (0: the task's own); grows by 2 (one point)
  int64_t dim = 0;    // linear_regression: the active dimensions at step 1 (0: all)
  bool active() const { return steps > 0; }
  // The task as drawn at optimizer step `step` (1-based): the task itself from step steps + 1.
  TaskSpec at(const TaskSpec& task, int64_t step) const;
  // Throws a one-line error naming what does not fit `task`.
  void check_fits(const TaskSpec& task) const;
};

// Examples of one task, each drawn at one of `configs` chosen uniformly (e.g. the same task
// at several lengths), grown into by `curriculum` (a length curriculum needs one config).
// Held out: `n_held_out` examples drawn from `held_out_seed`, cycling through the configs
// (their full length and dimension).
class TaskSource final : public TrainingSource {
 public:
  TaskSource(std::vector<TaskSpec> configs, int64_t n_held_out, uint64_t held_out_seed,
             Curriculum curriculum = {});
  TaskExample draw(Rng& rng, int64_t step) const override;
  const std::vector<TaskExample>& held_out() const override { return held_out_; }
  void check_model(const ModelSpec& model) const override;
  const std::vector<TaskSpec>& configs() const { return configs_; }

 private:
  std::vector<TaskSpec> configs_;
  Curriculum curriculum_;
  std::vector<TaskExample> held_out_;
};

}  // namespace braid
