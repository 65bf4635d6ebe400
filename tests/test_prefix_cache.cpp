// PrefixCache: the radix tree finds the deepest stored prefix (checked against a brute
// force over random insertions that split and prune edges), stays within its byte budget,
// and evicts by FLOPs saved per byte and recency.
#include <gtest/gtest.h>

#include <random>

#include "import/load.hpp"
#include "runtime/prefix_cache.hpp"

namespace braid {
namespace {

const std::shared_ptr<const Model>& model() {
  static const std::shared_ptr<const Model> m = load_model(std::string(BRAID_SOURCE_DIR) + "/models/default");
  return m;
}

// A snapshot of `floats` logits standing in for a state of that size, tagged by its first value.
Session::Snapshot fake(size_t floats, float tag) {
  Session::Snapshot s;
  s.logits.assign(floats, 0.0f);
  s.logits[0] = tag;
  return s;
}

TEST(PrefixCache, FindsTheDeepestStoredPrefix) {
  PrefixCache c(*model(), 1 << 20);
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6}, b = {1, 2, 3, 9, 9};
  c.insert(a.data(), 6, fake(4, 6));
  c.insert(a.data(), 3, fake(4, 3));  // splits a's edge after 3 tokens
  c.insert(b.data(), 5, fake(4, 9));  // branches at the split
  auto hit = [&](std::vector<int32_t> t) {
    const auto h = c.lookup(t.data(), int64_t(t.size()));
    return std::make_pair(h.length, h.snapshot ? h.snapshot->logits[0] : -1.0f);
  };
  EXPECT_EQ(hit({1, 2, 3, 4, 5, 6, 7}), std::make_pair(int64_t(6), 6.0f));
  EXPECT_EQ(hit({1, 2, 3, 4, 5}), std::make_pair(int64_t(3), 3.0f));  // a partial edge is no prefix
  EXPECT_EQ(hit({1, 2, 3, 9, 9}), std::make_pair(int64_t(5), 9.0f));
  EXPECT_EQ(hit({1, 2}), std::make_pair(int64_t(0), -1.0f));
  EXPECT_EQ(hit({7}), std::make_pair(int64_t(0), -1.0f));
  EXPECT_EQ(c.shared_length(std::vector<int32_t>{1, 2, 3, 4, 8}.data(), 5), 4);
  EXPECT_EQ(c.shared_length(std::vector<int32_t>{5}.data(), 1), 0);
  EXPECT_EQ(c.stats().entries, 3);
  EXPECT_EQ(c.stats().hits, 3);
  EXPECT_EQ(c.stats().tokens_reused, 6 + 3 + 5);
}

TEST(PrefixCache, MatchesABruteForceUnderInsertionsAndEvictions) {
  std::mt19937 rng(5);
  for (const size_t budget : {size_t(1) << 30, size_t(40 * 64 * 4)}) {  // unlimited; then about 40 entries
    PrefixCache c(*model(), budget);
    std::vector<std::vector<int32_t>> keys;
    for (int step = 0; step < 600; ++step) {
      std::vector<int32_t> t(size_t(1 + rng() % 12));
      for (auto& x : t) x = int32_t(rng() % 3);  // a small alphabet: many shared prefixes
      if (rng() % 2) {
        c.insert(t.data(), int64_t(t.size()), fake(64, float(step)));
        keys.push_back(t);
      } else {
        // The deepest stored key that is a prefix of t, by brute force over keys still held.
        int64_t best = 0;
        for (const auto& k : keys)
          if (k.size() <= t.size() && std::equal(k.begin(), k.end(), t.begin()) && int64_t(k.size()) > best &&
              c.contains(k.data(), int64_t(k.size())))
            best = int64_t(k.size());
        const auto h = c.lookup(t.data(), int64_t(t.size()));
        ASSERT_EQ(h.length, best) << "step " << step;
        if (best > 0) {
          ASSERT_NE(h.snapshot, nullptr);
        }
      }
      ASSERT_LE(size_t(c.stats().bytes), budget);
      ASSERT_EQ(c.stats().bytes, c.stats().entries * int64_t(64 * sizeof(float)));
    }
    if (budget < (size_t(1) << 30)) {
      EXPECT_GT(c.stats().evictions, 0);
    } else {
      EXPECT_EQ(c.stats().evictions, 0);
    }
  }
}

TEST(PrefixCache, EvictsWhatSavesLeastPerByteAndWasUsedLeast) {
  PrefixCache c(*model(), 3 * 1000 * sizeof(float));
  std::vector<int32_t> t(64);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i);
  c.insert(t.data(), 8, fake(1000, 1));  // oldest, and saves least for its bytes
  c.insert(t.data(), 64, fake(1000, 2));
  c.insert(t.data(), 32, fake(1000, 3));
  c.insert(t.data(), 40, fake(1000, 4));  // one must go
  EXPECT_EQ(c.stats().evictions, 1);
  EXPECT_FALSE(c.contains(t.data(), 8));
  EXPECT_TRUE(c.contains(t.data(), 64));
  EXPECT_TRUE(c.contains(t.data(), 32));
  EXPECT_TRUE(c.contains(t.data(), 40));
  // Equal savings and bytes: the least recently used goes.
  PrefixCache lru(*model(), 2 * 1000 * sizeof(float));
  const std::vector<int32_t> a = {1, 1, 1}, b = {2, 2, 2}, d = {3, 3, 3};
  lru.insert(a.data(), 3, fake(1000, 1));
  lru.insert(b.data(), 3, fake(1000, 2));
  lru.lookup(a.data(), 3);
  lru.insert(d.data(), 3, fake(1000, 3));
  EXPECT_TRUE(lru.contains(a.data(), 3));
  EXPECT_FALSE(lru.contains(b.data(), 3));
  EXPECT_TRUE(lru.contains(d.data(), 3));
  // A snapshot larger than the budget is not stored and evicts nothing.
  c.insert(t.data(), 50, fake(4000, 5));
  EXPECT_FALSE(c.contains(t.data(), 50));
  EXPECT_EQ(c.stats().entries, 3);
  // Off: nothing is kept.
  PrefixCache off(*model(), 0);
  off.insert(t.data(), 4, fake(1, 0));
  EXPECT_EQ(off.stats().entries, 0);
}

}  // namespace
}  // namespace braid
