// `braid serve` as a user runs it, driven by curl: it announces its port, answers
// completions (whole and streamed), refuses bad JSON with a 400, and on SIGTERM finishes
// the stream in flight before exiting 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
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

// `braid serve ARGS` on a free loopback port, stopped with SIGTERM when the test ends.
struct ServeProcess {
  explicit ServeProcess(std::vector<std::string> extra) {
    std::vector<std::string> args = {BRAID_BINARY, "serve", "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawn(&pid, BRAID_BINARY, &fa, nullptr, argv.data(), environ) != 0) pid = 0;
    posix_spawn_file_actions_destroy(&fa);
    std::smatch m;
    const std::regex announced("on http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; pid > 0 && i < 600; ++i) {
      const std::string log = slurp(err);
      if (std::regex_search(log, m, announced)) {
        url = "http://127.0.0.1:" + m[1].str();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // Sends SIGTERM and returns the exit status.
  int stop() {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = 0;
    return status;
  }
  ~ServeProcess() { stop(); }
  TempDir dir;
  std::string err = dir / "serve.err";
  pid_t pid = 0;
  std::string url;  // empty when it never announced its port
};

const std::string kModel = std::string(BRAID_SOURCE_DIR) + "/models/default";

TEST(ServeCli, CurlCompletionsAndGracefulStop) {
  if (sh("command -v curl").empty())
    GTEST_SKIP() << "curl is not installed (scripts/install-deps.sh installs it)";
  TempDir d;
  ServeProcess server({"--model", kModel});
  ASSERT_FALSE(server.url.empty()) << slurp(server.err);
  const std::string& url = server.url;
  const std::string err = server.err;
  const pid_t pid = server.pid;

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
  (void)pid;
  const int status = server.stop();
  client.join();
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

// Value of a metric in /metrics text (-1 when absent).
double metric_of(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// --cache-dir: a prompt's state snapshots outlive the server; after a restart the same
// prompt restores them from disk and gets exactly the tokens the first, uncached run got.
TEST(ServeCli, RestartKeepsTheDiskCache) {
  if (sh("command -v curl").empty())
    GTEST_SKIP() << "curl is not installed (scripts/install-deps.sh installs it)";
  TempDir d;
  json body = {{"prompt", json::array()}, {"max_tokens", 8}, {"temperature", 0}};
  for (int i = 0; i < 300; ++i) body["prompt"].push_back((i * 37 + 11) % 250);
  { std::ofstream(d / "req.json") << body.dump(); }
  const std::vector<std::string> args = {"--model",         kModel, "--cache-dir",   d / "cache",
                                         "--prefill-chunk", "64",   "--cache-every", "128"};
  auto complete = [&](const std::string& url) {
    return json::parse(sh("curl -s " + url + "/v1/completions -H 'Content-Type: application/json' -d @" +
                          (d / "req.json")))["choices"][0]["token_ids"];
  };
  json first;
  {
    ServeProcess server(args);
    ASSERT_FALSE(server.url.empty()) << slurp(server.err);
    EXPECT_NE(slurp(server.err).find("0 snapshots"), std::string::npos) << slurp(server.err);
    first = complete(server.url);
    const std::string m = sh("curl -s " + server.url + "/metrics");
    EXPECT_EQ(metric_of(m, "braid_prefix_cache_hits_total"), 0) << m;
    EXPECT_GE(metric_of(m, "braid_prefix_cache_disk_writes_total"), 2) << m;  // periodic and prompt end
    const int status = server.stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(server.err);
  }
  ASSERT_EQ(first.size(), 8u);
  ServeProcess again(args);
  ASSERT_FALSE(again.url.empty()) << slurp(again.err);
  EXPECT_EQ(slurp(again.err).find(" 0 snapshots"), std::string::npos) << slurp(again.err);
  const std::string before = sh("curl -s " + again.url + "/metrics");
  EXPECT_GE(metric_of(before, "braid_prefix_cache_disk_entries"), 2) << before;
  EXPECT_EQ(complete(again.url), first);
  const std::string m = sh("curl -s " + again.url + "/metrics");
  EXPECT_EQ(metric_of(m, "braid_prefix_cache_disk_hits_total"), 1) << m;
  EXPECT_GE(metric_of(m, "braid_prefix_cache_tokens_reused_total"), 256) << m;
  EXPECT_EQ(metric_of(m, "braid_prefix_cache_disk_errors_total"), 0) << m;
}

// The official OpenAI client (npm `openai`, installed by scripts/install-npm-deps.sh) reads
// braid's completions and chat completions whole and streamed, lists the model, and surfaces
// 400 and 401 errors.
TEST(ServeCli, OfficialOpenAIClient) {
  const std::string js = std::string(BRAID_SOURCE_DIR) + "/tests/js";
  if (!std::filesystem::exists(js + "/node_modules/openai/package.json"))
    GTEST_SKIP()
        << "the openai npm package is not installed: run scripts/install-npm-deps.sh (make test does)";
  ServeProcess server({"--model", kModel, "--api-key", "k3y", "--name", "default", "--chat-template",
                       std::string(BRAID_SOURCE_DIR) + "/tests/data/chat_templates/zephyr.jinja"});
  ASSERT_FALSE(server.url.empty()) << slurp(server.err);
  const std::string raw = sh("node " + js + "/openai_client.mjs " + server.url + "/v1 k3y default 2>&1");
  json j;
  try {
    j = json::parse(raw);
  } catch (const std::exception&) {
    FAIL() << "the client failed: " << raw;
  }
  EXPECT_EQ(j["whole"]["finish"], "length");
  EXPECT_EQ(j["whole"]["usage"]["completion_tokens"], 8);
  EXPECT_FALSE(j["whole"]["text"].get<std::string>().empty());
  EXPECT_EQ(j["streamed"]["text"], j["whole"]["text"]);  // greedy: the same text streamed
  EXPECT_EQ(j["streamed"]["finish"], "length");
  EXPECT_EQ(j["streamed"]["usage"], j["whole"]["usage"]);
  EXPECT_EQ(j["chat"]["object"], "chat.completion");
  EXPECT_EQ(j["chat"]["role"], "assistant");
  EXPECT_EQ(j["chat"]["finish"], "length");
  EXPECT_EQ(j["chat"]["usage"]["completion_tokens"], 8);
  EXPECT_GT(j["chat"]["usage"]["prompt_tokens"],
            j["whole"]["usage"]["prompt_tokens"]);  // the template's framing
  EXPECT_EQ(j["chatStreamed"]["content"], j["chat"]["content"]);
  EXPECT_EQ(j["chatStreamed"]["role"], "assistant");
  EXPECT_EQ(j["chatStreamed"]["finish"], "length");
  EXPECT_EQ(j["chatStreamed"]["usage"], j["chat"]["usage"]);
  EXPECT_EQ(j["models"], json::array({"default"}));
  EXPECT_EQ(j["error"]["status"], 400);
  EXPECT_EQ(j["error"]["param"], "max_tokens");
  EXPECT_EQ(j["unauthorized"]["status"], 401);
  const int status = server.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(server.err);
}

}  // namespace
}  // namespace braid
