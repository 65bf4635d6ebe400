// Session snapshots on disk: the prefix cache's disk tier and the C++ API's save/load.
//
// A file holds the snapshot of one token prefix of one model:
//   "BRAIDSNP", u32 format version, u32 0, u64 model fingerprint,
//   u64 n, i32 tokens[n]                       (the prefix; readable on its own)
//   i64 position, u64 n_states, per state: u8 present, then its fields in the order
//   State::fields visits them, each tagged: 'c' i64 | 'f' u64 count, f32 values,
//   u64 n_logits, f32 logits[n_logits],
//   u64 XXH3-64 of every byte before it.
// Little-endian, as the machines braid runs on. A snapshot loads only into the model
// whose fingerprint (spec and every weight byte) it carries, with the loop depth it was
// made at; anything else, a truncated file or a checksum mismatch is a one-line error.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/session.hpp"

namespace braid {

// A 64-bit hash of a model's spec and weights (names, shapes and bytes).
uint64_t model_fingerprint(const Model& m);
// A hash as 16 lowercase hex digits (how files and directories are named by one).
std::string hex64(uint64_t v);

// The file's bytes for the snapshot `s` of tokens[0, n) made by the model `fingerprint`
// names (states are only read, though fields() is not const).
std::string encode_snapshot(const Session::Snapshot& s, uint64_t fingerprint, const int32_t* tokens,
                            int64_t n);

// Rebuilds a snapshot of `model` from a file's bytes; `tokens` (may be null) receives the
// prefix. `where` names the source in errors.
Session::Snapshot decode_snapshot(const uint8_t* data, size_t size, const Model& model, uint64_t fingerprint,
                                  std::vector<int32_t>* tokens, const std::string& where);

// The size of that file (for a prefix of n tokens), without making it.
size_t snapshot_file_bytes(const Session::Snapshot& s, int64_t n);

// Streams the file to `path` atomically (a temporary file renamed over it).
void save_snapshot(const std::string& path, const Session::Snapshot& s, uint64_t fingerprint,
                   const int32_t* tokens, int64_t n);
Session::Snapshot load_snapshot(const std::string& path, const Model& model, uint64_t fingerprint,
                                std::vector<int32_t>* tokens = nullptr);

// The fingerprint and prefix of a file, reading only its head (the body is checked when
// it is loaded).
struct SnapshotHeader {
  uint64_t fingerprint = 0;
  std::vector<int32_t> tokens;
};
SnapshotHeader read_snapshot_header(const std::string& path);

}  // namespace braid
