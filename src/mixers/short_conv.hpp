// Gated short convolution mixer (LFM2): y = out_proj(C * conv(B * x)), where
// [B | C | x] = in_proj(h) and conv is a causal depthwise convolution of a few taps.
// The state is the last kernel - 1 values of B * x, so memory is constant in context.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

class ShortConvState final : public State {
 public:
  ShortConvState(int64_t d, int64_t kernel) : window(size_t(d * (kernel - 1)), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return window.size() * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<ShortConvState>(*this); }
  void fields(StateFields& f) override {
    f.floats(window);
    f.count(pos);
  }

  std::vector<float> window;  // [kernel - 1][d], oldest first
  int64_t pos = 0;
};

struct ShortConvWeights {
  ops::MatRef in_proj;
  const float* in_proj_b = nullptr;
  const float *conv_w = nullptr, *conv_b = nullptr;  // [d][kernel], [d]
  ops::MatRef out_proj;
  const float* out_proj_b = nullptr;
};

class ShortConvMixer final : public Mixer {
 public:
  ShortConvMixer(const ShortConvSpec& spec, int64_t d_model, ShortConvWeights w)
      : s_(spec), d_(d_model), w_(w) {}
  const char* kind() const override { return "short_conv"; }
  std::unique_ptr<State> make_state() const override {
    return std::make_unique<ShortConvState>(d_, s_.kernel);
  }
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override { return size_t(d_ * (s_.kernel - 1)) * sizeof(float); }
  size_t bytes_per_token() const override { return 0; }

 private:
  ShortConvSpec s_;
  int64_t d_;
  ShortConvWeights w_;
};

}  // namespace braid
