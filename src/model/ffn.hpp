// Channel mixers: the (gated) MLP and the mixture of experts built from it.
#pragma once
#include <vector>

#include "mixers/mixer.hpp"
#include "model/spec.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

struct FfnWeights {
  ops::MatRef gate;
  const float* gate_b = nullptr;
  ops::MatRef up;
  const float* up_b = nullptr;
  ops::MatRef down;
  const float* down_b = nullptr;
};

// y[T, D] = down(act(gate(x)) * up(x)) (gated) or down(act(up(x))), hidden size
// spec.hidden, with the spec's gate / down multipliers.
void ffn_forward(const MlpSpec& spec, const float* x, int64_t T, int64_t D, const FfnWeights& w, float* y,
                 Workspace& ws);

// Backward of ffn_forward for the same x: dx written (added when accumulate_dx); weight
// gradients added into g. Recomputes the hidden activations from x.
void ffn_backward(const MlpSpec& spec, const float* x, int64_t T, int64_t D, const FfnWeights& w,
                  const float* dy, float* dx, bool accumulate_dx, GradSink& g);

struct MoeWeights {
  const float* router = nullptr;  // [n_experts][D]
  std::vector<FfnWeights> experts;
  FfnWeights shared;                   // used when MoeSpec::shared_hidden > 0
  const float* shared_gate = nullptr;  // [1][D], when MoeSpec::shared_gate
};

// Routes each token to its top_k experts (gated MLPs) and sums their outputs weighted
// by the router scores; adds the shared expert when there is one.
void moe_forward(const MoeSpec& spec, const MoeWeights& w, const float* x, int64_t T, int64_t D, float* y,
                 Workspace& ws);

// Backward of moe_forward: gradients flow through the chosen experts, the router (through
// the scores of the chosen experts; the top-k choice itself is piecewise constant), and
// the shared expert and its gate. dx written.
void moe_backward(const MoeSpec& spec, const MoeWeights& w, const float* x, int64_t T, int64_t D,
                  const float* dy, float* dx, GradSink& g);

}  // namespace braid
