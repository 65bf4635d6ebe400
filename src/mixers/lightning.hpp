// Lightning attention mixer (MiniMax): linear attention with a fixed per-head decay, run
// through the shared decayed linear-attention kernel chunk by chunk.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

class LinearAttentionState final : public State {
 public:
  LinearAttentionState(int64_t heads, int64_t dk, int64_t dv)
      : S(static_cast<size_t>(heads * dk * dv), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return S.size() * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<LinearAttentionState>(*this); }
  void fields(StateFields& f) override {
    f.floats(S);
    f.count(pos);
  }

  std::vector<float> S;  // [heads][dk][dv]
  int64_t pos = 0;
};

struct LightningWeights {
  ops::MatRef qkv_proj;         // [3 H hd][D], per head [q | k | v]
  ops::MatRef output_gate;      // [H hd][D]
  const float* norm = nullptr;  // [H hd]
  ops::MatRef out_proj;         // [D][H hd]
};

class LightningMixer final : public Mixer {
 public:
  LightningMixer(const LightningSpec& spec, int64_t d_model, LightningWeights w);
  const char* kind() const override { return "lightning"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override {
    return size_t(s_.n_heads * s_.head_dim * s_.head_dim) * sizeof(float);
  }
  size_t bytes_per_token() const override { return 0; }
  // The per-head decay rates (exp(-slope) per token).
  const std::vector<float>& slopes() const { return slope_; }

 private:
  void chunk(const float* x, int64_t Q, LinearAttentionState& st, float* y, Workspace& ws) const;
  LightningSpec s_;
  int64_t d_;
  LightningWeights w_;
  std::vector<float> slope_;
};

}  // namespace braid
