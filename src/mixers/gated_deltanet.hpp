// Gated DeltaNet mixer. Prefill runs chunk by chunk in the WY / UT-transform form: inside a
// chunk the delta-rule corrections are one unit-lower-triangular solve, the outputs and
// the state update are GEMMs, and the state is carried across chunks; decode is the
// direct recurrence. Decays stay in log space: inside a chunk only exp(c_i - c_j) with
// i >= j and exp(c_i) relative to the chunk start are formed, all <= 1.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"

namespace braid {

class GatedDeltaNetState final : public State {
 public:
  explicit GatedDeltaNetState(const GatedDeltaNetSpec& s)
      : conv(static_cast<size_t>(s.conv_dim() * (s.d_conv - 1)), 0.0f),
        S(static_cast<size_t>(s.n_v_heads * s.head_k_dim * s.head_v_dim), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (conv.size() + S.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<GatedDeltaNetState>(*this); }

  std::vector<float> conv;  // [d_conv - 1][conv_dim] (q | k | v channels), oldest first
  std::vector<float> S;     // [n_v_heads][head_k_dim][head_v_dim]
  int64_t pos = 0;
};

struct GatedDeltaNetWeights {
  const float *in_proj_qkvz = nullptr, *in_proj_ba = nullptr;  // [2K + 2V][D], [2 n_v][D]
  const float* conv_w = nullptr;                               // [conv_dim][d_conv]
  const float *dt_bias = nullptr, *A_log = nullptr;            // [n_v]
  const float* norm = nullptr;                                 // [head_v_dim]
  const float* out_proj = nullptr;                             // [D][V]
};

class GatedDeltaNetMixer final : public Mixer {
 public:
  GatedDeltaNetMixer(const GatedDeltaNetSpec& spec, int64_t d_model, GatedDeltaNetWeights w);
  const char* kind() const override { return "gated_deltanet"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override { return 0; }

 private:
  void chunk(const float* x, int64_t Q, GatedDeltaNetState& st, float* y, Workspace& ws) const;
  GatedDeltaNetSpec s_;
  int64_t d_;
  GatedDeltaNetWeights w_;
  std::vector<float> A_;  // -exp(A_log) per value head
};

}  // namespace braid
