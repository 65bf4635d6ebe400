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
//
// With a disk tier every stored snapshot is also written to a file (runtime/snapshot_file.hpp)
// under dir/<model fingerprint>/, bounded by its own byte budget with the same policy. RAM
// eviction keeps the file; a hit on a snapshot held only on disk loads it back; a cache made
// over the same directory and model (after a restart) finds every file. A damaged file is
// reported, deleted and treated as a miss.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "runtime/session.hpp"

namespace braid {

struct PrefixCacheStats {
  int64_t entries = 0, bytes = 0, lookups = 0, hits = 0, tokens_reused = 0, insertions = 0, evictions = 0;
  // The disk tier: files held and their bytes, hits served from disk, files written,
  // deleted to fit, and found damaged (or not writable).
  int64_t disk_entries = 0, disk_bytes = 0, disk_hits = 0, disk_writes = 0, disk_evictions = 0,
          disk_errors = 0;
};

struct DiskTier {
  std::string dir;                               // empty: no disk tier
  size_t max_bytes = 0;                          // bytes of files kept
  std::function<void(const std::string&)> warn;  // told about damaged or unwritable files
};

class PrefixCache {
 public:
  // `max_bytes` 0 disables the cache (nothing is stored in RAM; a disk tier still works).
  // Throws when the disk tier's directory cannot be made.
  PrefixCache(const Model& model, size_t max_bytes, DiskTier disk = {});
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Hit {
    const Session::Snapshot* snapshot = nullptr;  // valid until the next insert
    int64_t length = 0;                           // tokens it covers
  };
  // The deepest snapshot of a prefix of tokens[0, n) (at most n tokens); none: length 0.
  // One held only on disk is loaded into RAM first.
  Hit lookup(const int32_t* tokens, int64_t n);
  // Stores the snapshot of tokens[0, n), replacing one at the same prefix; evicts to fit.
  // A snapshot larger than the whole budget is not stored.
  void insert(const int32_t* tokens, int64_t n, Session::Snapshot snap);
  // Whether tokens[0, n) has a snapshot (in RAM or on disk).
  bool contains(const int32_t* tokens, int64_t n) const;
  // How many leading tokens of tokens[0, n) some stored prefix shares: where a new sequence
  // branches off a cached one (a state saved there serves both branches later).
  int64_t shared_length(const int32_t* tokens, int64_t n) const;

  PrefixCacheStats stats() const;
  size_t max_bytes() const { return max_bytes_; }
  // The disk tier's directory for this model ("" without one).
  const std::string& disk_dir() const { return disk_dir_; }
  // The estimated FLOPs a snapshot of d tokens saves.
  double flops_saved(int64_t d) const;

 private:
  struct Node;
  // The node for exactly tokens[0, n), if there is one.
  Node* find(const int32_t* tokens, int64_t n) const;
  Node* find_or_split(const int32_t* tokens, int64_t n);
  // Frees the RAM snapshot (or, with `disk`, the file) valued least.
  void evict_one(bool disk);
  void prune(Node* node);
  // Attaches a RAM snapshot to a node / frees a node's RAM snapshot (keeping the byte count).
  void hold(Node* node, Session::Snapshot snap, size_t bytes);
  void release(Node* node);
  void scan_disk();
  void write_file(Node* node, const int32_t* tokens, int64_t n, const Session::Snapshot& snap, size_t bytes);
  void drop_file(Node* node);
  bool load_file(Node* node);
  std::string file_path(const Node* node) const;
  void warn(const std::string& msg);

  const Model& model_;
  size_t max_bytes_;
  DiskTier disk_;
  std::string disk_dir_;
  uint64_t fingerprint_ = 0;
  double flops_per_token_, flops_per_token2_;
  std::unique_ptr<Node> root_;
  std::unordered_set<Node*> holders_;            // nodes that hold a snapshot in RAM
  std::unordered_set<Node*> disk_holders_;       // nodes whose snapshot is in a file
  std::unique_ptr<Session::Snapshot> oversize_;  // a loaded snapshot larger than the RAM budget
  uint64_t clock_ = 0;
  PrefixCacheStats stats_;
};

size_t snapshot_bytes(const Session::Snapshot& s);

}  // namespace braid
