// The long-context runner behind `braid bench --context`: one model at growing context
// lengths, the prompt streamed in chunks (one chunk of activations at a time), then decoding at
// that depth; stops a length that runs out of its time budget or would not fit in memory.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/model.hpp"

namespace braid {

struct ContextBenchOptions {
  int64_t chunk = 4096;      // prompt tokens per forward
  int64_t decode = 32;       // tokens decoded after the prompt
  double max_seconds = 600;  // per context length (prefill + decode); past it the point stops
  size_t memory_limit = 0;   // bytes the process may hold; 0 = what the machine has available
  uint64_t seed = 1234;
};

struct ContextPoint {
  int64_t context = 0;
  std::string status;  // "ok", "timeout" (after `fed` tokens), "out_of_memory"
  int64_t fed = 0;     // prompt tokens fed
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  size_t state_bytes = 0;  // KV caches + recurrent states after the last token
  size_t rss_bytes = 0;    // largest resident set sampled during this point
  // What the length needs (weights, states, KV caches at up to twice their size as they grow
  // by doubling, 256 MiB of scratch): a point whose prediction exceeds the limit is not run.
  size_t predicted_bytes = 0;
  size_t memory_limit_bytes = 0;  // the limit it was held to (0: unknown)
};

ContextPoint run_context_point(const std::shared_ptr<const Model>& model, int64_t context,
                               const ContextBenchOptions& o);

// All lengths (ascending) with one session that grows through them: at each length it decodes
// o.decode tokens, which stay in its context, and the point's prefill speed is the prompt
// tokens fed so far over the prefill time so far (decoding excluded), which is what a fresh
// session fed that many tokens would measure. o.max_seconds bounds the whole sweep; the
// lengths it does not reach are reported as "timeout" (or "out_of_memory" where their
// prediction exceeds the limit). Costs the time of the longest length instead of the sum.
std::vector<ContextPoint> run_context_sweep(const std::shared_ptr<const Model>& model,
                                            const std::vector<int64_t>& lengths, const ContextBenchOptions& o,
                                            const std::function<void(const ContextPoint&)>& report = {});

// "1k,4k,1M" -> 1024, 4096, 1048576 (k = 2^10, M = 2^20; plain numbers as they are).
std::vector<int64_t> parse_context_list(const std::string& list);

}  // namespace braid
