#include "mixers/parallel.hpp"

#include <vector>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid {

ParallelMixer::ParallelMixer(std::vector<Branch> branches, int64_t d_model, Combine combine)
    : branches_(std::move(branches)), d_(d_model), combine_(combine) {
  check(!branches_.empty(), "parallel mixer: no branches");
  check(combine_ != Combine::Gate || branches_.size() == 2,
        "a gated parallel mixer has exactly two branches, not ", branches_.size());
  for (const Branch& b : branches_) {
    if (!kind_.empty()) kind_.push_back(combine_ == Combine::Gate ? '*' : '+');
    kind_.append(b.mixer->kind());
  }
}

std::unique_ptr<State> ParallelMixer::make_state() const {
  auto s = std::make_unique<CompositeState>();
  for (const Branch& b : branches_) s->parts.push_back(b.mixer->make_state());
  return s;
}

namespace {

CompositeState* composite(State* state, size_t parts) {
  auto* st = dynamic_cast<CompositeState*>(state);
  check(st != nullptr && st->parts.size() == parts,
        "parallel mixer layer was given a state of another mixer");
  return st;
}

}  // namespace

void ParallelMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  CompositeState* st = composite(&state, branches_.size());
  combine(
      x, T,
      [&](size_t i, const float* in, float* out) {
        branches_[i].mixer->forward(in, T, *st->parts[i], out, ws);
      },
      y, ws);
}

// Each branch batches its own way; the combination is per value, so every row is what it is
// alone.
void ParallelMixer::decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                                 Workspace& ws) const {
  std::vector<std::vector<State*>> parts(branches_.size(), std::vector<State*>(static_cast<size_t>(B)));
  for (int64_t q = 0; q < B; ++q) {
    CompositeState* st = composite(states[q], branches_.size());
    for (size_t i = 0; i < branches_.size(); ++i) parts[i][size_t(q)] = st->parts[i].get();
  }
  combine(
      x, B,
      [&](size_t i, const float* in, float* out) {
        branches_[i].mixer->decode_batch(in, B, D, parts[i].data(), out, ws);
      },
      y, ws);
}

void ParallelMixer::combine(const float* x, int64_t T,
                            const std::function<void(size_t, const float*, float*)>& run, float* y,
                            Workspace& ws) const {
  const int64_t n = T * d_;
  float* out = ws.get(Workspace::kBranchOut, size_t(n));
  for (size_t i = 0; i < branches_.size(); ++i) {
    const Branch& b = branches_[i];
    const float* in = x;
    if (b.in_scale != 1.0f) {
      float* scaled = ws.get(Workspace::kBranchIn, size_t(n));
      for (int64_t j = 0; j < n; ++j) scaled[j] = x[j] * b.in_scale;
      in = scaled;
    }
    run(i, in, i == 0 ? y : out);
    if (i == 0) {
      if (b.out_scale != 1.0f)
        for (int64_t j = 0; j < n; ++j) y[j] *= b.out_scale;
    } else if (combine_ == Combine::Gate) {
      for (int64_t j = 0; j < n; ++j) y[j] *= ops::sigmoid(out[j] * b.out_scale);
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] += out[j] * b.out_scale;
    }
  }
}

// y = sum_b out_scale_b f_b(in_scale_b x): each branch's backward sees out_scale_b dy, and
// its input gradient is scaled by in_scale_b and summed.
// With the gate, y = b0 * s, s = sigmoid(b1): dL/db0 = dy * s and dL/db1 = dy * b0 * s (1 - s),
// so both branch outputs are recomputed first.
void ParallelMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const {
  const size_t n = size_t(T * d_);
  std::vector<float> in(n), dyb(n), dxb(n);
  std::vector<std::vector<float>> outs;  // Gate: each branch's output b_i
  if (combine_ == Combine::Gate) {
    Workspace ws;
    for (const Branch& b : branches_) {
      for (size_t i = 0; i < n; ++i) in[i] = x[i] * b.in_scale;
      std::unique_ptr<State> st = b.mixer->make_state();
      outs.emplace_back(n);
      b.mixer->forward(in.data(), T, *st, outs.back().data(), ws);
      for (float& v : outs.back()) v *= b.out_scale;
    }
  }
  for (size_t i = 0; i < n; ++i) dx[i] = 0.0f;
  for (size_t k = 0; k < branches_.size(); ++k) {
    const Branch& b = branches_[k];
    for (size_t i = 0; i < n; ++i) {
      in[i] = x[i] * b.in_scale;
      float d = dy[i];
      if (combine_ == Combine::Gate) {
        const float s = ops::sigmoid(outs[1][i]);
        d = k == 0 ? d * s : d * outs[0][i] * s * (1.0f - s);
      }
      dyb[i] = d * b.out_scale;
    }
    b.mixer->backward(in.data(), T, dyb.data(), dxb.data(), g);
    for (size_t i = 0; i < n; ++i) dx[i] += dxb[i] * b.in_scale;
  }
}

size_t ParallelMixer::fixed_state_bytes() const {
  size_t n = 0;
  for (const Branch& b : branches_) n += b.mixer->fixed_state_bytes();
  return n;
}

size_t ParallelMixer::bytes_per_token() const {
  size_t n = 0;
  for (const Branch& b : branches_) n += b.mixer->bytes_per_token();
  return n;
}

}  // namespace braid
