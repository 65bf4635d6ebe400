// PrefixCache: a radix tree over token prefixes whose nodes hold Session snapshots
// (recurrent states, KV caches and the last logits at that prefix). A new sequence restores
// the deepest snapshot whose tokens start its prompt and prefills only the rest, so a
// recurrent state is reusable at any prefix it was saved at, not only at an exact match.
//
// Bounded by bytes. Eviction weighs what a snapshot saves against what it costs, as well as
// how recently it was used: score = (FLOPs saved / byte) / (the best such ratio held)
// + (recency rank in [0, 1]); the lowest score goes first. FLOPs saved by a prefix of d
// tokens are estimated as 2 * params * d plus, for layers whose state grows with the
// sequence (attention), d^2 * (floats cached per token).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <unordered_set>
#include <vector>

#include "runtime/session.hpp"

namespace braid {

struct PrefixCacheStats {
  int64_t entries = 0, bytes = 0, lookups = 0, hits = 0, tokens_reused = 0, insertions = 0, evictions = 0;
};

class PrefixCache {
 public:
  // `max_bytes` 0 disables the cache (nothing is stored).
  PrefixCache(const Model& model, size_t max_bytes);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Hit {
    const Session::Snapshot* snapshot = nullptr;  // valid until the next insert
    int64_t length = 0;                           // tokens it covers
  };
  // The deepest snapshot of a prefix of tokens[0, n) (at most n tokens); none: length 0.
  Hit lookup(const int32_t* tokens, int64_t n);
  // Stores the snapshot of tokens[0, n), replacing one at the same prefix; evicts to fit.
  // A snapshot larger than the whole budget is not stored.
  void insert(const int32_t* tokens, int64_t n, Session::Snapshot snap);
  bool contains(const int32_t* tokens, int64_t n) const;
  // How many leading tokens of tokens[0, n) some stored prefix shares: where a new sequence
  // branches off a cached one (a state saved there serves both branches later).
  int64_t shared_length(const int32_t* tokens, int64_t n) const;

  PrefixCacheStats stats() const;
  size_t max_bytes() const { return max_bytes_; }
  // The estimated FLOPs a snapshot of d tokens saves.
  double flops_saved(int64_t d) const;

 private:
  struct Node;
  Node* find_or_split(const int32_t* tokens, int64_t n);
  void evict_one();
  void prune(Node* node);

  size_t max_bytes_;
  double flops_per_token_, flops_per_token2_;
  std::unique_ptr<Node> root_;
  std::unordered_set<Node*> holders_;  // nodes that hold a snapshot
  uint64_t clock_ = 0;
  PrefixCacheStats stats_;
};

size_t snapshot_bytes(const Session::Snapshot& s);

}  // namespace braid
