// Finite-difference gradient checks: a scalar loss sum(r * f(inputs, weights)) computed
// in double from f32 forward passes, differentiated by central differences on sampled
// entries of every buffer, against the analytic gradient from a backward pass.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "mixers/mixer.hpp"

// Gradient buffers for a test's own weight vectors, found by address like a model's.
struct TestGrads : braid::GradSink {
  std::map<const float*, std::vector<float>> g;
  float* add(const std::vector<float>& w) {
    auto& v = g[w.data()];
    v.assign(w.size(), 0.0f);
    return v.data();
  }
  float* of(const float* w) override {
    if (!w) return nullptr;
    auto it = g.find(w);
    EXPECT_NE(it, g.end()) << "backward asked for the gradient of an unregistered weight";
    return it == g.end() ? nullptr : it->second.data();
  }
  const std::vector<float>& at(const std::vector<float>& w) { return g.at(w.data()); }
};

struct GradBuffer {
  std::string name;
  std::vector<float>* data;
  const std::vector<float>* grad;  // analytic dL/d(data)
};

// sum_i r[i] * y[i] in double.
inline double weighted_sum(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * r[i];
  return s;
}

// For `samples` random entries of each buffer: a five-point finite difference of loss()
// with step eps (relative to the entry's size, at least eps) against the analytic
// gradient. The tolerance is 1e-3 of the buffer's largest analytic entry (a 1% error in
// a large entry fails) plus abs_tol.
inline void expect_grads_match(const std::function<double()>& loss, const std::vector<GradBuffer>& bufs,
                               int samples = 16, double eps = 1e-2, double abs_tol = 1e-6,
                               uint64_t seed = 7) {
  braid::Rng rng(seed);
  for (const GradBuffer& b : bufs) {
    std::vector<float>& x = *b.data;
    ASSERT_EQ(x.size(), b.grad->size()) << b.name;
    double scale = 0;
    for (float v : *b.grad) scale = std::max(scale, std::abs(double(v)));
    const int n = std::min<int>(samples, int(x.size()));
    for (int s = 0; s < n; ++s) {
      const size_t i = n == int(x.size()) ? size_t(s) : size_t(rng.next() % x.size());
      const float x0 = x[i];
      const float h = float(eps * std::max(1.0, std::abs(double(x0))));
      auto at = [&](float v) {
        x[i] = v;
        return loss();
      };
      // Five-point stencil: truncation error O(h^4), so h can be large enough that the
      // f32 forward's rounding stays far below the tolerance.
      const double d1 = at(x0 + h) - at(x0 - h), d2 = at(x0 + 2 * h) - at(x0 - 2 * h);
      x[i] = x0;
      const double fd = (8 * d1 - d2) / (12 * double(h));
      const double an = (*b.grad)[i];
      EXPECT_NEAR(an, fd, 1e-3 * scale + abs_tol) << b.name << "[" << i << "]";
    }
  }
}
