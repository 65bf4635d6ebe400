// RG-LRU recurrent block (RecurrentGemma / Griffin). Prefill computes the projections, the
// convolution and both gates of a whole chunk with GEMMs; the diagonal recurrence is a scan
// over time, independent per channel; decode is the same code with T = 1.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

class RgLruState final : public State {
 public:
  RgLruState(int64_t width, int64_t d_conv)
      : conv(static_cast<size_t>(width * (d_conv - 1)), 0.0f), h(static_cast<size_t>(width), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (conv.size() + h.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<RgLruState>(*this); }
  void fields(StateFields& f) override {
    f.floats(conv);
    f.floats(h);
    f.count(pos);
  }

  std::vector<float> conv;  // [d_conv - 1][width], oldest first
  std::vector<float> h;     // [width]
  int64_t pos = 0;
};

struct RgLruWeights {
  ops::MatRef linear_x;                                        // [W][D]
  const float* linear_x_b = nullptr;                           // [W]
  ops::MatRef linear_y;                                        // [W][D]
  const float* linear_y_b = nullptr;                           // [W]
  ops::MatRef linear_out;                                      // [D][W]
  const float* linear_out_b = nullptr;                         // [D]
  const float *conv_w = nullptr, *conv_b = nullptr;            // [W][d_conv], [W]
  const float *input_gate = nullptr, *input_gate_b = nullptr;  // [H][bw][bw] (in x out), [H][bw]
  const float *a_gate = nullptr, *a_gate_b = nullptr;          // [H][bw][bw], [H][bw]
  const float* a_param = nullptr;                              // [W] (Lambda)
};

class RgLruMixer final : public Mixer {
 public:
  RgLruMixer(const RgLruSpec& spec, int64_t d_model, RgLruWeights w);
  const char* kind() const override { return "rglru"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  void refresh_derived() override;
  size_t fixed_state_bytes() const override { return size_t(s_.width * s_.d_conv) * sizeof(float); }
  size_t bytes_per_token() const override { return 0; }

 private:
  RgLruSpec s_;
  int64_t d_;
  RgLruWeights w_;
  std::vector<float> log_a_scale_;  // -8 softplus(Lambda) per channel
};

}  // namespace braid
