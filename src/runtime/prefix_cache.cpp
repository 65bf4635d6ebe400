#include "runtime/prefix_cache.hpp"

#include <algorithm>
#include <limits>

namespace braid {

struct PrefixCache::Node {
  std::vector<int32_t> edge;                          // the tokens on the edge from the parent to this node
  std::map<int32_t, std::unique_ptr<Node>> children;  // by the first token of their edge
  Node* parent = nullptr;
  int64_t depth = 0;  // tokens from the root to this node
  std::unique_ptr<Session::Snapshot> snap;
  size_t bytes = 0;
  uint64_t last_use = 0;
};

size_t snapshot_bytes(const Session::Snapshot& s) {
  size_t n = s.logits.size() * sizeof(float);
  for (const auto& st : s.states)
    if (st) n += st->bytes();
  return n;
}

PrefixCache::PrefixCache(const Model& model, size_t max_bytes)
    : max_bytes_(max_bytes), root_(std::make_unique<Node>()) {
  flops_per_token_ = 2.0 * double(model.n_params());
  flops_per_token2_ = double(model.state_bytes_per_token()) / sizeof(float);
}

PrefixCache::~PrefixCache() = default;

double PrefixCache::flops_saved(int64_t d) const {
  return flops_per_token_ * double(d) + flops_per_token2_ * double(d) * double(d);
}

PrefixCache::Hit PrefixCache::lookup(const int32_t* tokens, int64_t n) {
  ++stats_.lookups;
  Node* node = root_.get();
  Node* best = nullptr;
  int64_t i = 0;
  for (;;) {
    if (node->snap) best = node;
    if (i == n) break;
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) break;
    const std::vector<int32_t>& e = it->second->edge;
    if (int64_t(e.size()) > n - i || !std::equal(e.begin(), e.end(), tokens + i)) break;
    i += int64_t(e.size());
    node = it->second.get();
  }
  if (!best) return {};
  best->last_use = ++clock_;
  ++stats_.hits;
  stats_.tokens_reused += best->depth;
  return {best->snap.get(), best->depth};
}

bool PrefixCache::contains(const int32_t* tokens, int64_t n) const {
  const Node* node = root_.get();
  int64_t i = 0;
  while (i < n) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) return false;
    const std::vector<int32_t>& e = it->second->edge;
    if (int64_t(e.size()) > n - i || !std::equal(e.begin(), e.end(), tokens + i)) return false;
    i += int64_t(e.size());
    node = it->second.get();
  }
  return node->snap != nullptr;
}

int64_t PrefixCache::shared_length(const int32_t* tokens, int64_t n) const {
  const Node* node = root_.get();
  int64_t i = 0;
  while (i < n) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) break;
    const std::vector<int32_t>& e = it->second->edge;
    int64_t k = 0;
    while (k < int64_t(e.size()) && i + k < n && e[size_t(k)] == tokens[i + k]) ++k;
    i += k;
    if (k < int64_t(e.size())) break;
    node = it->second.get();
  }
  return i;
}

// The node for exactly tokens[0, n), creating it (and splitting an edge) when needed.
PrefixCache::Node* PrefixCache::find_or_split(const int32_t* tokens, int64_t n) {
  Node* node = root_.get();
  int64_t i = 0;
  while (i < n) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->edge.assign(tokens + i, tokens + n);
      leaf->parent = node;
      leaf->depth = n;
      Node* raw = leaf.get();
      node->children.emplace(tokens[i], std::move(leaf));
      return raw;
    }
    Node* child = it->second.get();
    const std::vector<int32_t>& e = child->edge;
    int64_t k = 0;
    while (k < int64_t(e.size()) && i + k < n && e[size_t(k)] == tokens[i + k]) ++k;
    if (k == int64_t(e.size())) {
      i += k;
      node = child;
      continue;
    }
    // Split the edge after k tokens: node -> mid -> child.
    auto mid = std::make_unique<Node>();
    mid->edge.assign(e.begin(), e.begin() + k);
    mid->parent = node;
    mid->depth = node->depth + k;
    std::unique_ptr<Node> owned = std::move(it->second);
    owned->edge.erase(owned->edge.begin(), owned->edge.begin() + k);
    owned->parent = mid.get();
    const int32_t first = owned->edge.front();
    mid->children.emplace(first, std::move(owned));
    Node* raw = mid.get();
    it->second = std::move(mid);
    i += k;
    node = raw;
  }
  return node;
}

void PrefixCache::insert(const int32_t* tokens, int64_t n, Session::Snapshot snap) {
  if (n <= 0) return;
  const size_t bytes = snapshot_bytes(snap);
  if (bytes > max_bytes_) return;
  if (contains(tokens, n)) {  // replaced: drop the old one first
    Node* old = find_or_split(tokens, n);
    stats_.bytes -= int64_t(old->bytes);
    holders_.erase(old);
    old->snap.reset();
    old->bytes = 0;
  }
  // Evict until the new snapshot fits; pruning may reshape the tree, so find its node after.
  while (size_t(stats_.bytes) + bytes > max_bytes_ && !holders_.empty()) evict_one();
  Node* node = find_or_split(tokens, n);
  node->snap = std::make_unique<Session::Snapshot>(std::move(snap));
  node->bytes = bytes;
  node->last_use = ++clock_;
  holders_.insert(node);
  stats_.bytes += int64_t(bytes);
  ++stats_.insertions;
}

void PrefixCache::evict_one() {
  double best_eff = 0;
  uint64_t oldest = std::numeric_limits<uint64_t>::max(), newest = 0;
  for (Node* h : holders_) {
    best_eff = std::max(best_eff, flops_saved(h->depth) / double(std::max<size_t>(h->bytes, 1)));
    oldest = std::min(oldest, h->last_use);
    newest = std::max(newest, h->last_use);
  }
  Node* victim = nullptr;
  double lowest = std::numeric_limits<double>::infinity();
  for (Node* h : holders_) {
    const double eff =
        flops_saved(h->depth) / double(std::max<size_t>(h->bytes, 1)) / std::max(best_eff, 1e-300);
    const double recency = newest > oldest ? double(h->last_use - oldest) / double(newest - oldest) : 1.0;
    const double score = eff + recency;
    if (score < lowest || (score == lowest && h->last_use < victim->last_use)) {
      lowest = score;
      victim = h;
    }
  }
  holders_.erase(victim);
  stats_.bytes -= int64_t(victim->bytes);
  victim->snap.reset();
  victim->bytes = 0;
  ++stats_.evictions;
  prune(victim);
}

// Removes nodes that hold nothing and lead nowhere, and folds a snapshot-less node with one
// child into that child, so the tree stays as small as its snapshots.
void PrefixCache::prune(Node* node) {
  while (node != root_.get() && !node->snap && node->children.empty()) {
    Node* parent = node->parent;
    parent->children.erase(node->edge.front());
    node = parent;
  }
  if (node != root_.get() && !node->snap && node->children.size() == 1) {
    Node* parent = node->parent;
    std::unique_ptr<Node> child = std::move(node->children.begin()->second);
    child->edge.insert(child->edge.begin(), node->edge.begin(), node->edge.end());
    child->parent = parent;
    const int32_t first = child->edge.front();
    parent->children[first] = std::move(child);  // frees `node`
  }
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.entries = int64_t(holders_.size());
  return s;
}

}  // namespace braid
