// Shared by the libFuzzer targets: inputs that braid refuses must be refused with its own
// one-line errors (braid::Error, or an ApiError for HTTP bodies). Anything else escaping — a
// crash, a sanitizer report, another exception type — is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.hpp"

namespace braid::fuzz {

// A scratch directory for targets whose parser reads files, unique to the process.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("braid-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (scratch() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return path;
}

}  // namespace braid::fuzz
