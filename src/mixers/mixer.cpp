#include "mixers/mixer.hpp"

#include "core/error.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

int64_t CompositeState::position() const {
  for (const auto& p : parts)
    if (p) return p->position();
  return 0;
}

size_t CompositeState::bytes() const {
  size_t n = 0;
  for (const auto& p : parts)
    if (p) n += p->bytes();
  return n;
}

std::unique_ptr<State> CompositeState::clone_with_room(int64_t more) const {
  auto c = std::make_unique<CompositeState>();
  for (const auto& p : parts) c->parts.push_back(p ? p->clone_with_room(more) : nullptr);
  return c;
}

void CompositeState::fields(StateFields& f) {
  for (auto& p : parts) {
    f.present(p != nullptr);
    if (p) p->fields(f);
  }
}

void Mixer::decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                         Workspace& ws) const {
  // Each sequence exactly as alone: a mixer may pass several rows per token to linear()
  // (memory as context reads the memory beside the token), which the batch's row mode
  // would compute as separate tokens, with another summation order than alone.
  ops::DecodeRows alone(false);
  for (int64_t b = 0; b < B; ++b) forward(x + b * D, 1, *states[b], y + b * D, ws);
}

void Mixer::backward(const float*, int64_t, const float*, float*, GradSink&) const {
  fail("training is not supported for ", kind(), " layers yet");
}

}  // namespace braid
