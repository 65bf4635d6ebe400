// Gated linear attention mixer (GLA family) on the shared decayed linear-attention kernel:
// per-key-channel, per-head or fixed decays, chunked prefill, one-pass decode.
#pragma once
#include <vector>

#include "mixers/lightning.hpp"  // LinearAttentionState
#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

struct GlaWeights {
  ops::MatRef q, k, v;  // [H dk][D], [H dk][D], [H dv][D]
  // PerChannel: gate_a [rank][D], gate_b [H dk][rank], gate_bias [H dk].
  // PerHead: gate_b [H][D], gate_bias [H]. Fixed: none.
  ops::MatRef gate_a, gate_b;
  const float* gate_bias = nullptr;
  ops::MatRef g;                // output gate [H dv][D]
  const float* norm = nullptr;  // [dv]
  ops::MatRef o;                // [D][H dv]
};

class GlaMixer final : public Mixer {
 public:
  GlaMixer(const GlaSpec& spec, int64_t d_model, GlaWeights w);
  const char* kind() const override { return "gla"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override {
    return size_t(s_.n_heads * s_.head_k_dim * s_.head_v_dim) * sizeof(float);
  }
  size_t bytes_per_token() const override { return 0; }

 private:
  void chunk(const float* x, int64_t Q, LinearAttentionState& st, float* y, Workspace& ws) const;
  GlaSpec s_;
  int64_t d_;
  GlaWeights w_;
  std::vector<float> fixed_log_decay_;  // Fixed: log(1 - 2^(-5 - h))
};

}  // namespace braid
