// Token mixers side by side: each branch reads the block's normed input (times its input
// scale), and with b_i = out_scale_i * f_i(in_scale_i * x) the outputs combine as
//   Sum:  y = b_0 + b_1 + ...       (Falcon-H1 runs attention and Mamba-2 this way)
//   Gate: y = b_0 * sigmoid(b_1)    (two branches: Titans' memory as a gate, b_0 sliding-window
//                                    attention and b_1 the long-term memory)
// The state is one state per branch.
#pragma once
#include <functional>
#include <vector>

#include "mixers/mixer.hpp"

namespace braid {

class ParallelMixer final : public Mixer {
 public:
  struct Branch {
    std::unique_ptr<Mixer> mixer;
    float in_scale = 1, out_scale = 1;
  };
  enum class Combine { Sum, Gate };
  ParallelMixer(std::vector<Branch> branches, int64_t d_model, Combine combine = Combine::Sum);
  const char* kind() const override { return kind_.c_str(); }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void decode_batch(const float* x, int64_t B, int64_t D, State* const* states, float* y,
                    Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override;
  void refresh_derived() override {
    for (auto& b : branches_) b.mixer->refresh_derived();
  }

 private:
  // y[T, D] from the branches' outputs, run(i, input, output) running branch i on T rows
  // (its input scaled as the branch asks).
  void combine(const float* x, int64_t T, const std::function<void(size_t, const float*, float*)>& run,
               float* y, Workspace& ws) const;
  std::vector<Branch> branches_;
  int64_t d_;
  Combine combine_;
  std::string kind_;  // "attention+mamba2", "attention*titans" (gate)
};

}  // namespace braid
