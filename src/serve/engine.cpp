#include "serve/engine.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/sysinfo.hpp"
#include "runtime/session.hpp"
#include "runtime/text_stream.hpp"
#include "tokenizer/tokenizer.hpp"

namespace braid::serve {

bool Job::next(Event& e, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return !events_.empty(); })) return false;
  e = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Job::push(Event e) {
  {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

// One choice of one job: its own state, sampler and text.
struct Engine::Seq {
  Seq(std::shared_ptr<const Model> model, const Tokenizer* tok, std::shared_ptr<Job> j, const JobSpec& spec,
      int prompt_index_, int choice_)
      : job(std::move(j)),
        prompt(&spec.prompts[size_t(prompt_index_)]),
        prompt_index(prompt_index_),
        choice(choice_),
        leader(choice_ % spec.n == 0),
        max_tokens(spec.max_tokens),
        stop_ids(spec.stop_ids),
        logprobs(spec.logprobs),
        session(std::move(model)),
        sampler([&] {
          SamplingParams p = spec.sampling;
          p.seed += uint64_t(choice_);
          return p;
        }()),
        text(tok, spec.stop) {}
  std::shared_ptr<Job> job;
  const std::vector<int32_t>* prompt;  // in the job's spec, kept alive by `owner`
  int prompt_index, choice;
  bool leader;      // prefills the prompt; the prompt's other choices start from its state
  int64_t fed = 0;  // prompt tokens fed
  bool prefilled = false;
  bool feed_next = false;  // `next` was sampled and waits for the batched forward
  int32_t next = 0;
  bool save_prompt_end = false;  // snapshot the prompt's end state once the first token is sent
  int64_t branch = 0;            // where the prompt leaves the cached prefixes (a snapshot goes there)
  int64_t max_tokens;
  std::vector<int32_t> stop_ids;
  int logprobs;
  Session session;
  Sampler sampler;
  TextStream text;
  int64_t generated = 0;
  bool finished = false;
  std::shared_ptr<const JobSpec> owner;
};

Engine::Engine(std::shared_ptr<const Model> model, const Tokenizer* tok, EngineOptions opt)
    : model_(std::move(model)), tok_(tok), opt_(opt) {
  check(opt_.max_sequences >= 1, "max sequences must be >= 1, found ", opt_.max_sequences);
  check(opt_.max_queue >= 0, "max queue must be >= 0, found ", opt_.max_queue);
  check(opt_.prefill_chunk >= 1, "prefill chunk must be >= 1, found ", opt_.prefill_chunk);
  check(opt_.cache_every >= 0, "cache interval must be >= 0, found ", opt_.cache_every);
  // Periodic snapshots fall on chunk ends.
  opt_.cache_every = (opt_.cache_every + opt_.prefill_chunk - 1) / opt_.prefill_chunk * opt_.prefill_chunk;
  if (opt_.cache_bytes > 0 || (!opt_.disk.dir.empty() && opt_.disk.max_bytes > 0))
    cache_ = std::make_unique<PrefixCache>(*model_, opt_.cache_bytes, opt_.disk);
  if (cache_) cache_stats_ = cache_->stats();  // what a restart found on disk
  // OpenMP's thread count is per thread: the scheduler runs the model with the creator's.
  const int threads = num_threads();
  thread_ = std::thread([this, threads] {
    set_num_threads(threads);
    loop();
  });
}

Engine::~Engine() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<Job> Engine::submit(JobSpec spec) {
  const int64_t V = model_->spec().vocab_size;
  for (size_t p = 0; p < spec.prompts.size(); ++p)
    for (int32_t id : spec.prompts[p])
      if (id >= V)
        throw ApiError(400,
                       "prompt: token id " + std::to_string(id) + " is outside the vocabulary (size " +
                           std::to_string(V) + ")",
                       "prompt");
  const int64_t seqs = int64_t(spec.prompts.size()) * spec.n;
  if (seqs > opt_.max_sequences)
    throw ApiError(400,
                   "the request needs " + std::to_string(seqs) +
                       " sequences (prompts x n); this server runs at most " +
                       std::to_string(opt_.max_sequences) + " at once",
                   "n");
  auto job = std::make_shared<Job>();
  for (const auto& p : spec.prompts) job->prompt_tokens_ += int64_t(p.size());
  {
    std::lock_guard lock(mu_);
    if (!accepting_) throw ApiError(503, "the server is shutting down");
    // A job waits in the queue only when it cannot start at once.
    int64_t committed = active_count_ + seqs;
    for (const auto& p : pending_) committed += int64_t(p.spec.prompts.size()) * p.spec.n;
    if (committed > opt_.max_sequences && int64_t(pending_.size()) >= opt_.max_queue) {
      ++rejected_;
      throw ApiError(429, "the server is at capacity (" + std::to_string(pending_.size()) +
                              " requests queued); retry later");
    }
    pending_.push_back({job, std::move(spec)});
    ++requests_;
  }
  cv_.notify_all();
  return job;
}

void Engine::drain() {
  std::unique_lock lock(mu_);
  accepting_ = false;
  idle_cv_.wait(lock, [&] { return pending_.empty() && active_count_ == 0; });
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.requests = requests_;
  s.rejected = rejected_;
  s.cancelled = cancelled_;
  s.prompt_tokens = prompt_tokens_;
  s.generated_tokens = generated_;
  s.active_sequences = active_count_;
  s.state_bytes = state_bytes_;
  std::lock_guard lock(mu_);
  s.queue_depth = int64_t(pending_.size());
  s.cache = cache_stats_;
  return s;
}

void Engine::admit(Pending& p) {
  auto spec = std::make_shared<const JobSpec>(std::move(p.spec));
  for (int pi = 0; pi < int(spec->prompts.size()); ++pi)
    for (int j = 0; j < spec->n; ++j) {
      auto s = std::make_unique<Seq>(model_, tok_, p.job, *spec, pi, pi * spec->n + j);
      s->owner = spec;
      if (cache_ && s->leader) {
        // Start from the deepest cached prefix of the prompt.
        const std::vector<int32_t>& prompt = *s->prompt;
        const PrefixCache::Hit hit = cache_->lookup(prompt.data(), int64_t(prompt.size()));
        if (hit.length > 0) {
          // Room for the rest of the prompt and the tokens to come.
          s->session.restore(*hit.snapshot, int64_t(prompt.size()) - hit.length + s->max_tokens);
          s->fed = hit.length;
        }
        s->branch = cache_->shared_length(prompt.data(), int64_t(prompt.size()));
      }
      active_.push_back(std::move(s));
    }
}

// Saves the sequence's state as that of tokens[0, n) (when the cache is on and lacks it).
void Engine::remember(Seq& s, const std::vector<int32_t>& tokens, int64_t n) {
  if (!cache_ || cache_->contains(tokens.data(), n)) return;
  cache_->insert(tokens.data(), n, s.session.snapshot());
}

void Engine::emit_token(Seq& s, int32_t id) {
  Event e;
  e.choice = s.choice;
  e.ids = {id};
  if (s.logprobs >= 0) {
    // Log-probabilities of the model's distribution (before temperature and top-p).
    const std::vector<float>& l = s.session.last_logits();
    const float m = *std::max_element(l.begin(), l.end());
    double sum = 0;
    for (float x : l) sum += std::exp(double(x - m));
    const double lse = double(m) + std::log(sum);
    auto name = [&](int32_t t) { return tok_ ? tok_->decode({t}) : std::to_string(t); };
    TokenLogprob lp{name(id), float(double(l[size_t(id)]) - lse), {}};
    std::vector<int32_t> idx(l.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t k = std::min(size_t(s.logprobs), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return l[size_t(a)] != l[size_t(b)] ? l[size_t(a)] > l[size_t(b)] : a < b;
    });
    for (size_t i = 0; i < k; ++i) lp.top.emplace_back(name(idx[i]), float(double(l[size_t(idx[i])]) - lse));
    e.logprob = std::move(lp);
  }
  e.text = s.text.push(id);
  ++s.generated;
  ++generated_;
  const bool eos = std::find(s.stop_ids.begin(), s.stop_ids.end(), id) != s.stop_ids.end();
  if (eos || s.text.stopped() || s.generated >= s.max_tokens) {
    e.text += s.text.finish();
    e.finish_reason = (eos || s.text.stopped()) ? "stop" : "length";
    s.finished = true;
  }
  s.job->push(std::move(e));
  // The state after the prompt and all but the last generated token (which was never fed):
  // where a follow-up turn that repeats this exchange resumes.
  if (s.finished && cache_ && s.leader && s.generated >= 2) {
    std::vector<int32_t> seen = *s.prompt;
    seen.insert(seen.end(), s.text.ids().begin(), s.text.ids().end() - 1);
    remember(s, seen, int64_t(seen.size()));
  }
}

void Engine::step(Seq& s) {
  if (!s.prefilled) {
    if (!s.leader) return;  // waits for the leader's state
    const int64_t T = int64_t(s.prompt->size());
    // Chunks end at multiples of the chunk size whatever the starting point, so a prompt
    // resumed from a cached prefix is cut as it would be from the start; a branch point
    // ends a chunk early so that its state can be saved.
    int64_t end = std::min(T, (s.fed / opt_.prefill_chunk + 1) * opt_.prefill_chunk);
    if (s.branch > s.fed && s.branch < end) end = s.branch;
    if (end > s.fed) {
      s.session.feed(s.prompt->data() + s.fed, end - s.fed);
      prompt_tokens_ += end - s.fed;
      s.fed = end;
      if (end == T)
        s.save_prompt_end = true;  // after the first token is out: it is not on the way to it
      else if (end == s.branch || (opt_.cache_every > 0 && end % opt_.cache_every == 0))
        remember(s, *s.prompt, end);
    }
    if (s.fed < T) return;
    s.prefilled = true;
    // The prompt's other choices start from this state instead of prefilling it again.
    const Session::Snapshot snap = s.session.snapshot();
    for (auto& o : active_)
      if (o->job == s.job && o->prompt_index == s.prompt_index && !o->leader) {
        o->session.restore(snap, o->max_tokens);
        o->fed = T;
        o->prefilled = true;
      }
  }
  if (s.max_tokens == 0) {  // nothing to generate
    if (s.save_prompt_end) remember(s, *s.prompt, int64_t(s.prompt->size()));
    Event e;
    e.choice = s.choice;
    e.finish_reason = "length";
    s.finished = true;
    s.job->push(std::move(e));
    return;
  }
  const int32_t id = s.sampler.sample(s.session.last_logits().data(), model_->spec().vocab_size);
  emit_token(s, id);
  if (s.save_prompt_end) {  // the session still holds the prompt's end state
    s.save_prompt_end = false;
    remember(s, *s.prompt, int64_t(s.prompt->size()));
  }
  if (!s.finished) {
    s.next = id;  // fed with the other decoding sequences' tokens, as one batch
    s.feed_next = true;
  }
}

// One batched forward for every sequence that has a token to feed.
void Engine::feed_decoding() {
  std::vector<Session*> sessions;
  std::vector<int32_t> tokens;
  std::vector<Seq*> seqs;
  for (auto& s : active_)
    if (s->feed_next) {
      s->feed_next = false;
      if (s->job->cancelled()) continue;
      sessions.push_back(&s->session);
      tokens.push_back(s->next);
      seqs.push_back(s.get());
    }
  try {
    Session::feed_batch(sessions, tokens.data(), batch_ws_, batch_logits_);
  } catch (const std::exception& ex) {
    for (Seq* s : seqs) {
      Event e;
      e.choice = s->choice;
      e.error = ex.what();
      s->job->push(std::move(e));
      s->job->cancel();
    }
  }
}

void Engine::loop() {
  bool worked = false;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      const auto has_work = [&] { return stop_ || !pending_.empty() || !active_.empty(); };
      // Sessions and snapshots come and go in many sizes. Freed memory is kept for reuse while
      // work goes on, and handed back after a quiet spell, so resident memory follows what is
      // held instead of the allocator's high-water mark.
      if (worked && !cv_.wait_for(lock, std::chrono::milliseconds(kIdleReleaseMs), has_work)) {
        lock.unlock();
        release_free_memory();
        worked = false;
        continue;
      }
      cv_.wait(lock, has_work);
      worked = true;
      if (stop_) break;
      // Admit queued jobs in order while their sequences fit.
      while (!pending_.empty()) {
        Pending& p = pending_.front();
        if (p.job->cancelled()) {
          ++cancelled_;
          pending_.pop_front();
          continue;
        }
        const size_t need = p.spec.prompts.size() * size_t(p.spec.n);
        if (active_.size() + need > size_t(opt_.max_sequences)) break;
        Pending taken = std::move(p);
        pending_.pop_front();
        admit(taken);
      }
      active_count_ = int64_t(active_.size());
    }
    for (auto& s : active_) {
      if (s->finished || s->job->cancelled()) continue;
      try {
        step(*s);
      } catch (const std::exception& ex) {
        Event e;
        e.choice = s->choice;
        e.error = ex.what();
        s->job->push(std::move(e));
        s->job->cancel();
      }
    }
    feed_decoding();
    for (auto& s : active_)
      if (s->job->cancelled() && !s->finished && !s->job->counted_cancel_) {
        s->job->counted_cancel_ = true;
        ++cancelled_;
      }
    std::erase_if(active_, [](const auto& s) { return s->finished || s->job->cancelled(); });
    int64_t bytes = 0;
    for (auto& s : active_) bytes += int64_t(s->session.state_bytes());
    state_bytes_ = bytes;
    {
      std::lock_guard lock(mu_);
      active_count_ = int64_t(active_.size());
      if (cache_) cache_stats_ = cache_->stats();
      if (pending_.empty() && active_.empty()) idle_cv_.notify_all();
    }
  }
}

}  // namespace braid::serve
