#include "runtime/sampling.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid {

// The maximum (ops::max_value, vectorised), then the first index holding it: over a
// vocabulary's logits at every greedy step. A NaN never wins (it compares false), as in the
// one-pass loop, unless it is the first logit, which nothing then beats.
int32_t argmax(const float* x, int64_t n) {
  const float m = ops::max_value(x, n);
  if (!(m == m)) return 0;  // x[0] is NaN
  int64_t best = 0;
  while (!(x[best] == m)) ++best;
  return int32_t(best);
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  check(p.temperature >= 0 && std::isfinite(p.temperature), "temperature must be >= 0, found ",
        p.temperature);
  check(p.top_p > 0 && p.top_p <= 1, "top_p must be in (0, 1], found ", p.top_p);
  check(p.top_k >= 0, "top_k must be >= 0, found ", p.top_k);
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (p_.temperature == 0.0f) return argmax(logits, V);
  cand_.resize(size_t(V));
  for (int64_t i = 0; i < V; ++i) cand_[size_t(i)] = {logits[i] / p_.temperature, int32_t(i)};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax over the n survivors (sorted, so cand_[0] is the max).
  const float m = cand_[0].first;
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cand_[i].first = float(std::exp(double(cand_[i].first - m)));
    total += cand_[i].first;
  }
  if (p_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double cum = 0.0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += cand_[i].first / total;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
    total = 0.0;
    for (size_t i = 0; i < n; ++i) total += cand_[i].first;
  }
  double r = rng_.uniform() * total;
  for (size_t i = 0; i < n; ++i) {
    r -= cand_[i].first;
    if (r < 0) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace braid
