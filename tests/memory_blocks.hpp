// Helpers shared by the tests of blocks that pair attention with a Titans memory (memory as a
// gate, memory as context).
#pragma once
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "model/model.hpp"

// T token ids drawn uniformly from [0, V).
inline std::vector<int32_t> random_ids(int64_t T, int64_t V, uint64_t seed) {
  braid::Rng r(seed);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& v : t) v = int32_t(r.next() % uint64_t(V));
  return t;
}

// The weights of a model whose block 0 pairs attention with a titans memory, rearranged for the
// model with layers ["attention", "memory"]: block 0 gets block 0's attention, block 1 its
// memory, and both its norms and MLP; weights of the pairing itself (".context.") and of later
// blocks are left out.
inline braid::Weights split_attention_memory(const braid::Weights& w) {
  braid::Weights out;
  for (const auto& [name, t] : w) {
    if (name.rfind("blocks.0.", 0) != 0) {
      if (name.rfind("blocks.", 0) != 0) out[name] = t;
      continue;
    }
    if (name.find(".context.") != std::string::npos) continue;
    const bool memory = name.find(".titans.") != std::string::npos;
    if (!memory) out[name] = t;
    if (memory || name.find(".attn.") == std::string::npos) out["blocks.1." + name.substr(9)] = t;
  }
  return out;
}
