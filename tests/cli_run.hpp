// Runs the braid binary with arguments and collects its exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "fixtures.hpp"

struct CliResult {
  int rc;
  std::string out, err;
};

inline CliResult run_braid(const std::string& args) {
  TempDir d;
  const std::string cmd =
      std::string(BRAID_BINARY) + " " + args + " >" + (d / "out") + " 2>" + (d / "err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(d / "out"), slurp(d / "err")};
}
