// The exit rule for looped models: the depth a request runs at, chosen by how fast the
// looped core's iterations converge on its prompt.
//
// Policy (per request, not per token): the prompt runs once at the deepest depth the model
// allows (max_loops), measuring r_i, the largest relative change iteration i makes to any
// position's stream (HiddenCapture::loop_change). The depth is the number of iterations
// before the first one whose change is below `tol`: r_i < tol gives depth i (so a core that
// changes nothing after its first iteration runs once); when none is, max_loops. The session
// then runs at that depth for the whole sequence, prompt and generation alike, so every
// iteration's state (KV cache or recurrent) holds every token. Per-token exits would leave
// the skipped iterations' states without those tokens; this rule never does.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.hpp"

namespace braid {

struct LoopExit {
  int64_t loops = 1;           // the chosen depth
  std::vector<double> change;  // r_1 .. r_(max_loops - 1), as measured
};

// Throws for a model without a loop, an empty prompt, or tol <= 0.
LoopExit loops_by_convergence(const Model& model, const int32_t* tokens, int64_t T, double tol);

}  // namespace braid
