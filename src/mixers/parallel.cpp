#include "mixers/parallel.hpp"

#include <vector>

#include "core/error.hpp"

namespace braid {

ParallelMixer::ParallelMixer(std::vector<Branch> branches, int64_t d_model)
    : branches_(std::move(branches)), d_(d_model) {
  check(!branches_.empty(), "parallel mixer: no branches");
  for (const Branch& b : branches_) {
    if (!kind_.empty()) kind_.push_back('+');
    kind_.append(b.mixer->kind());
  }
}

std::unique_ptr<State> ParallelMixer::make_state() const {
  auto s = std::make_unique<CompositeState>();
  for (const Branch& b : branches_) s->parts.push_back(b.mixer->make_state());
  return s;
}

void ParallelMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<CompositeState*>(&state);
  check(st != nullptr && st->parts.size() == branches_.size(),
        "parallel mixer layer was given a state of another mixer");
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
    b.mixer->forward(in, T, *st->parts[i], i == 0 ? y : out, ws);
    if (i == 0) {
      if (b.out_scale != 1.0f)
        for (int64_t j = 0; j < n; ++j) y[j] *= b.out_scale;
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] += out[j] * b.out_scale;
    }
  }
}

// y = sum_b out_scale_b f_b(in_scale_b x): each branch's backward sees out_scale_b dy, and
// its input gradient is scaled by in_scale_b and summed.
void ParallelMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const {
  const size_t n = size_t(T * d_);
  std::vector<float> in(n), dyb(n), dxb(n);
  for (size_t i = 0; i < n; ++i) dx[i] = 0.0f;
  for (const Branch& b : branches_) {
    for (size_t i = 0; i < n; ++i) in[i] = x[i] * b.in_scale, dyb[i] = dy[i] * b.out_scale;
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
