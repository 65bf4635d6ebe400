// Mamba-1 selective scan mixer. Prefill runs in chunks: the projections of a chunk are
// GEMMs, the diagonal recurrence runs over time with channels split across threads.
// Decode runs a step as one parallel region (projections, conv, scan and gate split across
// the same threads). State: the last d_conv - 1 conv inputs and the
// d_inner x d_state SSM state, both f32, independent of context length.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

class MambaState final : public State {
 public:
  MambaState(int64_t d_inner, int64_t d_state, int64_t d_conv)
      : conv(size_t(d_inner * (d_conv - 1)), 0.0f), ssm(size_t(d_inner * d_state), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (conv.size() + ssm.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<MambaState>(*this); }
  void fields(StateFields& f) override {
    f.floats(conv);
    f.floats(ssm);
    f.count(pos);
  }

  std::vector<float> conv;  // [d_conv - 1][d_inner]: previous conv inputs, oldest first
  std::vector<float> ssm;   // [d_inner][d_state]
  int64_t pos = 0;
};

struct MambaWeights {
  ops::MatRef in_proj;
  const float* in_proj_b = nullptr;
  const float *conv_w = nullptr, *conv_b = nullptr;  // [d_inner][d_conv], [d_inner]
  ops::MatRef x_proj;                                // [dt_rank + 2 d_state][d_inner]
  ops::MatRef dt_proj;                               // [d_inner][dt_rank]
  const float* dt_proj_b = nullptr;
  const float *A_log = nullptr, *D = nullptr;
  ops::MatRef out_proj;
  const float* out_proj_b = nullptr;
  const float *b_norm = nullptr, *c_norm = nullptr, *dt_norm = nullptr;  // optional norm weights
};

class MambaMixer final : public Mixer {
 public:
  MambaMixer(const MambaSpec& spec, int64_t d_model, MambaWeights w);
  const char* kind() const override { return "mamba"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                    Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  void refresh_derived() override;
  size_t fixed_state_bytes() const override {
    return size_t(s_.d_inner * (s_.d_conv - 1 + s_.d_state)) * sizeof(float);
  }
  size_t bytes_per_token() const override { return 0; }

 private:
  // T tokens of one sequence (T == 1 is a step).
  void chunk(const float* x, int64_t T, MambaState& st, float* y, Workspace& ws) const;
  // One token of each of B sequences, token b against sts[b].
  void step(const float* x, int64_t B, MambaState* const* sts, float* y, Workspace& ws) const;
  MambaSpec s_;
  int64_t d_;
  MambaWeights w_;
  std::vector<float> A_;  // -exp(A_log), [d_inner][d_state]
};

}  // namespace braid
