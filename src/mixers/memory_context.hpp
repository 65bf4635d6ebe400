// Memory as context (Titans' MAC): attention over one chunk of tokens at a time, each token
// beside the long-term memory's reading of it, and the memory learning from what the
// attention made of them. Positions are cut into the memory's chunks; for a chunk x_1..x_n
//   h_j = memory.read(x_j)                 the memory entering the chunk, not updated, with a
//                                          query projection of its own (the memory's serves y)
//   z   = [p_1 .. p_P, h_1, x_1, h_2, x_2, ..., h_n, x_n]   (p: learned persistent rows)
//   a   = attention(z) from an empty cache, causal, so x_j sees p, h_<=j and x_<=j
//   y_j = a at x_j's row
//   m_j = memory(y_j)                      the Titans step: learns from y, reads with y
//   out_j = y_j * sigmoid(m_j)
// The reading of each token sits beside it (not all readings before the chunk) so that
// decoding a token never needs a later one. The attention's cache spans one chunk
// (P + 2 chunk rows), so the state is bounded.
#pragma once
#include <memory>

#include "mixers/mixer.hpp"
#include "mixers/titans.hpp"

namespace braid {

class MemoryContextMixer final : public Mixer {
 public:
  // read_q: the reading's query projection [heads x head_dim][d_model]; persistent:
  // [n_persistent][d_model] (null when n_persistent == 0).
  MemoryContextMixer(std::unique_ptr<Mixer> attention, std::unique_ptr<TitansMixer> memory,
                     const float* read_q, const float* persistent, int64_t n_persistent, int64_t d_model);
  const char* kind() const override { return "memory-as-context"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  void refresh_derived() override {
    attention_->refresh_derived();
    memory_->refresh_derived();
  }
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override { return 0; }

 private:
  // What the backward needs of a forward: readings h, attention outputs y, memory outputs m
  // ([T][D] each).
  struct Trace {
    std::vector<float> h, y, m;
  };
  void run(const float* x, int64_t T, CompositeState& st, float* out, Workspace& ws, Trace* trace) const;
  // z for n tokens of a chunk: the persistent rows when `first` (the chunk starts here), then
  // each reading followed by its token. Returns the number of rows.
  int64_t interleave(const float* h, const float* x, int64_t n, bool first, float* z) const;

  std::unique_ptr<Mixer> attention_;
  std::unique_ptr<TitansMixer> memory_;
  const float* read_q_;
  const float* persistent_;
  int64_t n_persistent_, d_;
};

}  // namespace braid
