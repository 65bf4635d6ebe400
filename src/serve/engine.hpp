// Engine: the server's scheduler. One thread owns every running sequence and the model;
// each iteration it admits queued requests (between steps, as capacity allows), then
// advances every running sequence by one step: a chunk of its prompt (prefill is chunked
// so a long prompt does not stall the others) or one generated token, the tokens of all
// decoding sequences going through the model as one batch (Model::forward_batch). Requests talk to it
// through a Job: a queue of events (text pieces, finish reasons) and a cancel flag.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "model/model.hpp"
#include "runtime/prefix_cache.hpp"
#include "runtime/sampling.hpp"
#include "serve/api.hpp"

namespace braid {
class Tokenizer;
}

namespace braid::serve {

// How long the scheduler stays idle before handing freed memory back to the system.
constexpr int kIdleReleaseMs = 10000;

struct EngineOptions {
  int max_sequences = 16;       // sequences decoding at once (a request with n choices uses n)
  int max_queue = 64;           // requests waiting for capacity; beyond it, 429
  int64_t prefill_chunk = 256;  // prompt tokens fed per step
  // Prefix cache: bytes of snapshots kept (0: off) and, besides prompt ends, branch points
  // and ends of generations, a snapshot every this many prompt tokens (a multiple of the
  // prefill chunk; 0: none).
  size_t cache_bytes = 0;
  int64_t cache_every = 1024;
  // The cache's disk tier (snapshots kept across restarts): directory ("" off), byte
  // budget, and where damaged or unwritable files are reported.
  DiskTier disk;
};

// What to generate: each prompt n times; choice prompt * n + j samples with seed + that index.
struct JobSpec {
  std::vector<std::vector<int32_t>> prompts;
  int n = 1;
  int64_t max_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_ids;
  int logprobs = -1;
};

struct Event {
  int choice = 0;
  std::string text;
  std::vector<int32_t> ids;
  std::optional<TokenLogprob> logprob;
  std::string finish_reason;  // set on the choice's last event
  std::string error;          // set when the job failed; no further events follow
};

class Job {
 public:
  // Waits for the next event until `deadline`; false when none came in time.
  bool next(Event& e, std::chrono::steady_clock::time_point deadline);
  // Stops generating for this job (client gone or timed out); safe from any thread.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }

 private:
  friend class Engine;
  void push(Event e);
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::atomic<bool> cancelled_{false};
  int64_t prompt_tokens_ = 0;
  bool counted_cancel_ = false;  // scheduler thread only
};

struct EngineStats {
  int64_t requests = 0, rejected = 0, cancelled = 0, prompt_tokens = 0, generated_tokens = 0;
  int64_t queue_depth = 0, active_sequences = 0, state_bytes = 0;
  PrefixCacheStats cache;
};

class Engine {
 public:
  Engine(std::shared_ptr<const Model> model, const Tokenizer* tok, EngineOptions opt);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job. Throws ApiError 429 when the queue is full, 503 while draining, 400 when
  // the job needs more sequences than ever run at once.
  std::shared_ptr<Job> submit(JobSpec spec);
  // Refuses new jobs, finishes the queued and running ones, then stops the scheduler.
  void drain();
  EngineStats stats() const;
  const Model& model() const { return *model_; }

 private:
  struct Seq;
  struct Pending {
    std::shared_ptr<Job> job;
    JobSpec spec;
  };
  void loop();
  void admit(Pending& p);
  void step(Seq& s);
  void emit_token(Seq& s, int32_t id);
  void remember(Seq& s, const std::vector<int32_t>& tokens, int64_t n);
  void feed_decoding();

  std::shared_ptr<const Model> model_;
  const Tokenizer* tok_;
  EngineOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  std::vector<std::unique_ptr<Seq>> active_;  // scheduler thread only
  bool accepting_ = true, stop_ = false;
  std::atomic<int64_t> requests_{0}, rejected_{0}, cancelled_{0}, prompt_tokens_{0}, generated_{0};
  std::atomic<int64_t> active_count_{0}, state_bytes_{0};
  std::unique_ptr<PrefixCache> cache_;  // scheduler thread only
  Workspace batch_ws_;                  // scratch of the batched decoding forward
  std::vector<float> batch_logits_;
  PrefixCacheStats cache_stats_;  // a copy under mu_, for stats()
  std::condition_variable idle_cv_;
  std::thread thread_;
};

}  // namespace braid::serve
