#include "tasks/tasks.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "runtime/sampling.hpp"
#include "runtime/session.hpp"

namespace braid {

namespace {

int64_t below(Rng& rng, int64_t n) { return int64_t(rng.next() % uint64_t(n)); }

// k distinct values of [lo, hi), in draw order (partial Fisher-Yates).
std::vector<int32_t> distinct(Rng& rng, int64_t lo, int64_t hi, int64_t k) {
  std::vector<int32_t> pool(static_cast<size_t>(hi - lo));
  std::iota(pool.begin(), pool.end(), int32_t(lo));
  for (int64_t i = 0; i < k; ++i) std::swap(pool[size_t(i)], pool[size_t(i + below(rng, hi - lo - i))]);
  pool.resize(size_t(k));
  return pool;
}

// k distinct indices of [0, w.size()) drawn one after another with probability proportional
// to w among those not yet drawn.
std::vector<int64_t> weighted_distinct(Rng& rng, std::vector<double> w, int64_t k) {
  std::vector<int64_t> out;
  for (int64_t n = 0; n < k; ++n) {
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    double u = rng.uniform() * total;
    size_t i = 0;
    while (i + 1 < w.size() && (w[i] == 0.0 || u >= w[i])) u -= w[i++];
    while (w[i] == 0.0) --i;  // rounding at the end of the range
    out.push_back(int64_t(i));
    w[i] = 0.0;
  }
  return out;
}

TaskExample mqar(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len, V = s.vocab, D = s.items;
  check(L % 2 == 0, "mqar: the sequence length must be even, got ", L);
  check(V > L, "mqar: the vocabulary (", V, ") must be larger than the sequence length (", L, ")");
  check(D >= 1 && 4 * D <= L, "mqar: ", D, " key-value pairs need a sequence of at least ", 4 * D,
        " tokens, got ", L);
  check(s.power_a > 0, "mqar: power_a must be positive, got ", s.power_a);
  const std::vector<int32_t> keys = distinct(rng, 1, V / 2, D), values = distinct(rng, V / 2, V, D);
  const int64_t context = 2 * D, space = (L - context) / 2;
  std::vector<double> p(static_cast<size_t>(space));
  for (int64_t i = 0; i < space; ++i) p[size_t(i)] = s.power_a * std::pow(double(i + 1), s.power_a - 1.0);
  const std::vector<int64_t> gaps = weighted_distinct(rng, p, D);
  TaskExample ex;
  ex.input.assign(size_t(L), 0);
  ex.target.assign(size_t(L), -1);
  for (int64_t k = 0; k < D; ++k) {
    ex.input[size_t(2 * k)] = keys[size_t(k)];
    ex.input[size_t(2 * k + 1)] = values[size_t(k)];
    const int64_t q = context + 2 * gaps[size_t(k)];
    ex.input[size_t(q)] = keys[size_t(k)];
    ex.target[size_t(q)] = values[size_t(k)];
  }
  if (s.random_non_queries)
    for (int32_t& t : ex.input)
      if (t == 0) t = int32_t(below(rng, V));
  return ex;
}

TaskExample selective_copy(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len, V = s.vocab, n = s.items;
  check(V >= 3, "selective_copy: the vocabulary needs at least 3 tokens (blank, marker, data), got ", V);
  check(n >= 1 && 2 * n <= L, "selective_copy: copying ", n, " tokens needs a sequence of at least ", 2 * n,
        " tokens, got ", L);
  const int64_t context = L - n;
  std::vector<int32_t> where = distinct(rng, 0, context, n);
  std::sort(where.begin(), where.end());
  TaskExample ex;
  ex.input.assign(size_t(L), 0);
  ex.target.assign(size_t(L), -1);
  for (int64_t k = 0; k < n; ++k) {
    const int32_t tok = int32_t(2 + below(rng, V - 2));
    ex.input[size_t(where[size_t(k)])] = tok;
    ex.input[size_t(context + k)] = 1;
    ex.target[size_t(context + k)] = tok;
  }
  return ex;
}

TaskExample induction(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len, V = s.vocab;
  check(V >= 3, "induction: the vocabulary needs at least 3 tokens, got ", V);
  check(L >= 4, "induction: the sequence needs at least 4 tokens, got ", L);
  TaskExample ex;
  ex.input.resize(size_t(L));
  for (int32_t& t : ex.input) t = int32_t(1 + below(rng, V - 1));
  const int64_t at = below(rng, L - 2);  // the trigger, followed by its answer, before the end
  ex.input[size_t(at)] = 0;
  ex.input[size_t(L - 1)] = 0;
  ex.target.assign(size_t(L), -1);
  ex.target[size_t(L - 1)] = ex.input[size_t(at + 1)];
  return ex;
}

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"mqar", "selective_copy", "induction"};
  return names;
}

TaskExample make_task_example(const TaskSpec& s, Rng& rng) {
  check(s.vocab > 0 && s.seq_len > 0, s.name, ": vocabulary and sequence length must be positive");
  if (s.name == "mqar") return mqar(s, rng);
  if (s.name == "selective_copy") return selective_copy(s, rng);
  if (s.name == "induction") return induction(s, rng);
  std::string known;
  for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown task '", s.name, "' (known: ", known, ")");
}

TaskScore evaluate_task(const Model& model, const TaskSpec& spec, int64_t n, uint64_t seed, int64_t loops) {
  check(spec.vocab <= model.spec().vocab_size, spec.name, ": the task's vocabulary (", spec.vocab,
        ") is larger than the model's (", model.spec().vocab_size, ")");
  check(n >= 1, spec.name, ": the number of examples must be positive, got ", n);
  // A non-owning handle: the session lives only inside this call.
  std::shared_ptr<const Model> m(&model, [](const Model*) {});
  Session session(m, loops);
  Rng rng(seed);
  TaskScore score;
  const int64_t V = model.spec().vocab_size;
  for (int64_t e = 0; e < n; ++e) {
    const TaskExample ex = make_task_example(spec, rng);
    session.reset();
    const std::vector<float> logits = session.feed_all(ex.input.data(), int64_t(ex.input.size()));
    for (size_t t = 0; t < ex.target.size(); ++t) {
      if (ex.target[t] < 0) continue;
      ++score.answers;
      score.correct += argmax(logits.data() + int64_t(t) * V, V) == ex.target[t];
    }
    ++score.examples;
  }
  return score;
}

}  // namespace braid
