// Serving benchmark: bench_serve MODEL_DIR [--prefix N] [--runs R] [--threads T] [--gen G]
// Starts braid's server in-process on a loopback port and measures, over HTTP:
//  1. time to first token (TTFT) for prompts sharing an N-token prefix: the first request
//     (nothing cached) vs a second one with the same prefix and another tail (the prefix's
//     state restored from the prefix cache); median of R fresh prefixes;
//  2. aggregate decode throughput (generated tokens / wall time) with 1, 4 and 16 clients
//     streaming G tokens each (default 64) at once; median of R rounds, the levels taking
//     turns.
// Prints one JSON object.
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/sysinfo.hpp"
#include "import/load.hpp"
#include "serve/server.hpp"
#include "tokenizer/tokenizer.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using braid::json;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Streams a completion; returns (seconds to the first event, seconds to the end, tokens).
struct Timing {
  double first = 0, total = 0;
  int64_t tokens = 0;
};
Timing stream(int port, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body =
      json{{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", true}}.dump();
  req.set_header("Content-Type", "application/json");
  Timing t;
  const auto start = Clock::now();
  std::string buf;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    if (t.first == 0) t.first = std::chrono::duration<double>(Clock::now() - start).count();
    buf.append(d, n);
    return true;
  };
  auto res = c.send(req);
  if (!res || res->status != 200)
    braid::fail("request failed: ", res ? res->body : httplib::to_string(res.error()));
  t.total = std::chrono::duration<double>(Clock::now() - start).count();
  for (size_t at = buf.find("\"token_ids\":["); at != std::string::npos;
       at = buf.find("\"token_ids\":[", at + 1))
    t.tokens += buf[at + 13] != ']';
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_serve MODEL_DIR [--prefix N] [--runs R] [--threads T] [--gen G]\n");
    return 2;
  }
  int64_t prefix = 4096;
  int runs = 5, threads = 0;
  int64_t gen = 64;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--prefix")) prefix = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--runs")) runs = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--gen")) gen = std::max<int64_t>(1, std::atoll(argv[i + 1]));
  }
  braid::retain_freed_memory();  // as the braid CLI does: snapshots reuse freed heap memory
  try {
    braid::set_num_threads(threads);
    std::shared_ptr<const braid::Model> model = braid::load_model(argv[1]);
    braid::serve::ServerOptions opt;
    opt.port = 0;
    opt.engine.cache_bytes = size_t(2) << 30;
    opt.engine.max_sequences = 16;
    opt.limits.max_prompt_tokens = prefix + 64;
    braid::serve::Server server(model, nullptr, opt);
    server.bind();
    std::thread listener([&] { server.listen(); });
    const int port = server.port();

    std::mt19937 rng(1);
    const uint32_t V = uint32_t(std::min<int64_t>(model->spec().vocab_size, 1000));
    auto ids = [&](int64_t n) {
      std::vector<int32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = int32_t(3 + rng() % (V - 3));
      return t;
    };
    std::vector<double> first, second;
    for (int r = 0; r < runs; ++r) {
      const std::vector<int32_t> shared = ids(prefix);
      for (auto* out : {&first, &second}) {
        std::vector<int32_t> p = shared, tail = ids(16);
        p.insert(p.end(), tail.begin(), tail.end());
        out->push_back(stream(port, p, 1).first);
      }
    }
    // Rounds go 1, 4, 16 clients, 1, 4, 16, ...: a host whose speed drifts slows every level alike.
    const int levels[] = {1, 4, 16};
    std::vector<double> rates[3];
    for (int r = 0; r < runs; ++r)
      for (int l = 0; l < 3; ++l) {
        std::vector<std::future<Timing>> fs;
        const auto start = Clock::now();
        for (int c = 0; c < levels[l]; ++c) {
          const std::vector<int32_t> p = ids(32);
          fs.push_back(std::async(std::launch::async, [&, p] { return stream(port, p, gen); }));
        }
        int64_t tokens = 0;
        for (auto& f : fs) tokens += f.get().tokens;
        rates[l].push_back(double(tokens) / std::chrono::duration<double>(Clock::now() - start).count());
      }
    json conc = json::object();
    const double single = median(rates[0]);
    for (int l = 0; l < 3; ++l) {
      const double tps = median(rates[l]);
      conc[std::to_string(levels[l])] = {{"tokens_per_s", tps}, {"vs_1", tps / single}};
    }
    const std::string metrics = server.metrics_text();
    server.shutdown();
    listener.join();
    const double f = median(first), s = median(second);
    json out = {{"model", argv[1]},
                {"params", model->n_params()},
                {"threads", braid::num_threads()},
                {"prefix_tokens", prefix},
                {"runs", runs},
                {"tokens_per_client", gen},
                {"ttft_first_s", f},
                {"ttft_second_s", s},
                {"second_over_first", s / f},
                {"decode_aggregate", conc}};
    const size_t at = metrics.find("\nbraid_prefix_cache_bytes ");
    if (at != std::string::npos) out["cache_bytes_at_end"] = std::stoll(metrics.substr(at + 26));
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_serve: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
