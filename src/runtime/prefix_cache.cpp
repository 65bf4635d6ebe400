#include "runtime/prefix_cache.hpp"

#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <limits>

#include "core/error.hpp"
#include "runtime/snapshot_file.hpp"

namespace braid {

namespace fs = std::filesystem;

struct PrefixCache::Node {
  std::vector<int32_t> edge;                          // the tokens on the edge from the parent to this node
  std::map<int32_t, std::unique_ptr<Node>> children;  // by the first token of their edge
  Node* parent = nullptr;
  int64_t depth = 0;  // tokens from the root to this node
  std::unique_ptr<Session::Snapshot> snap;
  size_t bytes = 0;
  std::string file;  // the snapshot's file name in the disk tier ("" when not on disk)
  size_t disk_bytes = 0;
  uint64_t last_use = 0;
  bool holds() const { return snap || !file.empty(); }
};

size_t snapshot_bytes(const Session::Snapshot& s) {
  size_t n = s.logits.size() * sizeof(float);
  for (const auto& st : s.states)
    if (st) n += st->bytes();
  return n;
}

PrefixCache::PrefixCache(const Model& model, size_t max_bytes, DiskTier disk)
    : model_(model), max_bytes_(max_bytes), disk_(std::move(disk)), root_(std::make_unique<Node>()) {
  flops_per_token_ = 2.0 * double(model.n_params());
  flops_per_token2_ = double(model.state_bytes_per_token()) / sizeof(float);
  if (disk_.dir.empty() || disk_.max_bytes == 0) return;
  fingerprint_ = model_fingerprint(model);
  disk_dir_ = (fs::path(disk_.dir) / hex64(fingerprint_)).string();
  std::error_code ec;
  fs::create_directories(disk_dir_, ec);
  check(!ec && fs::is_directory(disk_dir_), "cannot make the prefix cache directory ", disk_dir_, ": ",
        ec.message());
  scan_disk();
}

PrefixCache::~PrefixCache() = default;

double PrefixCache::flops_saved(int64_t d) const {
  return flops_per_token_ * double(d) + flops_per_token2_ * double(d) * double(d);
}

PrefixCache::Hit PrefixCache::lookup(const int32_t* tokens, int64_t n) {
  ++stats_.lookups;
  oversize_.reset();
  for (;;) {
    Node* node = root_.get();
    Node* best = nullptr;
    int64_t i = 0;
    for (;;) {
      if (node->holds()) best = node;
      if (i == n) break;
      auto it = node->children.find(tokens[i]);
      if (it == node->children.end()) break;
      const std::vector<int32_t>& e = it->second->edge;
      if (int64_t(e.size()) > n - i || !std::equal(e.begin(), e.end(), tokens + i)) break;
      i += int64_t(e.size());
      node = it->second.get();
    }
    if (!best) return {};
    if (!best->snap) {
      if (!load_file(best)) continue;  // damaged: dropped, look again
      ++stats_.disk_hits;
    }
    best->last_use = ++clock_;
    ++stats_.hits;
    stats_.tokens_reused += best->depth;
    return {best->snap ? best->snap.get() : oversize_.get(), best->depth};
  }
}

PrefixCache::Node* PrefixCache::find(const int32_t* tokens, int64_t n) const {
  Node* node = root_.get();
  int64_t i = 0;
  while (i < n) {
    auto it = node->children.find(tokens[i]);
    if (it == node->children.end()) return nullptr;
    const std::vector<int32_t>& e = it->second->edge;
    if (int64_t(e.size()) > n - i || !std::equal(e.begin(), e.end(), tokens + i)) return nullptr;
    i += int64_t(e.size());
    node = it->second.get();
  }
  return node;
}

bool PrefixCache::contains(const int32_t* tokens, int64_t n) const {
  const Node* node = find(tokens, n);
  return node && node->holds();
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
  oversize_.reset();
  Node* node = find(tokens, n);
  // Every eviction comes before the node is made: pruning may reshape the tree.
  size_t file = 0;  // bytes of its file, when it gets one
  if (!disk_dir_.empty() && !(node && !node->file.empty())) {
    file = snapshot_file_bytes(snap, n);
    if (file > disk_.max_bytes) file = 0;
    while (file && size_t(stats_.disk_bytes) + file > disk_.max_bytes && !disk_holders_.empty())
      evict_one(true);
  }
  const size_t bytes = snapshot_bytes(snap);
  const bool in_ram = bytes <= max_bytes_;
  if (in_ram) {
    if (node = find(tokens, n); node && node->snap) release(node);  // replaced: drop the old one first
    while (size_t(stats_.bytes) + bytes > max_bytes_ && !holders_.empty()) evict_one(false);
  }
  if (!in_ram && !file) return;
  node = find_or_split(tokens, n);
  node->last_use = ++clock_;
  if (in_ram) {
    hold(node, std::move(snap), bytes);
    ++stats_.insertions;
  }
  if (file) write_file(node, tokens, n, node->snap ? *node->snap : snap, file);
  if (!node->holds()) prune(node);
}

void PrefixCache::evict_one(bool disk) {
  const std::unordered_set<Node*>& set = disk ? disk_holders_ : holders_;
  auto size = [disk](const Node* h) { return double(std::max<size_t>(disk ? h->disk_bytes : h->bytes, 1)); };
  double best_eff = 0;
  uint64_t oldest = std::numeric_limits<uint64_t>::max(), newest = 0;
  for (Node* h : set) {
    best_eff = std::max(best_eff, flops_saved(h->depth) / size(h));
    oldest = std::min(oldest, h->last_use);
    newest = std::max(newest, h->last_use);
  }
  Node* victim = nullptr;
  double lowest = std::numeric_limits<double>::infinity();
  for (Node* h : set) {
    const double eff = flops_saved(h->depth) / size(h) / std::max(best_eff, 1e-300);
    const double recency = newest > oldest ? double(h->last_use - oldest) / double(newest - oldest) : 1.0;
    const double score = eff + recency;
    if (score < lowest || (score == lowest && h->last_use < victim->last_use)) {
      lowest = score;
      victim = h;
    }
  }
  if (disk) {
    drop_file(victim);
    ++stats_.disk_evictions;
  } else {
    release(victim);
    ++stats_.evictions;
  }
  prune(victim);
}

void PrefixCache::hold(Node* node, Session::Snapshot snap, size_t bytes) {
  node->snap = std::make_unique<Session::Snapshot>(std::move(snap));
  node->bytes = bytes;
  holders_.insert(node);
  stats_.bytes += int64_t(bytes);
}

void PrefixCache::release(Node* node) {
  holders_.erase(node);
  stats_.bytes -= int64_t(node->bytes);
  node->snap.reset();
  node->bytes = 0;
}

// Removes nodes that hold nothing and lead nowhere, and folds a snapshot-less node with one
// child into that child, so the tree stays as small as its snapshots.
void PrefixCache::prune(Node* node) {
  while (node != root_.get() && !node->holds() && node->children.empty()) {
    Node* parent = node->parent;
    parent->children.erase(node->edge.front());
    node = parent;
  }
  if (node != root_.get() && !node->holds() && node->children.size() == 1) {
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
  s.disk_entries = int64_t(disk_holders_.size());
  return s;
}

void PrefixCache::warn(const std::string& msg) {
  ++stats_.disk_errors;
  if (disk_.warn) disk_.warn(msg);
}

std::string PrefixCache::file_path(const Node* node) const {
  return (fs::path(disk_dir_) / node->file).string();
}

void PrefixCache::write_file(Node* node, const int32_t* tokens, int64_t n, const Session::Snapshot& snap,
                             size_t bytes) {
  const XXH128_hash_t h = XXH3_128bits(tokens, size_t(n) * sizeof(int32_t));
  node->file = hex64(h.high64) + hex64(h.low64) + ".snap";
  try {
    save_snapshot(file_path(node), snap, fingerprint_, tokens, n);
  } catch (const Error& e) {
    node->file.clear();
    warn(e.what());
    return;
  }
  node->disk_bytes = bytes;
  disk_holders_.insert(node);
  stats_.disk_bytes += int64_t(bytes);
  ++stats_.disk_writes;
}

void PrefixCache::drop_file(Node* node) {
  std::error_code ec;
  fs::remove(file_path(node), ec);
  disk_holders_.erase(node);
  stats_.disk_bytes -= int64_t(node->disk_bytes);
  node->file.clear();
  node->disk_bytes = 0;
}

// Brings a snapshot held only on disk into RAM; false (the file dropped) when it is damaged.
bool PrefixCache::load_file(Node* node) {
  std::vector<int32_t> tokens;
  Session::Snapshot snap;
  try {
    snap = load_snapshot(file_path(node), model_, fingerprint_, &tokens);
    check(int64_t(tokens.size()) == node->depth, "snapshot ", file_path(node),
          ": its prefix is not the one indexed");
  } catch (const Error& e) {
    warn(e.what());
    drop_file(node);
    prune(node);
    return false;
  }
  const size_t bytes = snapshot_bytes(snap);
  if (bytes > max_bytes_) {
    oversize_ = std::make_unique<Session::Snapshot>(std::move(snap));
    return true;
  }
  while (size_t(stats_.bytes) + bytes > max_bytes_ && !holders_.empty()) evict_one(false);
  hold(node, std::move(snap), bytes);
  return true;
}

// Indexes the files a previous cache left, oldest first so their recency carries over;
// drops the ones that are damaged or over the budget.
void PrefixCache::scan_disk() {
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(disk_dir_, ec)) {
    const fs::path& p = e.path();
    if (!e.is_regular_file(ec)) continue;
    if (p.extension() == ".tmp") {  // a write cut short
      fs::remove(p, ec);
      continue;
    }
    if (p.extension() != ".snap") continue;
    files.emplace_back(e.last_write_time(ec), p);
  }
  std::sort(files.begin(), files.end());
  for (const auto& [when, path] : files) {
    SnapshotHeader h;
    try {
      h = read_snapshot_header(path.string());
      check(h.fingerprint == fingerprint_, "snapshot ", path.string(), ": made by another model");
      check(!h.tokens.empty(), "snapshot ", path.string(), ": an empty prefix");
    } catch (const Error& e) {
      warn(e.what());
      fs::remove(path, ec);
      continue;
    }
    const int64_t n = int64_t(h.tokens.size());
    Node* node = find_or_split(h.tokens.data(), n);
    if (!node->file.empty()) drop_file(node);  // two files for one prefix: keep the newer
    node->file = path.filename().string();
    node->disk_bytes = size_t(fs::file_size(path, ec));
    node->last_use = ++clock_;
    disk_holders_.insert(node);
    stats_.disk_bytes += int64_t(node->disk_bytes);
  }
  while (size_t(stats_.disk_bytes) > disk_.max_bytes && !disk_holders_.empty()) evict_one(true);
}

}  // namespace braid
