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

namespace {

// What a length needs: weights, fixed states, KV caches that may hold twice their tokens' bytes
// (they grow by doubling), and scratch.
size_t predicted_bytes(const Model& m, int64_t total_tokens) {
  return m.weight_bytes() + m.fixed_state_bytes() + 2 * size_t(total_tokens) * m.state_bytes_per_token() +
         (size_t(256) << 20);
}

// One session fed random prompt tokens a chunk at a time, and decoding greedily.
class Runner {
 public:
  Runner(const std::shared_ptr<const Model>& model, const ContextBenchOptions& o)
      : o_(o), V_(model->spec().vocab_size), rng_(o.seed), session_(model) {}

  // Feeds prompt tokens until `fed() == until`, or stops early (false) once the budget's
  // clock has passed o.max_seconds with tokens still to feed.
  bool feed_to(int64_t until, const Timer& budget) {
    Timer t;
    bool done = true;
    while (fed_ < until) {
      const int64_t n = std::min<int64_t>(o_.chunk, until - fed_);
      chunk_.resize(size_t(n));
      for (int32_t& tok : chunk_) tok = int32_t(rng_.next() % uint64_t(V_));
      logits_ = &session_.feed(chunk_.data(), n);
      fed_ += n;
      rss_ = std::max(rss_, current_rss_bytes());
      if (fed_ < until && budget.seconds() > o_.max_seconds) {
        done = false;
        break;
      }
    }
    prefill_seconds_ += t.seconds();
    return done;
  }

  // Decodes o.decode tokens greedily from the last logits; returns tokens/s. The prompt's
  // count and time stay as they were.
  double decode() {
    int32_t tok = argmax(logits_->data(), V_);
    Timer d;
    for (int64_t i = 0; i < o_.decode; ++i)
      logits_ = &session_.feed(&tok, 1), tok = argmax(logits_->data(), V_);
    const double rate = double(o_.decode) / d.seconds();
    rss_ = std::max(rss_, current_rss_bytes());
    return rate;
  }

  // The point's measurements so far.
  void fill(ContextPoint& p) const {
    p.fed = fed_;
    p.prefill_tokens_per_s = prefill_seconds_ > 0 ? double(fed_) / prefill_seconds_ : 0;
    p.state_bytes = session_.state_bytes();
    p.rss_bytes = std::max(rss_, current_rss_bytes());
  }

 private:
  const ContextBenchOptions& o_;
  int64_t V_;
  Rng rng_;
  Session session_;
  std::vector<int32_t> chunk_;
  const std::vector<float>* logits_ = nullptr;
  int64_t fed_ = 0;
  double prefill_seconds_ = 0;
  size_t rss_ = 0;
};

void check_options(const ContextBenchOptions& o) {
  check(o.chunk >= 1 && o.decode >= 1, "chunk and decode must be >= 1");
}

}  // namespace

ContextPoint run_context_point(const std::shared_ptr<const Model>& model, int64_t context,
                               const ContextBenchOptions& o) {
  check_options(o);
  check(context >= 1, "context must be >= 1");
  ContextPoint p;
  p.context = context;
  p.predicted_bytes = predicted_bytes(*model, context + o.decode);
  const size_t limit = o.memory_limit ? o.memory_limit : memory_available();
  p.memory_limit_bytes = limit;
  if (limit && p.predicted_bytes > limit) {
    p.status = "out_of_memory";
    return p;
  }
  Runner r(model, o);
  const Timer budget;
  const bool done = r.feed_to(context, budget);
  p.status = done ? "ok" : "timeout";
  if (done) p.decode_tokens_per_s = r.decode();
  r.fill(p);
  return p;
}

std::vector<ContextPoint> run_context_sweep(const std::shared_ptr<const Model>& model,
                                            const std::vector<int64_t>& lengths, const ContextBenchOptions& o,
                                            const std::function<void(const ContextPoint&)>& report) {
  check_options(o);
  for (size_t i = 0; i < lengths.size(); ++i)
    check(lengths[i] >= 1 && (i == 0 || lengths[i] > lengths[i - 1]),
          "a sweep's lengths must be ascending and >= 1");
  const size_t limit = o.memory_limit ? o.memory_limit : memory_available();
  Runner r(model, o);
  const Timer budget;
  std::vector<ContextPoint> points;
  bool stopped = false;  // by the budget or the memory limit: later lengths are not run
  for (size_t i = 0; i < lengths.size(); ++i) {
    ContextPoint p;
    p.context = lengths[i];
    p.memory_limit_bytes = limit;
    // Every earlier length's decoded tokens are in the context too.
    p.predicted_bytes = predicted_bytes(*model, lengths[i] + int64_t(i + 1) * o.decode);
    if (limit && p.predicted_bytes > limit) {
      p.status = "out_of_memory";
      stopped = true;
    } else if (stopped || !r.feed_to(lengths[i], budget)) {
      p.status = "timeout";
      stopped = true;
      r.fill(p);
    } else {
      p.status = "ok";
      p.decode_tokens_per_s = r.decode();
      r.fill(p);
    }
    if (report) report(p);
    points.push_back(p);
  }
  return points;
}

}  // namespace braid
