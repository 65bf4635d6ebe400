// Access to ../shared/fixtures (reference outputs made with Hugging Face transformers).
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "core/error.hpp"

inline std::string fixtures_dir() { return BRAID_FIXTURES_DIR; }
inline std::string hf_fixture(const std::string& arch) { return fixtures_dir() + "/hf/" + arch; }

// Every Hugging Face family with a fixture (../shared/fixtures/hf/<family>).
inline const char* const kHfFamilies[] = {
    "llama",     "qwen3",      "mamba",   "falcon_mamba",    "mamba2",
    "bamba",     "nemotron_h", "lfm2",    "jamba",           "granitemoehybrid",
    "falcon_h1", "qwen3_next", "minimax", "recurrent_gemma", "rwkv",
    "xlstm"};

// Skips the test (with a message) when the fixtures are not checked out beside the repo.
#define REQUIRE_FIXTURES()                                        \
  do {                                                            \
    if (!std::filesystem::exists(fixtures_dir() + "/README.md"))  \
      GTEST_SKIP() << "fixtures not found at " << fixtures_dir(); \
  } while (0)

// The message of the braid::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const braid::Error& e) {
    return e.what();
  }
  return "";
}

// A fresh scratch directory under the system temp dir, removed by the caller's scope.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("braid-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};
