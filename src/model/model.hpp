// Model: embedding, a list of blocks (norm -> token mixer -> residual, norm -> MLP ->
// residual), final norm and LM head, built from a ModelSpec and canonical weights.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/tensor.hpp"
#include "mixers/mixer.hpp"
#include "model/ffn.hpp"
#include "model/spec.hpp"

namespace braid {

using Weights = std::map<std::string, Tensor>;  // canonical name -> tensor

// Per-layer hidden states, as references dump them: [0] the embedding output,
// [i] the output of block i-1, [L] the final-norm output (for specs without
// hidden_states_from_embedding: [i] the output of block i, then the final-norm output).
// Each is T x d_model.
struct HiddenCapture {
  std::vector<std::vector<float>> states;
  // For a looped model: per core iteration i >= 1, how much it changed the stream,
  // max over positions t of ||h_i[t] - h_(i-1)[t]|| / ||h_i[t]|| (h_i: the stream after
  // iteration i); what the loop exit rule (runtime/loop_exit.hpp) reads.
  std::vector<double> loop_change;
};

enum class LogitsMode { None, Last, All };

// The per-sequence state of segment recurrence (ModelSpec::segment), kept after the layer
// states: the current memory [memory_tokens, d_model] and how many tokens of the current
// segment have been consumed.
class SegmentState final : public State {
 public:
  int64_t position() const override { return position_; }
  size_t bytes() const override { return memory.size() * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<SegmentState>(*this); }
  void fields(StateFields& f) override {
    f.floats(memory);
    f.count(filled);
    f.count(position_);
    if (f.loading())
      check(filled < length, "segment state: ", filled, " tokens of a ", length, "-token segment");
  }

  std::vector<float> memory;
  int64_t filled = 0, position_ = 0;
  int64_t length = 0;  // tokens per segment (the spec's), never more than filled can reach
};

// One application of a block in a forward pass. Blocks run in order; a looped core
// (ModelSpec::loop) runs once per iteration, `iter` counting from 0 (-1 outside the loop).
// The per-sequence states are indexed like the steps.
struct LayerStep {
  size_t block = 0;
  int64_t iter = -1;
};

// Cross-entropy summed over the positions that have a target, and how many did.
struct LossSum {
  double sum = 0;
  int64_t count = 0;
};

class Model {
 public:
  // Checks that every declared parameter is present with the declared shape (F32,
  // or BF16/F16 converted to F32 on load); `source` names the origin in errors.
  Model(ModelSpec spec, Weights weights, const std::string& source);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const Weights& weights() const { return weights_; }
  // Parameters that may be stored in a compact format (BF16, F16, Q8_0, Q4_0): the matrices
  // that only linear() reads; every other parameter is used as f32.
  const std::set<std::string>& matrix_params() const { return matrix_params_; }
  // The token mixer of a layer; null for a block that is only an MLP.
  const Mixer* mixer(size_t layer) const { return mixers_[layer].get(); }
  // Per-sequence state over all layers (or of one layer, token and channel mixer
  // together): fixed bytes, and bytes added per token of context. A segmented model's
  // whole-model state is fixed: at most one segment's rows per layer, and its memory.
  size_t fixed_state_bytes() const;
  size_t state_bytes_per_token() const;
  size_t layer_fixed_state_bytes(size_t layer) const;
  size_t layer_bytes_per_token(size_t layer) const;
  int64_t n_layers() const { return int64_t(mixers_.size()); }
  int64_t n_params() const;
  size_t weight_bytes() const;
  // Bytes of weights held in each storage format ("F32", "BF16", "Q8_0", ...).
  std::map<std::string, size_t> weight_bytes_by_format() const;

  // The order blocks run in with `loops` iterations of the looped core (0: the spec's
  // default; ignored without a loop).
  std::vector<LayerStep> schedule(int64_t loops = 0) const;
  // Entry s of schedule(loops) (loops >= 1), without building the list.
  LayerStep step_at(size_t s, int64_t loops) const;
  // The loop count a list of n_states states was made for (1 without a loop); throws
  // when no loop count gives that many.
  int64_t loops_for_states(size_t n_states) const;
  // States for one sequence run with `loops` iterations (0: the spec's default). The
  // count chosen here is the depth every forward with these states runs at. With
  // persistent tokens the states have already consumed them.
  std::vector<std::unique_ptr<State>> make_states(int64_t loops = 0) const;

  // Runs T tokens through every layer, continuing from `states` (advanced by T).
  // Writes logits of the last token ([V]) or all tokens ([T, V]) per `mode`.
  void forward(const int32_t* tokens, int64_t T, std::vector<std::unique_ptr<State>>& states, Workspace& ws,
               LogitsMode mode, float* logits, HiddenCapture* capture = nullptr) const;

  // Batched decoding: one token for each of B sequences (seqs[q] their states, advanced by
  // one), logits [B, V]. Row q's logits equal, bit for bit, those of forward() with that
  // token and those states alone: the stateless layers and the head read their weights once
  // for the batch (ops::DecodeRows), the stateful mixers run per sequence. Not for segmented
  // models.
  void forward_batch(const int32_t* tokens, int64_t B, std::vector<std::unique_ptr<State>>* const* seqs,
                     Workspace& ws, float* logits) const;

  // forward() for a model with real-valued inputs (spec.input_dim): x holds T rows of
  // input_dim values; `out` receives the head's outputs (vocab_size values per row) for the
  // last row or all rows, per `mode`.
  void forward_vectors(const float* x, int64_t T, std::vector<std::unique_ptr<State>>& states, Workspace& ws,
                       LogitsMode mode, float* out, HiddenCapture* capture = nullptr) const;

  // Training, one sequence from an empty state (after the persistent tokens, if any): the
  // cross-entropy of predicting
  // targets[t] (-1: no target) from tokens[0..t], summed; adds grad_scale * d(sum)/dW
  // into g. Keeps two T x d_model activations per block and recomputes the rest
  // block by block on the way back (model_backward.cpp).
  // A looped model runs `loops` iterations (0: the spec's default).
  LossSum loss_and_grad(const int32_t* tokens, const int32_t* targets, int64_t T, float grad_scale,
                        GradSink& g, int64_t loops = 0) const;
  // The same for a model with real-valued inputs: x [T, input_dim], y [T, vocab_size] the
  // values to predict at each row (a row of NaN: no target); the loss is the squared error
  // summed over every target value (count: how many values).
  LossSum regression_loss_and_grad(const float* x, const float* y, int64_t T, float grad_scale, GradSink& g,
                                   int64_t loops = 0) const;

  // Every parameter's address as the forward pass reads it (for norm_weight_offset
  // norms, the (1 + w) copy) with its name: how gradient buffers are found.
  std::vector<std::pair<const float*, std::string>> param_addresses() const;
  // Writable parameter data for optimizers; the weights must be owned (not a read-only
  // mapping of a checkpoint file). Call refresh_derived() after changing weights in
  // place: it recomputes what the model and its mixers derive from them.
  float* param_mut(const std::string& name);
  void refresh_derived();

 private:
  // Pointers into weights_ resolved once, so the forward pass does no name lookups.
  struct BlockWeights {
    const float *norm1 = nullptr, *norm2 = nullptr;
    const float *norm1_b = nullptr, *norm2_b = nullptr;  // LayerNorm biases
    FfnWeights mlp;
    MoeWeights moe;
  };
  // A parameter as f32 values (converted from BF16 / F16 on first use).
  const float* w(const std::string& name);
  const float* w_opt(const std::string& name);
  // A matrix that only linear() reads, in the format it is stored in.
  ops::MatRef m(const std::string& name);
  ops::MatRef m_opt(const std::string& name);
  // A norm weight as the norm applies it: w, or 1 + w under spec.norm_weight_offset.
  const float* norm_w(const std::string& name);
  std::unique_ptr<Mixer> make_mixer(MixerKind kind, size_t layer);

  ModelSpec spec_;
  std::string source_;
  Weights weights_;
  std::set<std::string> matrix_params_;                     // names m() gave out
  std::map<std::string, std::vector<float>> offset_norms_;  // 1 + w, for norm_weight_offset
  std::vector<std::unique_ptr<Mixer>> mixers_;
  // Stateful channel mixers (RWKV); null where the channel mixer is an MLP / MoE / none.
  // A layer with one keeps a CompositeState {token mixer state, channel mixer state}.
  std::vector<std::unique_ptr<Mixer>> cmixers_;
  std::vector<BlockWeights> blocks_;
  ops::MatRef embed_, head_;
  const float* final_norm_ = nullptr;
  const float *final_norm_b_ = nullptr, *embed_norm_ = nullptr, *embed_norm_b_ = nullptr;
  const float *loop_step_embed_ = nullptr, *loop_count_embed_ = nullptr;
  const float* persistent_ = nullptr;                      // [persistent_tokens, D]
  const float *read_in_ = nullptr, *read_in_b_ = nullptr;  // real-valued inputs
  const float* memory_ = nullptr;                          // segment recurrence's first memory
  // Segment recurrence (model_segments.cpp). Layer states for a fresh segment whose read rows
  // hold `memory` (written into the layer states, which are states[0 .. n - 1)).
  void start_segment(std::vector<std::unique_ptr<State>>& states, const float* memory, int64_t loops,
                     Workspace& ws) const;
  // forward() for a segmented model: the tokens cut at segment ends, where the write rows
  // run and the next segment starts.
  void forward_segments(const int32_t* tokens, int64_t T, std::vector<std::unique_ptr<State>>& states,
                        Workspace& ws, LogitsMode mode, float* logits) const;
  LossSum segment_loss_and_grad(const int32_t* tokens, const int32_t* targets, int64_t T, float grad_scale,
                                GradSink& g, int64_t loops) const;
  // Cross-entropy of rows x [A, D] (logits scaled and capped as the forward does) against
  // tgt; writes dL/dx and adds the head's gradient.
  LossSum cross_entropy_head(const float* x, int64_t A, const int32_t* tgt, float grad_scale, float* dx,
                             GradSink& g) const;
  std::unique_ptr<State> make_layer_state(size_t block) const;
  // Fresh states of every layer step at `loops` iterations (no segment state).
  std::vector<std::unique_ptr<State>> layer_states(int64_t loops) const;
  // The embedding rows of n tokens (already checked against the vocabulary) into rows [n, D].
  void embed_tokens(const int32_t* tokens, int64_t n, float* rows) const;
  // The training pass both losses share. emb [T, D]: the rows entering the model (the
  // persistent rows, which it fills, then the inputs' embeddings or read-in rows); `rows`:
  // the positions with a target. head(x [A, D], A, dx) returns the loss of the final-norm
  // output rows x and writes dL/dx (adding its weights' gradients). On return emb holds
  // dL/d(emb) for the caller to route into its input parameters.
  using HeadLoss = std::function<LossSum(const float* x, int64_t A, float* dx)>;
  LossSum train_pass(std::vector<float>& emb, const std::vector<int64_t>& rows, const HeadLoss& head,
                     GradSink& g, int64_t loops) const;
  // forward() after the embedding lookup: the T rows in ws's kHidden slot (embeddings
  // before the multiplier) through every layer.
  void forward_rows(int64_t T, std::vector<std::unique_ptr<State>>& states, Workspace& ws, LogitsMode mode,
                    float* logits, HiddenCapture* capture) const;
  // The same over n_seqs sequences: n_seqs == 1 (T rows of one sequence) or n_seqs == T
  // (row q is one token of sequence q).
  void forward_rows(int64_t T, std::vector<std::unique_ptr<State>>* const* seqs, int64_t n_seqs,
                    Workspace& ws, LogitsMode mode, float* logits, HiddenCapture* capture) const;
  // Before iteration `iter` of `loops`: keeps the core's input in e (iteration 0) or adds
  // it to the stream h (input injection), then adds the step embeddings.
  void loop_entry(float* h, float* e, int64_t iter, int64_t loops, int64_t T) const;
  // Its backward: dh is dL/d(stream after the entry) and becomes dL/d(stream before it);
  // de accumulates the gradient of the core's input.
  void loop_entry_backward(float* dh, float* de, int64_t iter, int64_t loops, int64_t T, GradSink& g) const;
  // max over rows t of ||after[t] - before[t]|| / ||after[t]|| (rows of d_model values).
  double relative_change(const float* before, const float* after, int64_t T) const;
  // RMSNorm or LayerNorm of rows x[T, D] into y, per spec.norm_kind (eps 0: spec.norm_eps).
  void norm(const float* x, const float* w, const float* b, int64_t T, float* y, double eps = 0) const;
  // h = base * alpha + v * beta * residual_multiplier over `count` values, base = h or
  // (normed residual) n.
  void add_residual(float* h, const float* n, const float* v, int64_t count, bool from_norm, double alpha,
                    double beta) const;
  // Its backward: dx written or added; weight (and bias) gradients added into g.
  void norm_backward(const float* x, const float* w, const float* b, int64_t T, const float* dy, float* dx,
                     bool accumulate_dx, GradSink& g, double eps = 0) const;
};

}  // namespace braid
