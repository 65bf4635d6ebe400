// libFuzzer target: a prefix-cache snapshot file (runtime/snapshot_file.hpp), as the disk tier
// reads it back, for small models holding every kind of state: attention KV caches (full, and
// a sliding window with sinks), Titans memories with a window, Mamba, Mamba-2, Gated DeltaNet,
// GLA, mLSTM, RG-LRU, short convolutions, lightning attention, segment memories and a looped
// core. The first input
// byte picks the model; the fuzzer's bytes then have the model's fingerprint and a valid
// checksum written in, so mutations reach the state fields instead of stopping at the
// checksum. A snapshot that loads must then run: a session restored from it feeds tokens.
//
// BRAID_FUZZ_WRITE_SEEDS=DIR writes one real snapshot per model to DIR and exits (how
// fuzz/corpus/snapshot/ was made).
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_common.hpp"
#include "io/json.hpp"
#include "model/init.hpp"
#include "model/spec_json.hpp"
#include "runtime/snapshot_file.hpp"
#include "train/trainer.hpp"

namespace {

const char* const kSpecs[] = {
    R"({"name": "a", "vocab_size": 11, "d_model": 8, "tie_embeddings": true,
        "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 4},
                   "swa": {"type": "attention", "n_heads": 2, "head_dim": 4, "sliding_window": 4, "sink_tokens": 1},
                   "mem": {"type": "titans", "n_heads": 2, "head_dim": 4, "depth": 2, "hidden": 4, "chunk": 2, "window": 3}},
        "mlp": {"hidden": 8}, "layers": ["attn", "swa", "mem"]})",
    R"({"name": "r", "vocab_size": 11, "d_model": 8, "tie_embeddings": true,
        "mixers": {"m1": {"type": "mamba", "d_state": 2, "d_conv": 3, "expand": 1},
                   "m2": {"type": "mamba2", "n_heads": 2, "head_dim": 4, "d_state": 2, "n_groups": 1, "d_conv": 3, "chunk": 4},
                   "gdn": {"type": "gated_deltanet", "n_k_heads": 1, "n_v_heads": 2, "head_k_dim": 4, "head_v_dim": 4, "chunk": 4},
                   "gla": {"type": "gla", "n_heads": 2, "head_k_dim": 4, "head_v_dim": 4, "chunk": 4}},
        "mlp": {"hidden": 8}, "layers": ["m1", "m2", "gdn", "gla"]})",
    R"({"name": "s", "vocab_size": 11, "d_model": 8, "tie_embeddings": true,
        "mixers": {"attn": {"type": "attention", "n_heads": 2, "head_dim": 4},
                   "gdn": {"type": "gated_deltanet", "n_k_heads": 1, "n_v_heads": 1, "head_k_dim": 4, "head_v_dim": 4, "chunk": 2}},
        "mlp": {"hidden": 8}, "layers": ["attn", "gdn", "attn"],
        "loop": {"begin": 1, "end": 2, "loops": 2, "max_loops": 3, "inject": true},
        "segments": {"length": 4, "memory_tokens": 2, "bptt": 0}})",
    R"({"name": "x", "vocab_size": 11, "d_model": 8, "tie_embeddings": true,
        "mixers": {"ml": {"type": "mlstm", "n_heads": 2, "qk_dim": 4, "v_dim": 8, "chunk": 4},
                   "rg": {"type": "rglru", "n_heads": 2, "d_conv": 3},
                   "sc": {"type": "short_conv", "kernel": 3},
                   "li": {"type": "lightning", "n_heads": 2, "head_dim": 4, "chunk": 4}},
        "mlp": {"hidden": 8}, "layers": ["ml", "rg", "sc", "li"]})",
};

struct Fixture {
  std::shared_ptr<const braid::Model> model;
  uint64_t fingerprint = 0;
};

const std::vector<Fixture>& fixtures() {
  static const std::vector<Fixture> f = [] {
    std::vector<Fixture> out;
    for (const char* text : kSpecs) {
      const braid::ModelSpec spec = braid::spec_from_json(braid::json::parse(text), "fuzz spec");
      auto m = std::make_shared<const braid::Model>(
          spec, braid::owned_copy(braid::init_weights(spec, 1, 0.3)), "fuzz");
      out.push_back({m, braid::model_fingerprint(*m)});
    }
    return out;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("BRAID_FUZZ_WRITE_SEEDS");
  if (!dir) return 0;
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7};
  for (size_t i = 0; i < fixtures().size(); ++i) {
    braid::Session s(fixtures()[i].model);
    s.feed(tokens);
    const std::string bytes =
        std::string(1, char(i)) +
        braid::encode_snapshot(s.snapshot(), fixtures()[i].fingerprint, tokens.data(), 7);
    braid::fuzz::write_file("seed", reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    std::filesystem::copy_file(braid::fuzz::scratch() / "seed",
                               std::filesystem::path(dir) / ("model" + std::to_string(i) + ".snap"),
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Fixture& fx = fixtures()[data[0] % fixtures().size()];
  std::vector<uint8_t> file(data + 1, data + size);
  if (file.size() >= 40) {  // the fingerprint and the checksum made right
    std::memcpy(file.data() + 16, &fx.fingerprint, 8);
    const uint64_t sum = XXH3_64bits(file.data(), file.size() - 8);
    std::memcpy(file.data() + file.size() - 8, &sum, 8);
  }
  try {
    const braid::Session::Snapshot snap =
        braid::decode_snapshot(file.data(), file.size(), *fx.model, fx.fingerprint, nullptr, "fuzz");
    braid::Session s(fx.model, fx.model->loops_for_states(snap.states.size()));
    s.restore(snap, 3);
    const std::vector<int32_t> more = {3, 1, 4};
    s.feed(more);
    s.feed(more.data(), 1);
  } catch (const braid::Error&) {
  }
  return 0;
}
