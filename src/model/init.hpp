// Random initialisation of a ModelSpec's parameters (deterministic given a seed).
#pragma once
#include <cstdint>

#include "model/model.hpp"

namespace braid {

// Matrices ~ N(0, std^2), norm weights 1, biases 0 — the usual causal-LM init.
Weights init_weights(const ModelSpec& spec, uint64_t seed, double std = 0.02);

}  // namespace braid
