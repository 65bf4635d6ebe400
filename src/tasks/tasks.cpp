#include "tasks/tasks.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
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

// Passkey: reserved tokens 0 (query marker), 1 (key marker), 2..11 (digits 0-9); the filler
// is the fixed cycle 12, 13, ..., 12 + min(16, V - 12) - 1, like a repeated sentence.
TaskExample passkey(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len, V = s.vocab, n = s.items;
  constexpr int64_t kDigit0 = 2, kFiller0 = 12;
  check(V > kFiller0, "passkey: the vocabulary needs more than ", kFiller0,
        " tokens (markers, digits, filler), got ", V);
  check(n >= 1 && 2 * n + 2 <= L, "passkey: a key of ", n, " digits needs a sequence of at least ", 2 * n + 2,
        " tokens, got ", L);
  const int64_t cycle = std::min<int64_t>(16, V - kFiller0);
  const int64_t filler = L - n;               // filler and needle, before the query marker and n - 1 digits
  const int64_t at = below(rng, filler - n);  // where the needle [key marker, digits] starts
  std::vector<int32_t> key(static_cast<size_t>(n));
  for (int32_t& d : key) d = int32_t(kDigit0 + below(rng, 10));
  TaskExample ex;
  ex.input.resize(size_t(L));
  ex.target.assign(size_t(L), -1);
  for (int64_t i = 0, f = 0; i < filler; ++i)
    ex.input[size_t(i)] =
        i >= at && i <= at + n ? (i == at ? 1 : key[size_t(i - at - 1)]) : int32_t(kFiller0 + (f++ % cycle));
  ex.input[size_t(filler)] = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (k + 1 < n) ex.input[size_t(filler + 1 + k)] = key[size_t(k)];
    ex.target[size_t(filler + k)] = key[size_t(k)];
  }
  return ex;
}

// ListOps tokens: digits 0-9 are 0..9; 10..13 open [MIN, [MAX, [MED, [SM; 14 closes; 15 asks
// for the value; 16 pads on the left.
constexpr int32_t kListClose = 14, kListQuery = 15, kListPad = 16;

// Appends one subtree of at most `budget` tokens at `depth` (the root is 1) and returns its
// value. Leaves with probability 0.75 below the root, as LRA's generator does.
int32_t listops_tree(Rng& rng, int64_t depth, int64_t budget, std::vector<int32_t>& out) {
  constexpr int64_t kMaxDepth = 10, kMaxArgs = 10;
  if (depth > 1 && (depth >= kMaxDepth || budget < 4 || rng.uniform() < 0.75)) {
    out.push_back(int32_t(below(rng, 10)));
    return out.back();
  }
  const int32_t op = int32_t(below(rng, 4));
  const int64_t args = 2 + below(rng, std::min<int64_t>(kMaxArgs, budget - 2) - 1);
  out.push_back(10 + op);
  int64_t left = budget - 2;  // after the opener and the closer
  std::vector<int32_t> v;
  for (int64_t a = 0; a < args; ++a) {
    const size_t before = out.size();
    v.push_back(listops_tree(rng, depth + 1, left - (args - 1 - a), out));
    left -= int64_t(out.size() - before);
  }
  out.push_back(kListClose);
  std::sort(v.begin(), v.end());
  switch (op) {
    case 0:
      return v.front();
    case 1:
      return v.back();
    case 2: {  // the median, truncated toward zero when it is the mean of two values
      const size_t m = v.size() / 2;
      return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
    }
    default:
      return int32_t(std::accumulate(v.begin(), v.end(), 0) % 10);
  }
}

TaskExample listops(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len;
  check(s.vocab > kListPad, "listops: the vocabulary needs at least ", kListPad + 1, " tokens, got ",
        s.vocab);
  check(L >= 6, "listops: the sequence needs at least 6 tokens, got ", L);
  // Trees are drawn until one fills at least half of the sequence (LRA keeps long ones too).
  std::vector<int32_t> tree;
  int32_t value = 0;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    tree.clear();
    value = listops_tree(rng, 1, L - 1, tree);
    if (2 * int64_t(tree.size()) >= L - 1) break;
  }
  TaskExample ex;
  ex.input.assign(size_t(L) - tree.size() - 1, kListPad);
  ex.input.insert(ex.input.end(), tree.begin(), tree.end());
  ex.input.push_back(kListQuery);
  ex.target.assign(size_t(L), -1);
  ex.target.back() = value;
  return ex;
}

TaskExample linear_regression(const TaskSpec& s, Rng& rng) {
  const int64_t L = s.seq_len, d = s.dim;
  check(d >= 1, "linear_regression: the dimension must be positive, got ", d);
  const int64_t k = s.active_dim == 0 ? d : s.active_dim;
  check(k >= 1 && k <= d, "linear_regression: the active dimensions must be in [1, ", d, "], got ",
        s.active_dim);
  check(L >= 2 && L % 2 == 0,
        "linear_regression: the sequence holds an x row and a y row per point, so its length ",
        "must be even and at least 2, got ", L);
  TaskExample ex;
  ex.x_dim = d + 1, ex.y_dim = 1;
  ex.x.assign(size_t(L * (d + 1)), 0.0f);
  ex.y.assign(size_t(L), std::numeric_limits<float>::quiet_NaN());
  std::vector<double> w(static_cast<size_t>(d));
  for (double& v : w) v = rng.normal();
  for (int64_t i = 0; i < L / 2; ++i) {
    float* xr = &ex.x[size_t(2 * i * (d + 1))];
    double y = 0;
    for (int64_t c = 0; c < k; ++c) {
      xr[c] = float(rng.normal());
      y += w[size_t(c)] * double(xr[c]);
    }
    xr[2 * (d + 1) - 1] = float(y);  // the last value of the next row
    ex.y[size_t(2 * i)] = float(y);
  }
  return ex;
}

// Solves A z = b in place for a symmetric positive definite A [n, n] (Cholesky, double); a
// pivot that rounding made non-positive is lifted to a tiny multiple of the diagonal.
void spd_solve(std::vector<double>& A, std::vector<double>& b, int64_t n) {
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, A[size_t(i * n + i)]);
  for (int64_t j = 0; j < n; ++j) {
    double p = A[size_t(j * n + j)];
    for (int64_t k = 0; k < j; ++k) p -= A[size_t(j * n + k)] * A[size_t(j * n + k)];
    p = std::sqrt(std::max(p, 1e-14 * scale + 1e-300));
    A[size_t(j * n + j)] = p;
    for (int64_t i = j + 1; i < n; ++i) {
      double v = A[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k) v -= A[size_t(i * n + k)] * A[size_t(j * n + k)];
      A[size_t(i * n + j)] = v / p;
    }
  }
  for (int64_t i = 0; i < n; ++i) {  // L z = b
    for (int64_t k = 0; k < i; ++k) b[size_t(i)] -= A[size_t(i * n + k)] * b[size_t(k)];
    b[size_t(i)] /= A[size_t(i * n + i)];
  }
  for (int64_t i = n - 1; i >= 0; --i) {  // L^T z = b
    for (int64_t k = i + 1; k < n; ++k) b[size_t(i)] -= A[size_t(k * n + i)] * b[size_t(k)];
    b[size_t(i)] /= A[size_t(i * n + i)];
  }
}

}  // namespace

int64_t TaskExample::answers() const {
  if (real()) return std::count_if(y.begin(), y.end(), [](float v) { return !std::isnan(v); });
  return std::count_if(target.begin(), target.end(), [](int32_t t) { return t >= 0; });
}

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"mqar",    "selective_copy", "induction",
                                                 "passkey", "listops",        "linear_regression"};
  return names;
}

bool is_real_task(const std::string& name) { return name == "linear_regression"; }

void check_task_fits(const TaskSpec& spec, const ModelSpec& m) {
  if (is_real_task(spec.name)) {
    check(m.input_dim == spec.dim + 1 && m.vocab_size == 1, spec.name, " in dimension ", spec.dim,
          " needs a model with input_dim ", spec.dim + 1, " and output_dim 1, got ",
          m.input_dim > 0
              ? "input_dim " + std::to_string(m.input_dim) + " and output_dim " + std::to_string(m.vocab_size)
              : std::string("a token model"));
    return;
  }
  check(m.input_dim == 0, spec.name, ": a task of tokens needs a token model, got one with input_dim ",
        m.input_dim);
  check(spec.vocab <= m.vocab_size, spec.name, ": the task's vocabulary (", spec.vocab,
        ") is larger than the model's (", m.vocab_size, ")");
}

double least_squares_predict(const float* X, const float* y, int64_t k, int64_t d, const float* x) {
  if (k == 0) return 0.0;
  // Minimum-norm solution: w = X^T (X X^T)^-1 y when k < d, else (X^T X)^-1 X^T y.
  const bool wide = k < d;
  const int64_t n = wide ? k : d;
  std::vector<double> A(size_t(n * n), 0.0), b(size_t(n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double v = 0;
      if (wide)
        for (int64_t c = 0; c < d; ++c) v += double(X[i * d + c]) * double(X[j * d + c]);
      else
        for (int64_t r = 0; r < k; ++r) v += double(X[r * d + i]) * double(X[r * d + j]);
      A[size_t(i * n + j)] = A[size_t(j * n + i)] = v;
    }
  if (wide) {
    for (int64_t i = 0; i < k; ++i) b[size_t(i)] = y[i];
    spd_solve(A, b, n);  // b = (X X^T)^-1 y; prediction x . X^T b
    double p = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t c = 0; c < d; ++c) p += double(x[c]) * double(X[i * d + c]) * b[size_t(i)];
    return p;
  }
  for (int64_t c = 0; c < d; ++c)
    for (int64_t r = 0; r < k; ++r) b[size_t(c)] += double(X[r * d + c]) * double(y[r]);
  spd_solve(A, b, n);  // b = w
  double p = 0;
  for (int64_t c = 0; c < d; ++c) p += double(x[c]) * b[size_t(c)];
  return p;
}

TaskExample make_task_example(const TaskSpec& s, Rng& rng) {
  check(s.vocab > 0 && s.seq_len > 0, s.name, ": vocabulary and sequence length must be positive");
  if (s.name == "mqar") return mqar(s, rng);
  if (s.name == "selective_copy") return selective_copy(s, rng);
  if (s.name == "induction") return induction(s, rng);
  if (s.name == "passkey") return passkey(s, rng);
  if (s.name == "listops") return listops(s, rng);
  if (s.name == "linear_regression") return linear_regression(s, rng);
  std::string known;
  for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown task '", s.name, "' (known: ", known, ")");
}

TaskScore evaluate_task(const Model& model, const TaskSpec& spec, int64_t n, uint64_t seed, int64_t loops) {
  check(!is_real_task(spec.name), spec.name, " is scored by its error, not by accuracy");
  check_task_fits(spec, model.spec());
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

RegressionScore evaluate_regression(const Model& model, const TaskSpec& spec, int64_t n, uint64_t seed,
                                    int64_t loops) {
  check(is_real_task(spec.name), spec.name, " is scored by accuracy, not by a regression error");
  check_task_fits(spec, model.spec());
  check(n >= 1, spec.name, ": the number of examples must be positive, got ", n);
  const int64_t d = spec.dim, P = spec.seq_len / 2;
  RegressionScore score;
  score.error.assign(size_t(P), 0.0), score.least_squares.assign(size_t(P), 0.0);
  Rng rng(seed);
  Workspace ws;
  std::vector<float> out, X(static_cast<size_t>(P * d)), Y(static_cast<size_t>(P));
  for (int64_t e = 0; e < n; ++e) {
    const TaskExample ex = make_task_example(spec, rng);
    const int64_t T = ex.length();
    out.resize(size_t(T));
    auto states = model.make_states(loops);
    model.forward_vectors(ex.x.data(), T, states, ws, LogitsMode::All, out.data());
    for (int64_t i = 0; i < P; ++i) {
      const float* xi = &ex.x[size_t(2 * i * ex.x_dim)];
      const double y = ex.y[size_t(2 * i)];
      const double m = double(out[size_t(2 * i)]) - y;
      const double ls = least_squares_predict(X.data(), Y.data(), i, d, xi) - y;
      score.error[size_t(i)] += m * m / double(d);
      score.least_squares[size_t(i)] += ls * ls / double(d);
      std::copy_n(xi, d, &X[size_t(i * d)]);
      Y[size_t(i)] = float(y);
    }
    ++score.examples;
  }
  for (size_t i = 0; i < size_t(P); ++i) score.error[i] /= double(n), score.least_squares[i] /= double(n);
  return score;
}

}  // namespace braid
