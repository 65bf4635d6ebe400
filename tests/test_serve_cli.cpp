// `braid serve` as a user runs it, driven by curl: it announces its port, answers
// completions (whole and streamed), refuses bad JSON with a 400, and on SIGTERM finishes
// the stream in flight before exiting 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "fixtures.hpp"
#include "io/json.hpp"

extern char** environ;

namespace braid {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command; returns its stdout.
std::string sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(ServeCli, CurlCompletionsAndGracefulStop) {
  if (sh("command -v curl").empty())
    GTEST_SKIP() << "curl is not installed (scripts/install-deps.sh installs it)";
  TempDir d;
  const std::string err = d / "serve.err";
  const std::string model = std::string(BRAID_SOURCE_DIR) + "/models/default";
  std::vector<std::string> args = {BRAID_BINARY, "serve", "--model", model, "--port", "0", "--threads", "1"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, BRAID_BINARY, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);

  std::smatch m;
  std::string log;
  const std::regex announced("on http://127\\.0\\.0\\.1:([0-9]+)");
  for (int i = 0; i < 600 && !std::regex_search(log, m, announced); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log = slurp(err);
  }
  ASSERT_TRUE(std::regex_search(log, m, announced)) << log;
  const std::string url = "http://127.0.0.1:" + m[1].str();

  EXPECT_EQ(sh("curl -s " + url + "/health"), R"({"status":"ok"})");
  const json whole =
      json::parse(sh("curl -s " + url +
                     "/v1/completions -H 'Content-Type: application/json' "
                     "-d '{\"prompt\": \"And God said\", \"max_tokens\": 8, \"temperature\": 0}'"));
  EXPECT_EQ(whole["choices"][0]["token_ids"].size(), 8u);
  const std::string bad = sh("curl -s -o /dev/null -w '%{http_code}' " + url + "/v1/completions -d '{oops'");
  EXPECT_EQ(bad, "400");

  // A long stream in flight when SIGTERM arrives still ends with [DONE].
  const std::string streamed = d / "stream.txt";
  std::thread client([&] {
    sh("curl -sN " + url +
       "/v1/completions -d '{\"prompt\": \"And God said\", \"max_tokens\": 200, \"temperature\": 0, "
       "\"stream\": "
       "true}' > " +
       streamed);
  });
  for (int i = 0; i < 400 && slurp(streamed).find("data: ") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGTERM);
  client.join();
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(err);
  const std::string body = slurp(streamed);
  EXPECT_NE(body.find("data: [DONE]\n\n"), std::string::npos) << body;
  EXPECT_NE(body.find("\"finish_reason\":\""), std::string::npos) << "the stream was cut short: " << body;
  std::string text;
  for (size_t at = body.find("data: {"); at != std::string::npos; at = body.find("data: {", at + 1))
    text += json::parse(body.substr(at + 6, body.find("\n\n", at) - at - 6))["choices"][0]["text"]
                .get<std::string>();
  const json first8 = whole["choices"][0]["text"];
  EXPECT_EQ(text.rfind(first8.get<std::string>(), 0), 0u) << text;  // greedy: the 8-token run is its prefix
  EXPECT_NE(slurp(err).find("stopped"), std::string::npos);
}

}  // namespace
}  // namespace braid
