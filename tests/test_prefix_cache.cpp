// PrefixCache: the radix tree finds the deepest stored prefix (checked against a brute
// force over random insertions that split and prune edges), stays within its byte budget,
// and evicts by FLOPs saved per byte and recency.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "fixtures.hpp"
#include "import/load.hpp"
#include "runtime/prefix_cache.hpp"
#include "runtime/snapshot_file.hpp"

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

// The disk tier: real snapshots of the default model for prefixes of one token stream.
class PrefixCacheDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    t.resize(64);
    for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t((i * 7 + 3) % 250);
  }
  Session::Snapshot snap(int64_t n) const {
    Session s(model());
    s.feed(t.data(), n);
    return s.snapshot();
  }
  // The logits after restoring `h` and feeding the next token, and those of a session fed
  // the same way without the cache.
  void expect_resumes(const PrefixCache::Hit& h) const {
    ASSERT_NE(h.snapshot, nullptr);
    Session a(model()), b(model());
    a.restore(*h.snapshot);
    b.feed(t.data(), h.length);
    EXPECT_EQ(a.feed(t.data() + h.length, 1), b.feed(t.data() + h.length, 1));
  }
  size_t files() const {
    size_t n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path))
      n += e.path().extension() == ".snap";
    return n;
  }
  DiskTier disk(size_t bytes) {
    DiskTier d{dir.path.string(), bytes, [this](const std::string& m) { warnings.push_back(m); }};
    return d;
  }
  std::vector<int32_t> t;
  TempDir dir;
  std::vector<std::string> warnings;
};

TEST_F(PrefixCacheDisk, SnapshotsSurviveARestart) {
  {
    PrefixCache c(*model(), size_t(64) << 20, disk(size_t(64) << 20));
    c.insert(t.data(), 16, snap(16));
    c.insert(t.data(), 40, snap(40));
    EXPECT_EQ(c.stats().disk_writes, 2);
    EXPECT_EQ(c.stats().disk_entries, 2);
    EXPECT_GT(c.stats().disk_bytes, c.stats().bytes);  // the files hold the prefix too
  }
  PrefixCache c(*model(), size_t(64) << 20, disk(size_t(64) << 20));
  EXPECT_EQ(c.stats().disk_entries, 2);
  EXPECT_EQ(c.stats().entries, 0);
  EXPECT_TRUE(c.contains(t.data(), 40));
  const PrefixCache::Hit h = c.lookup(t.data(), 50);
  EXPECT_EQ(h.length, 40);
  expect_resumes(h);
  EXPECT_EQ(c.stats().disk_hits, 1);
  EXPECT_EQ(c.stats().entries, 1);  // now in RAM too
  EXPECT_EQ(c.lookup(t.data(), 30).length, 16);
  EXPECT_EQ(c.stats().disk_hits, 2);
  EXPECT_EQ(c.lookup(t.data(), 45).length, 40);
  EXPECT_EQ(c.stats().disk_hits, 2);  // served from RAM
  EXPECT_TRUE(warnings.empty());
  // Another model's snapshots live in another directory and are left alone.
  EXPECT_EQ(c.disk_dir().rfind(dir.path.string(), 0), 0u);
}

TEST_F(PrefixCacheDisk, RamEvictionKeepsTheFile) {
  const size_t one = snapshot_bytes(snap(40));
  PrefixCache c(*model(), one + one / 2, disk(size_t(64) << 20));
  c.insert(t.data(), 40, snap(40));
  c.insert(t.data(), 41, snap(41));  // evicts 40 from RAM
  EXPECT_EQ(c.stats().entries, 1);
  EXPECT_EQ(c.stats().evictions, 1);
  EXPECT_EQ(c.stats().disk_entries, 2);
  EXPECT_TRUE(c.contains(t.data(), 40));
  const PrefixCache::Hit h = c.lookup(t.data(), 40);
  EXPECT_EQ(h.length, 40);
  expect_resumes(h);
  EXPECT_EQ(c.stats().disk_hits, 1);
  // With no RAM budget at all the disk tier still serves (the snapshot lives until the next call).
  PrefixCache d(*model(), 0, disk(size_t(64) << 20));
  EXPECT_EQ(d.stats().disk_entries, 2);
  const PrefixCache::Hit hd = d.lookup(t.data(), 60);
  EXPECT_EQ(hd.length, 41);
  expect_resumes(hd);
  EXPECT_EQ(d.stats().entries, 0);
}

TEST_F(PrefixCacheDisk, StaysWithinItsBudget) {
  const size_t file = encode_snapshot(snap(20), 0, t.data(), 20).size();
  PrefixCache c(*model(), size_t(64) << 20, disk(2 * file + file / 2));
  for (int64_t n = 20; n < 26; ++n) c.insert(t.data(), n, snap(n));
  EXPECT_EQ(c.stats().disk_entries, 2);
  EXPECT_EQ(files(), 2u);
  EXPECT_LE(size_t(c.stats().disk_bytes), 2 * file + file / 2);
  EXPECT_EQ(c.stats().disk_evictions, 4);
  // A smaller budget after a restart drops files to fit.
  PrefixCache d(*model(), size_t(64) << 20, disk(file + file / 2));
  EXPECT_EQ(d.stats().disk_entries, 1);
  EXPECT_EQ(files(), 1u);
}

TEST_F(PrefixCacheDisk, DamagedFilesAreDroppedAndMissed) {
  std::string path16, path40;
  {
    PrefixCache c(*model(), size_t(64) << 20, disk(size_t(64) << 20));
    c.insert(t.data(), 16, snap(16));
    c.insert(t.data(), 40, snap(40));
  }
  std::vector<std::filesystem::path> snaps;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path))
    if (e.path().extension() == ".snap") snaps.push_back(e.path());
  ASSERT_EQ(snaps.size(), 2u);
  const std::filesystem::path sub = snaps[0].parent_path();
  // Damage the body of the deeper one (its head still reads), cut a third file short, and
  // leave a temporary file as a crashed write would.
  for (const auto& p : snaps) {
    if (std::filesystem::file_size(p) < std::filesystem::file_size(snaps[0] == p ? snaps[1] : snaps[0]))
      continue;
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(std::filesystem::file_size(p) / 2));
    f.put('\x7f');
  }
  { std::ofstream(sub / "junk.snap") << "BRAIDSNP"; }
  { std::ofstream(sub / "half.snap.tmp") << "BRAIDSNP"; }
  { std::ofstream(sub / "notes.txt") << "kept"; }
  PrefixCache c(*model(), size_t(64) << 20, disk(size_t(64) << 20));
  EXPECT_EQ(c.stats().disk_entries, 2);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("junk.snap"), std::string::npos) << warnings[0];
  EXPECT_FALSE(std::filesystem::exists(sub / "junk.snap"));
  EXPECT_FALSE(std::filesystem::exists(sub / "half.snap.tmp"));
  EXPECT_TRUE(std::filesystem::exists(sub / "notes.txt"));
  const PrefixCache::Hit h = c.lookup(t.data(), 50);  // 40 is damaged: falls back to 16
  EXPECT_EQ(h.length, 16);
  expect_resumes(h);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[1].find("checksum mismatch"), std::string::npos) << warnings[1];
  EXPECT_EQ(c.stats().disk_entries, 1);
  EXPECT_EQ(c.stats().disk_errors, 2);
  EXPECT_FALSE(c.contains(t.data(), 40));
  EXPECT_EQ(files(), 1u);
}

TEST_F(PrefixCacheDisk, AnUnusableDirectoryIsAnError) {
  { std::ofstream(dir / "file") << "x"; }
  DiskTier d{dir / "file", 1 << 20, nullptr};
  EXPECT_NE(
      error_of([&] { PrefixCache c(*model(), 1 << 20, d); }).find("cannot make the prefix cache directory"),
      std::string::npos);
}

}  // namespace
}  // namespace braid
