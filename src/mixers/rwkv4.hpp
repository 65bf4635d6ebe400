// RWKV-4 time mixing and channel mixing. Projections of a whole chunk are GEMMs; the WKV
// recurrence is a scan over time that is independent per channel, so prefill runs it for
// all channels at once (split across threads) and decode is the same code with T = 1.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

// Token shift: out[t] = x[t] * mix + prev[t] * (1 - mix) with prev[0] = shift and
// prev[t] = x[t-1] (rows of D).
void rwkv_token_shift(const float* x, int64_t T, int64_t D, const float* shift, const float* mix, float* out);
// Its backward from an empty state (shift = 0): dx += dL/dx, dmix += dL/dmix (if not null).
void rwkv_token_shift_backward(const float* x, int64_t T, int64_t D, const float* mix, const float* dout,
                               float* dx, float* dmix);

class Rwkv4State final : public State {
 public:
  Rwkv4State(int64_t d_model, int64_t channels)
      : shift(static_cast<size_t>(d_model), 0.0f),
        num(static_cast<size_t>(channels), 0.0f),
        den(static_cast<size_t>(channels), 0.0f),
        max(static_cast<size_t>(channels), -1e38f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override {
    return (shift.size() + num.size() + den.size() + max.size()) * sizeof(float);
  }
  std::unique_ptr<State> clone() const override { return std::make_unique<Rwkv4State>(*this); }
  void fields(StateFields& f) override {
    f.floats(shift);
    f.floats(num);
    f.floats(den);
    f.floats(max);
    f.count(pos);
  }

  std::vector<float> shift;          // previous token's (normed) input
  std::vector<float> num, den, max;  // WKV numerator, denominator and their common log scale
  int64_t pos = 0;
};

struct Rwkv4Weights {
  const float *time_decay = nullptr, *time_first = nullptr;          // [A]
  const float *mix_k = nullptr, *mix_v = nullptr, *mix_r = nullptr;  // [D]
  ops::MatRef key, value, receptance;                                // [A][D]
  ops::MatRef output;                                                // [D][A]
};

class Rwkv4TimeMix final : public Mixer {
 public:
  Rwkv4TimeMix(const Rwkv4Spec& spec, int64_t d_model, Rwkv4Weights w);
  const char* kind() const override { return "rwkv4"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  void refresh_derived() override;
  size_t fixed_state_bytes() const override { return size_t(d_ + 3 * s_.attn_dim) * sizeof(float); }
  size_t bytes_per_token() const override { return 0; }

 private:
  Rwkv4Spec s_;
  int64_t d_;
  Rwkv4Weights w_;
  std::vector<float> decay_;  // -exp(time_decay)
};

struct RwkvChannelMixWeights {
  const float *mix_k = nullptr, *mix_r = nullptr;  // [D]
  ops::MatRef key;                                 // [F][D]
  ops::MatRef receptance;                          // [D][D]
  ops::MatRef value;                               // [D][F]
};

class RwkvChannelMix final : public Mixer {
 public:
  RwkvChannelMix(const RwkvChannelMixSpec& spec, int64_t d_model, RwkvChannelMixWeights w);
  const char* kind() const override { return "rwkv_channel_mix"; }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override { return size_t(d_) * sizeof(float); }
  size_t bytes_per_token() const override { return 0; }

 private:
  RwkvChannelMixSpec s_;
  int64_t d_;
  RwkvChannelMixWeights w_;
};

}  // namespace braid
