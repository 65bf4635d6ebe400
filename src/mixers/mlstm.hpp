// mLSTM mixer (xLSTM). Prefill runs chunk by chunk: inside a chunk the gated, stabilised
// outputs come from a masked (q k^T) product and the carried (C, n, m) state, all with
// GEMMs; decode is the same code with one token. Only exp of non-positive numbers is formed
// (every exponent is taken relative to the running max m).
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "mixers/mixer_specs.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

class MlstmState final : public State {
 public:
  explicit MlstmState(const MlstmSpec& s)
      : C(static_cast<size_t>(s.qk_dim * (s.v_dim / s.n_heads)), 0.0f),
        n(static_cast<size_t>(s.qk_dim), 0.0f),
        m(static_cast<size_t>(s.n_heads), 0.0f) {}
  int64_t position() const override { return pos; }
  size_t bytes() const override { return (C.size() + n.size() + m.size()) * sizeof(float); }
  std::unique_ptr<State> clone() const override { return std::make_unique<MlstmState>(*this); }
  void fields(StateFields& f) override {
    f.floats(C);
    f.floats(n);
    f.floats(m);
    f.count(pos);
  }

  std::vector<float> C;  // [H][dk][dv]
  std::vector<float> n;  // [H][dk]
  std::vector<float> m;  // [H]
  int64_t pos = 0;
};

struct MlstmWeights {
  ops::MatRef q, k, v, o;          // [qk|qk|v|v][D]
  ops::MatRef igate;               // [H][D]
  const float* igate_b = nullptr;  // [H]
  ops::MatRef fgate;
  const float* fgate_b = nullptr;
  const float* norm = nullptr;  // [v_dim]
  ops::MatRef out_proj;         // [D][v_dim]
};

class MlstmMixer final : public Mixer {
 public:
  MlstmMixer(const MlstmSpec& spec, int64_t d_model, MlstmWeights w);
  const char* kind() const override { return "mlstm"; }
  std::unique_ptr<State> make_state() const override { return std::make_unique<MlstmState>(s_); }
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override {
    return size_t(s_.qk_dim * (s_.v_dim / s_.n_heads) + s_.qk_dim + s_.n_heads) * sizeof(float);
  }
  size_t bytes_per_token() const override { return 0; }

 private:
  void chunk(const float* x, int64_t Q, MlstmState& st, float* y, Workspace& ws) const;
  MlstmSpec s_;
  int64_t d_;
  MlstmWeights w_;
};

}  // namespace braid
