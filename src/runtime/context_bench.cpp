#include "runtime/context_bench.hpp"

#include <algorithm>
#include <fstream>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "core/sysinfo.hpp"
#include "core/timer.hpp"
#include "runtime/sampling.hpp"
#include "runtime/session.hpp"

namespace braid {

namespace {

// MemAvailable from /proc/meminfo plus what this process holds now (0 when unknown).
size_t memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024 + current_rss_bytes();
  return 0;
}

}  // namespace

std::vector<int64_t> parse_context_list(const std::string& list) {
  std::vector<int64_t> out;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(',', at), list.size());
    std::string item = list.substr(at, end - at);
    check(!item.empty(), "--context: empty entry in '", list, "'");
    int64_t mult = 1;
    if (item.back() == 'k' || item.back() == 'K')
      mult = int64_t(1) << 10, item.pop_back();
    else if (item.back() == 'm' || item.back() == 'M')
      mult = int64_t(1) << 20, item.pop_back();
    check(!item.empty() && item.size() <= 9 && item.find_first_not_of("0123456789") == std::string::npos,
          "--context: '", list.substr(at, end - at), "' is not a length (like 4096, 4k or 1M)");
    const int64_t n = std::stoll(item) * mult;
    check(n >= 1, "--context: lengths must be >= 1");
    out.push_back(n);
    at = end + 1;
  }
  return out;
}

ContextPoint run_context_point(const std::shared_ptr<const Model>& model, int64_t context,
                               const ContextBenchOptions& o) {
  check(context >= 1 && o.chunk >= 1 && o.decode >= 1, "context, chunk and decode must be >= 1");
  ContextPoint p;
  p.context = context;
  const int64_t V = model->spec().vocab_size;
  const int64_t total = context + o.decode;
  // A KV cache grows by doubling, so it may hold twice its tokens' bytes; plus scratch.
  p.predicted_bytes = model->weight_bytes() + model->fixed_state_bytes() +
                      2 * size_t(total) * model->state_bytes_per_token() + (size_t(256) << 20);
  const size_t limit = o.memory_limit ? o.memory_limit : memory_available();
  if (limit && p.predicted_bytes > limit) {
    p.status = "out_of_memory";
    return p;
  }
  Rng rng(o.seed);
  std::vector<int32_t> chunk(size_t(std::min(o.chunk, context)));
  Session s(model);
  Timer clock;
  p.status = "ok";
  const std::vector<float>* logits = nullptr;
  while (p.fed < context) {
    const int64_t n = std::min<int64_t>(o.chunk, context - p.fed);
    for (int64_t i = 0; i < n; ++i) chunk[size_t(i)] = int32_t(rng.next() % uint64_t(V));
    logits = &s.feed(chunk.data(), n);
    p.fed += n;
    p.rss_bytes = std::max(p.rss_bytes, current_rss_bytes());
    if (p.fed < context && clock.seconds() > o.max_seconds) {
      p.status = "timeout";
      break;
    }
  }
  const double prefill_s = clock.seconds();
  p.prefill_tokens_per_s = double(p.fed) / prefill_s;
  if (p.status == "ok") {
    int32_t tok = argmax(logits->data(), V);
    Timer d;
    for (int64_t i = 0; i < o.decode; ++i) tok = argmax(s.feed(&tok, 1).data(), V);
    p.decode_tokens_per_s = double(o.decode) / d.seconds();
  }
  p.state_bytes = s.state_bytes();
  p.rss_bytes = std::max(p.rss_bytes, current_rss_bytes());
  return p;
}

}  // namespace braid
