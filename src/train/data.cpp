#include "train/data.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace braid {

std::string read_training_text(const std::string& path) {
  check(!std::filesystem::is_directory(path), path, ": is a directory, expected a text file");
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot read training data");
  std::stringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path, ": read failed");
  std::string text = ss.str();
  check(!text.empty(), path, ": training data file is empty");
  return text;
}

std::vector<int32_t> tokenize_files(const std::vector<std::string>& files, const Tokenizer& tok,
                                    int32_t separator) {
  check(!files.empty(), "no training data files given");
  std::vector<int32_t> out;
  for (const std::string& f : files) {
    const std::string text = read_training_text(f);
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text);
    } catch (const Error& e) {
      fail(f, ": ", e.what());
    }
    out.insert(out.end(), ids.begin(), ids.end());
    if (separator >= 0) out.push_back(separator);
  }
  return out;
}

namespace {
constexpr char kMagic[8] = {'B', 'R', 'A', 'I', 'D', 'T', 'O', 'K'};
}

void write_token_cache(const std::string& path, const std::vector<int32_t>& tokens) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), tmp, ": cannot write token cache");
    const uint32_t version = 1, zero = 0;
    const uint64_t n = tokens.size();
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&version), 4);
    out.write(reinterpret_cast<const char*>(&zero), 4);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(n * 4));
    check(out.good(), tmp, ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

std::vector<int32_t> read_token_cache(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot read token cache");
  char magic[8];
  uint32_t version = 0, zero = 0;
  uint64_t n = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&version), 4);
  in.read(reinterpret_cast<char*>(&zero), 4);
  in.read(reinterpret_cast<char*>(&n), 8);
  check(in.good() && std::memcmp(magic, kMagic, 8) == 0, path, ": not a braid token cache (bad header)");
  check(version == 1, path, ": token cache version ", version, " is not supported (expected 1)");
  const uint64_t size = std::filesystem::file_size(path);
  check(size == 24 + n * 4, path, ": token cache is truncated or corrupt (header says ", n,
        " tokens, file has ", size, " bytes)");
  std::vector<int32_t> t(n);
  in.read(reinterpret_cast<char*>(t.data()), std::streamsize(n * 4));
  check(in.good(), path, ": read failed");
  return t;
}

TokenSplit split_tokens(const std::vector<int32_t>& tokens, double val_fraction, int64_t window) {
  check(val_fraction >= 0 && val_fraction < 1, "validation fraction ", val_fraction, " must be in [0, 1)");
  const int64_t n = int64_t(tokens.size());
  int64_t nval = val_fraction > 0 ? std::max<int64_t>(window, int64_t(double(n) * val_fraction)) : 0;
  TokenSplit s;
  check(n - nval >= window, "the corpus has ", n, " tokens: too few for windows of ", window, " tokens",
        nval ? " plus a held-out part" : "", " (use more text, a shorter --seq or a smaller --val-fraction)");
  s.train.assign(tokens.begin(), tokens.end() - nval);
  s.val.assign(tokens.end() - nval, tokens.end());
  return s;
}

}  // namespace braid
