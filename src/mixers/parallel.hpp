// Token mixers side by side: each branch reads the block's normed input (times its input
// scale) and the outputs are summed (each times its output scale). Falcon-H1 runs
// attention and Mamba-2 this way. The state is one state per branch.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"

namespace braid {

class ParallelMixer final : public Mixer {
 public:
  struct Branch {
    std::unique_ptr<Mixer> mixer;
    float in_scale = 1, out_scale = 1;
  };
  explicit ParallelMixer(std::vector<Branch> branches, int64_t d_model);
  const char* kind() const override { return kind_.c_str(); }
  std::unique_ptr<State> make_state() const override;
  void forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const override;
  void backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const override;
  size_t fixed_state_bytes() const override;
  size_t bytes_per_token() const override;
  void refresh_derived() override {
    for (auto& b : branches_) b.mixer->refresh_derived();
  }

 private:
  std::vector<Branch> branches_;
  int64_t d_;
  std::string kind_;  // "attention+mamba2"
};

}  // namespace braid
