// Snapshot files: every state type survives a trip through the file format (a session
// restored from the bytes continues exactly as the uninterrupted one), damaged or foreign
// files give one-line errors, and Session::fork continues independently.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/rng.hpp"
#include "fixtures.hpp"
#include "import/load.hpp"
#include "io/json.hpp"
#include "mixers/attention.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/snapshot_file.hpp"
#include "train/trainer.hpp"

namespace braid {
namespace {

std::vector<int32_t> tokens(int64_t T, int64_t V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& v : t) v = int32_t(r.next() % uint64_t(V));
  return t;
}

std::shared_ptr<const Model> from_spec(const json& j, const std::string& name) {
  const ModelSpec spec = spec_from_json(j, name);
  return std::make_shared<Model>(spec, owned_copy(init_weights(spec, 3, 0.2)), name);
}

// Feeds `cut` tokens, saves the state to bytes, restores them into a fresh session and
// checks that both continue with identical logits (token by token, then a chunk).
void expect_round_trip(const std::shared_ptr<const Model>& m, int64_t cut, int64_t more,
                       const std::string& what) {
  const std::vector<int32_t> t = tokens(cut + more, m->spec().vocab_size, 11);
  const uint64_t fp = model_fingerprint(*m);
  Session a(m);
  a.feed(t.data(), cut);
  const std::string bytes = encode_snapshot(a.snapshot(), fp, t.data(), cut);
  std::vector<int32_t> prefix;
  const Session::Snapshot snap =
      decode_snapshot(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), *m, fp, &prefix, what);
  EXPECT_EQ(prefix, std::vector<int32_t>(t.begin(), t.begin() + cut)) << what;
  Session b(m);
  b.restore(snap);
  EXPECT_EQ(b.position(), cut) << what;
  EXPECT_EQ(b.last_logits(), a.last_logits()) << what;
  for (int64_t i = cut; i < cut + more / 2; ++i)
    ASSERT_EQ(a.feed(t.data() + i, 1), b.feed(t.data() + i, 1)) << what << " at " << i;
  const int64_t rest = cut + more - (cut + more / 2);
  EXPECT_EQ(a.feed(t.data() + cut + more / 2, rest), b.feed(t.data() + cut + more / 2, rest)) << what;
}

class SnapshotFileFixtures : public ::testing::TestWithParam<const char*> {};

TEST_P(SnapshotFileFixtures, RestoredFromBytesContinuesExactly) {
  REQUIRE_FIXTURES();
  expect_round_trip(load_model(hf_fixture(GetParam())), 50, 12, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SnapshotFileFixtures, ::testing::ValuesIn(kHfFamilies));

// braid's own mixers and model-level state: GLA, Titans (as a layer, as context, as a gate),
// sliding-window attention past its window, segment recurrence, and every MQAR spec.
TEST(SnapshotFile, EveryBundledTaskSpecContinuesExactly) {
  int checked = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(BRAID_SOURCE_DIR) + "/bench/specs/tasks")) {
    const json j = json::parse(std::ifstream(e.path()));
    if (j.contains("input_dim")) continue;  // real-valued inputs: no token sessions
    expect_round_trip(from_spec(j, e.path().filename().string()), 45, 10, e.path().filename().string());
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

// States that keep a window: ATLAS's sliding-window memory update, and sliding-window
// attention with sink tokens cut past its window.
TEST(SnapshotFile, WindowedStatesContinueExactly) {
  json j = json::parse(R"({
    "name": "windows", "vocab_size": 23, "d_model": 16, "tie_embeddings": true,
    "mixers": {
      "mem": {"type": "titans", "n_heads": 2, "head_dim": 8, "depth": 2, "hidden": 8, "chunk": 4, "window": 3},
      "swa": {"type": "attention", "n_heads": 2, "head_dim": 8, "sliding_window": 8, "sink_tokens": 2}
    },
    "mlp": {"hidden": 24},
    "layers": ["mem", "swa"]
  })");
  expect_round_trip(from_spec(j, "windows"), 37, 12, "windows");
}

// A loaded state is checked against the model where its counts matter: a segment state
// cannot have consumed more tokens than a segment holds.
TEST(SnapshotFile, ImpossibleSegmentStateIsRefused) {
  const auto m = from_spec(
      json::parse(std::ifstream(std::string(BRAID_SOURCE_DIR) + "/bench/specs/tasks/passkey-rmt.json")),
      "rmt");
  const uint64_t fp = model_fingerprint(*m);
  const std::vector<int32_t> t = tokens(40, m->spec().vocab_size, 3);
  Session s(m);
  s.feed(t.data(), 40);
  Session::Snapshot snap = s.snapshot();
  auto& seg = dynamic_cast<SegmentState&>(*snap.states.back());
  seg.filled = m->spec().segment.length;
  const std::string bytes = encode_snapshot(snap, fp, t.data(), 40);
  const std::string e = error_of([&] {
    decode_snapshot(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), *m, fp, nullptr, "s");
  });
  EXPECT_NE(e.find("segment state: 32 tokens of a 32-token segment"), std::string::npos) << e;
}

TEST(SnapshotFile, LoopedAndPersistentModelsContinueExactly) {
  json j = json::parse(R"({
    "name": "looped", "vocab_size": 19, "d_model": 16, "tie_embeddings": true, "persistent_tokens": 3,
    "mixers": {
      "gdn": {"type": "gated_deltanet", "n_k_heads": 1, "n_v_heads": 2, "head_k_dim": 8, "head_v_dim": 4, "chunk": 4},
      "attn": {"type": "attention", "n_heads": 2, "n_kv_heads": 1, "head_dim": 8}
    },
    "mlp": {"hidden": 24},
    "layers": ["attn", "gdn", "attn", "gdn"],
    "loop": {"begin": 1, "end": 3, "loops": 3, "max_loops": 5, "inject": true, "step_embedding": true}
  })");
  expect_round_trip(from_spec(j, "looped"), 20, 8, "looped");
  // A snapshot made at one depth loads at that depth, whatever the session's default.
  const auto m = from_spec(j, "looped");
  const uint64_t fp = model_fingerprint(*m);
  const std::vector<int32_t> t = tokens(10, 19, 4);
  Session deep(m, 5);
  deep.feed(t.data(), 10);
  const std::string bytes = encode_snapshot(deep.snapshot(), fp, t.data(), 10);
  const Session::Snapshot snap =
      decode_snapshot(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), *m, fp, nullptr, "deep");
  Session again(m, 5);
  again.restore(snap);
  EXPECT_EQ(again.feed(t.data(), 3), deep.feed(t.data(), 3));
  Session shallow(m);  // 3 loops: the snapshot's 5-loop states do not fit
  EXPECT_NE(error_of([&] { shallow.restore(snap); }).find("snapshot has"), std::string::npos);
}

// A session restored with room for what comes next does not regrow (and copy) its KV cache
// at its first token; the room is bounded by the rows held.
TEST(SnapshotFile, RestoreReservesRoomInKVCaches) {
  KVState kv(2, 4);
  kv.reserve(64);
  for (int64_t p = 0; p < 64; ++p)
    for (int64_t g = 0; g < 2; ++g)
      for (int64_t i = 0; i < 4; ++i) kv.k_at(g, p)[i] = kv.v_at(g, p)[i] = float(p * 8 + g * 4 + i);
  kv.set_length(64);
  EXPECT_EQ(kv.capacity(), 64);
  auto exact = kv.clone();
  EXPECT_EQ(static_cast<KVState&>(*exact).capacity(), 64);
  auto roomy = kv.clone_with_room(16);
  auto& r = static_cast<KVState&>(*roomy);
  EXPECT_EQ(r.capacity(), 128);
  EXPECT_EQ(r.length(), 64);
  for (int64_t p = 0; p < 64; ++p) EXPECT_EQ(r.v_at(1, p)[3], float(p * 8 + 7));
  EXPECT_EQ(static_cast<KVState&>(*kv.clone_with_room(1 << 20)).capacity(), 128);  // at most the rows held
  // Through a session: the same logits with or without room.
  const std::shared_ptr<const Model> m = load_model(std::string(BRAID_SOURCE_DIR) + "/models/default");
  const std::vector<int32_t> t = tokens(80, m->spec().vocab_size, 9);
  Session a(m);
  a.feed(t.data(), 64);
  const Session::Snapshot snap = a.snapshot();
  Session b(m), c(m);
  b.restore(snap);
  c.restore(snap, 16);
  EXPECT_EQ(b.feed(t.data() + 64, 16), c.feed(t.data() + 64, 16));
}

TEST(SnapshotFile, ForkContinuesIndependently) {
  const std::shared_ptr<const Model> m = load_model(std::string(BRAID_SOURCE_DIR) + "/models/default");
  const std::vector<int32_t> t = tokens(40, m->spec().vocab_size, 5);
  Session a(m);
  a.feed(t.data(), 20);
  std::unique_ptr<Session> b = a.fork();
  EXPECT_EQ(b->position(), 20);
  const std::vector<float> la = a.feed(t.data() + 20, 10);
  b->feed(t.data() + 30, 5);  // the fork goes elsewhere first; a is unaffected
  Session c(m);               // the same chunks as a, never forked
  c.feed(t.data(), 20);
  c.feed(t.data() + 20, 10);
  EXPECT_EQ(la, c.last_logits());
  std::unique_ptr<Session> d = c.fork();
  EXPECT_EQ(d->feed(t.data() + 30, 4), c.feed(t.data() + 30, 4));
}

class SnapshotFileErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    m = load_model(std::string(BRAID_SOURCE_DIR) + "/models/default");
    fp = model_fingerprint(*m);
    t = tokens(30, m->spec().vocab_size, 7);
    Session s(m);
    s.feed(t.data(), 30);
    bytes = encode_snapshot(s.snapshot(), fp, t.data(), 30);
  }
  std::string decode(const std::string& b, uint64_t want = 0) {
    return error_of([&] {
      decode_snapshot(reinterpret_cast<const uint8_t*>(b.data()), b.size(), *m, want ? want : fp, nullptr,
                      "s.snap");
    });
  }
  std::shared_ptr<const Model> m;
  uint64_t fp = 0;
  std::vector<int32_t> t;
  std::string bytes;
};

TEST_F(SnapshotFileErrors, EveryTruncationIsAnError) {
  EXPECT_EQ(decode(bytes), "");
  for (size_t n = 0; n < bytes.size(); n += 1 + n / 64) {
    const std::string e = decode(bytes.substr(0, n));
    ASSERT_NE(e, "") << "cut at " << n;
    EXPECT_EQ(e.rfind("snapshot s.snap: ", 0), 0u) << e;
  }
}

TEST_F(SnapshotFileErrors, EveryFlippedByteIsAnError) {
  for (size_t i = 0; i < bytes.size(); i += 1 + i / 32) {
    std::string b = bytes;
    b[i] = char(b[i] ^ 0x40);
    ASSERT_NE(decode(b), "") << "byte " << i;
  }
  std::string b = bytes;
  b[bytes.size() / 2] ^= 1;
  EXPECT_NE(decode(b).find("checksum mismatch"), std::string::npos) << decode(b);
  b = bytes;
  b[0] = 'X';
  EXPECT_NE(decode(b).find("not a braid snapshot file"), std::string::npos);
}

TEST_F(SnapshotFileErrors, AnotherModelsSnapshotIsRefused) {
  EXPECT_NE(decode(bytes, fp + 1).find("made by another model"), std::string::npos) << decode(bytes, fp + 1);
  // A model of another shape with the same fingerprint passed in: the fields do not fit.
  if (!std::filesystem::exists(fixtures_dir() + "/README.md")) return;
  const auto other = load_model(hf_fixture("mamba"));
  const std::string e = error_of([&] {
    decode_snapshot(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), *other, fp, nullptr,
                    "s.snap");
  });
  EXPECT_NE(e, "");
}

TEST_F(SnapshotFileErrors, FingerprintCoversSpecAndWeights) {
  const ModelSpec spec = m->spec();
  Weights w = owned_copy(m->weights());
  const Model same(spec, owned_copy(m->weights()), "same");
  EXPECT_EQ(model_fingerprint(same), fp);
  Model changed(spec, std::move(w), "changed");
  changed.param_mut(m->weights().begin()->first)[0] += 1.0f;
  EXPECT_NE(model_fingerprint(changed), fp);
}

TEST_F(SnapshotFileErrors, SaveAndLoadFiles) {
  TempDir d;
  Session s(m);
  s.feed(t.data(), 30);
  save_snapshot(d / "a.snap", s.snapshot(), fp, t.data(), 30);
  std::vector<int32_t> prefix;
  const Session::Snapshot snap = load_snapshot(d / "a.snap", *m, fp, &prefix);
  EXPECT_EQ(prefix, t);
  EXPECT_EQ(read_snapshot_header(d / "a.snap").tokens, t);
  EXPECT_EQ(read_snapshot_header(d / "a.snap").fingerprint, fp);
  EXPECT_FALSE(std::filesystem::exists(d / "a.snap.tmp"));
  EXPECT_EQ(std::filesystem::file_size(d / "a.snap"), bytes.size());
  EXPECT_EQ(snapshot_file_bytes(s.snapshot(), 30), bytes.size());
  std::ifstream in(d / "a.snap", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes);  // streamed == encoded
  EXPECT_NE(error_of([&] { load_snapshot(d / "missing.snap", *m, fp); }).find("missing.snap"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              save_snapshot(d / "no/such/dir/a.snap", s.snapshot(), fp, t.data(), 30);
            }).find("cannot write"),
            std::string::npos);
  { std::ofstream(d / "short.snap") << "BRAIDSNP"; }
  EXPECT_NE(error_of([&] { read_snapshot_header(d / "short.snap"); }).find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace braid
