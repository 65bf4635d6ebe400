// The training loop: sequences from a TrainingSource (random windows of a packed token
// stream, or a synthetic task), gradient accumulation, clipping, AdamW with a schedule,
// held-out evaluation, and checkpoints that resume to exactly the same losses.
#pragma once
#include <memory>
#include <string>

#include "io/json.hpp"
#include "model/grads.hpp"
#include "model/model.hpp"
#include "train/data.hpp"
#include "train/optimizer.hpp"
#include "train/source.hpp"

namespace braid {

struct TrainOptions {
  int64_t steps = 100, batch = 8, accum = 1;
  int64_t seq = 128;  // tokens per text window (a task's examples have their own lengths)
  Schedule schedule;  // total is set to `steps`
  AdamWConfig adam;
  double clip = 1.0;  // global gradient norm limit (<= 0: none)
  uint64_t seed = 0;  // data order
  double val_fraction = 0.05;
  int64_t eval_windows = 16;  // held-out windows of seq + 1 tokens per evaluation
  // Cadence of the training loop that drives the Trainer (0: only at the end); kept in
  // the state so that a resumed run evaluates and checkpoints as the original did.
  int64_t eval_every = 0, save_every = 0;
};
json options_to_json(const TrainOptions& o);
TrainOptions options_from_json(const json& j, const std::string& where);

struct StepStats {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;   // trained on in this step
  int64_t answers = 0;  // positions with a target (the loss is their mean)
};

class Trainer {
 public:
  // The model's weights must be owned (they are updated in place). Sequences are drawn
  // from `source` with an Rng seeded by o.seed.
  Trainer(std::unique_ptr<Model> model, const TrainOptions& o, std::unique_ptr<TrainingSource> source);
  // Language modelling on windows of o.seq tokens (TextWindows).
  Trainer(std::unique_ptr<Model> model, const TrainOptions& o, TokenSplit data);

  // Throws, leaving the weights and optimizer as they were, when the step's loss or
  // gradient norm is not finite.
  StepStats step();
  // Mean loss per target (cross-entropy; squared error for real-valued tasks) over the
  // source's held-out sequences (NaN when there are none), at a looped model's default depth.
  double evaluate() const;
  int64_t steps_done() const { return opt_.steps(); }
  const Model& model() const { return *model_; }
  const TrainOptions& options() const { return o_; }
  void set_total_steps(int64_t steps);

  // Everything a resume needs (weights, moments, step, data order) in one safetensors
  // file written atomically; load_state checks it matches this model before changing
  // anything.
  void save_state(const std::string& path) const;
  void load_state(const std::string& path);

  // The loop count sequence `seq` of step `step` trains at (looped models: uniform over
  // the spec's training range; 0 otherwise).
  int64_t loops_for(int64_t step, int64_t seq) const;

 private:
  std::unique_ptr<Model> model_;
  TrainOptions o_;
  std::unique_ptr<TrainingSource> source_;
  Gradients grads_;
  std::vector<Gradients> shards_;  // per-thread gradients for threads 1.. of a step
  AdamW opt_;
  Rng rng_;  // draws the training sequences; checkpointed
};

// Weights copied into memory the model owns (e.g. from a mapped checkpoint).
Weights owned_copy(const Weights& w);

}  // namespace braid
