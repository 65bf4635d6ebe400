// Load test: load_serve MODEL_DIR [--clients C] [--requests R] [--rounds K] [--threads T]
//                                 [--chat-template FILE] [--cache-dir DIR]
// Starts braid's server in-process on a loopback port with few sequence slots and a short
// queue, then, each round, C clients send R requests each as fast as they can: completions
// and chat completions, whole and streamed, n of 1 or 2, prompts sharing prefixes (the
// prefix cache fills and evicts) with random tails, stop strings; about 1 in 12 requests
// is malformed on purpose (a 400 is the right answer) and 1 in 12 streams is dropped by the
// client mid-way (its sequence must be cancelled). Every answer is checked: 200 bodies
// must be well-formed (streams end with [DONE]), 400 only for the malformed ones, 429 only
// from a full queue. Anything else counts as unexpected. After each round, with the server
// idle: resident memory, the state bytes and active sequences the server reports (both
// must be back to 0) and the prefix cache's bytes. With --cache-dir the cache has a disk
// tier there and each round runs on a fresh server (a restart): what it found on disk and
// how many hits came from disk are reported too. Prints one JSON object.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/sysinfo.hpp"
#include "import/load.hpp"
#include "io/text_file.hpp"
#include "serve/server.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using braid::json;

struct Tally {
  std::atomic<int64_t> ok{0}, bad_request{0}, busy{0}, dropped{0}, unexpected{0};
  std::string first_unexpected;
  std::mutex mu;
  void surprise(const std::string& what) {
    ++unexpected;
    std::lock_guard<std::mutex> lock(mu);
    if (first_unexpected.empty()) first_unexpected = what.substr(0, 300);
  }
};

// A metric's value from the Prometheus text.
int64_t metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size() + 2));
}

// A well-formed stream: data events, each JSON but the last, which is [DONE].
bool stream_ok(const std::string& body) {
  size_t at = 0;
  bool done = false;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos || body.compare(at, 6, "data: ") != 0 || done) return false;
    const std::string data = body.substr(at + 6, end - at - 6);
    if (data == "[DONE]") {
      done = true;
    } else if (!json::accept(data) || json::parse(data).contains("error")) {
      return false;
    }
    at = end + 2;
  }
  return done;
}

void client(int port, uint32_t seed, int requests, bool chat, const std::vector<std::string>& prefixes,
            Tally& t) {
  std::mt19937 rng(seed);
  const char* words[] = {"light", "water", "earth", "and", "the", "LORD", "said", "behold", "day", "night"};
  for (int r = 0; r < requests; ++r) {
    std::string text = prefixes[rng() % prefixes.size()];
    for (int w = int(rng() % 12); w > 0; --w) text += std::string(" ") + words[rng() % 10];
    const bool use_chat = chat && rng() % 2 == 0;
    const bool stream = rng() % 2 == 0;
    const bool malformed = rng() % 12 == 0;
    const bool drop = stream && !malformed && rng() % 12 == 0;
    json body = {{"max_tokens", 1 + rng() % 32},
                 {"temperature", rng() % 3 == 0 ? 0.0 : 0.8},
                 {"seed", rng()},
                 {"n", 1 + rng() % 2},
                 {"stream", stream}};
    if (rng() % 4 == 0) body["stop"] = json::array({"the", "\n"});
    if (use_chat)
      body["messages"] = json::array({{{"role", "user"}, {"content", text}}});
    else
      body["prompt"] = text;
    std::string raw = body.dump();
    if (malformed) {
      switch (rng() % 3) {
        case 0:
          raw = raw.substr(0, raw.size() / 2);
          break;  // truncated JSON
        case 1:
          body["temperature"] = 7;
          raw = body.dump();
          break;  // out of range
        default:
          body["frobnicate"] = true;
          raw = body.dump();
          break;  // unknown field
      }
    }
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(300, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = use_chat ? "/v1/chat/completions" : "/v1/completions";
    req.body = raw;
    req.set_header("Content-Type", "application/json");
    std::string got;
    int events = 0;
    const int drop_after = 1 + int(rng() % 4);
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      got.append(d, n);
      if (drop && (events += int(std::count(d, d + n, '\n'))) >= 2 * drop_after) return false;
      return true;
    };
    auto res = c.send(req);
    const std::string what = std::string(req.path) + " " + raw.substr(0, 120);
    if (drop) {
      ++t.dropped;  // the client hung up; the server must cancel (checked after the round)
      continue;
    }
    if (!res) {
      t.surprise(what + ": no response (" + httplib::to_string(res.error()) + ")");
      continue;
    }
    const std::string& b = got.empty() ? res->body : got;
    if (res->status == 200 && !malformed) {
      const bool good = stream ? stream_ok(b) : json::accept(b) && json::parse(b).contains("choices");
      if (good)
        ++t.ok;
      else
        t.surprise(what + ": malformed 200 body: " + b.substr(0, 200));
    } else if (res->status == 400 && malformed) {
      ++t.bad_request;
    } else if (res->status == 429) {
      ++t.busy;
    } else {
      t.surprise(what + ": status " + std::to_string(res->status) + ": " + b.substr(0, 200));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: load_serve MODEL_DIR [--clients C] [--requests R] [--rounds K] [--threads T] "
                 "[--chat-template FILE]\n");
    return 2;
  }
  int clients = 24, requests = 20, rounds = 3, threads = 0;
  std::string chat_template, cache_dir;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--clients")) clients = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--requests")) requests = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--chat-template")) chat_template = argv[i + 1];
    if (!std::strcmp(argv[i], "--cache-dir")) cache_dir = argv[i + 1];
  }
  braid::retain_freed_memory();  // as the braid CLI does
  try {
    braid::set_num_threads(threads);
    const std::string dir = argv[1];
    std::shared_ptr<const braid::Model> model = braid::load_model(dir);
    std::shared_ptr<const braid::Tokenizer> tok = braid::Tokenizer::load(dir + "/tokenizer.json");
    braid::serve::ServerOptions opt;
    opt.port = 0;
    opt.engine.max_sequences = 8;
    opt.engine.max_queue = 8;
    opt.engine.cache_bytes = size_t(64) << 20;
    opt.engine.cache_every = 64;
    opt.engine.disk.dir = cache_dir;
    opt.engine.disk.max_bytes = size_t(256) << 20;
    if (!chat_template.empty())
      opt.chat_template =
          std::make_shared<const braid::ChatTemplate>(braid::ChatTemplate::from_file(chat_template, dir));
    // With a disk tier every round runs on a fresh server over the same directory: a restart.
    std::unique_ptr<braid::serve::Server> server;
    std::thread listener;
    auto start_server = [&] {
      server = std::make_unique<braid::serve::Server>(model, tok, opt);
      server->bind();
      listener = std::thread([&] { server->listen(); });
    };
    auto stop_server = [&] {
      server->shutdown();
      listener.join();
      server.reset();
    };
    start_server();

    std::vector<std::string> prefixes;
    std::mt19937 rng(7);
    for (int p = 0; p < 6; ++p) {
      std::string s = "In the beginning";
      for (int w = 0; w < 40 + p * 30; ++w) s += " word" + std::to_string(rng() % 500);
      prefixes.push_back(s);
    }
    json per_round = json::array();
    int64_t unexpected = 0;
    std::string first_unexpected;
    for (int round = 0; round < rounds; ++round) {
      if (round > 0 && !cache_dir.empty()) {
        stop_server();
        start_server();
      }
      const int port = server->port();
      const int64_t found_on_disk = metric(server->metrics_text(), "braid_prefix_cache_disk_entries");
      Tally t;
      const auto start = Clock::now();
      std::vector<std::thread> ts;
      for (int c = 0; c < clients; ++c)
        ts.emplace_back(client, port, uint32_t(round * 1000 + c), requests, opt.chat_template != nullptr,
                        std::cref(prefixes), std::ref(t));
      for (auto& th : ts) th.join();
      const double secs = std::chrono::duration<double>(Clock::now() - start).count();
      // Dropped streams are cancelled at the scheduler's next step: wait for the server to idle.
      std::string m = server->metrics_text();
      for (int i = 0; i < 200 && metric(m, "braid_active_sequences") != 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        m = server->metrics_text();
      }
      // The server hands freed memory back after a quiet spell: measure after it.
      std::this_thread::sleep_for(std::chrono::milliseconds(braid::serve::kIdleReleaseMs + 500));
      unexpected += t.unexpected;
      if (first_unexpected.empty()) first_unexpected = t.first_unexpected;
      per_round.push_back({{"requests", int64_t(clients) * requests},
                           {"ok", t.ok.load()},
                           {"bad_request_400_intended", t.bad_request.load()},
                           {"busy_429", t.busy.load()},
                           {"dropped_by_client", t.dropped.load()},
                           {"unexpected", t.unexpected.load()},
                           {"seconds", secs},
                           {"rss_mb", double(braid::current_rss_bytes()) / (1 << 20)},
                           {"active_sequences_after", metric(m, "braid_active_sequences")},
                           {"state_bytes_after", metric(m, "braid_state_bytes")},
                           {"prefix_cache_mb", double(metric(m, "braid_prefix_cache_bytes")) / (1 << 20)},
                           {"cancelled_total", metric(m, "braid_requests_cancelled_total")}});
      if (!cache_dir.empty()) {
        json& r = per_round.back();
        r["disk_snapshots_at_start"] = found_on_disk;
        r["disk_snapshots_after"] = metric(m, "braid_prefix_cache_disk_entries");
        r["disk_mb_after"] = double(metric(m, "braid_prefix_cache_disk_bytes")) / (1 << 20);
        r["disk_hits"] = metric(m, "braid_prefix_cache_disk_hits_total");
        r["cache_hits"] = metric(m, "braid_prefix_cache_hits_total");
        r["disk_errors"] = metric(m, "braid_prefix_cache_disk_errors_total");
      }
    }
    stop_server();
    json out = {
        {"model", dir},
        {"threads", braid::num_threads()},
        {"clients", clients},
        {"requests_per_client", requests},
        {"max_sessions", opt.engine.max_sequences},
        {"max_queue", opt.engine.max_queue},
        {"prefix_cache_budget_mb", int64_t(opt.engine.cache_bytes >> 20)},
        {"disk_cache", cache_dir.empty() ? json(nullptr) : json(int64_t(opt.engine.disk.max_bytes >> 20))},
        {"chat", opt.chat_template != nullptr},
        {"rounds", per_round},
        {"unexpected_total", unexpected}};
    if (!first_unexpected.empty()) out["first_unexpected"] = first_unexpected;
    std::printf("%s\n", out.dump(2).c_str());
    return unexpected == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_serve: error: %s\n", e.what());
    return 2;
  }
}
