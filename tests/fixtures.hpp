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
