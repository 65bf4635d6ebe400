// Shared harness for the "three forms" tests: a mixer run over the same tokens as one
// call, one token per call, and calls of 1, 3, 7, 15, ... tokens must all match a
// naive reference computed by the test, and decoding on one thread must give exactly what
// it gives on the whole team.
#pragma once
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.hpp"
#include "mixers/mixer.hpp"

// n values ~ N(mean, s^2) from r.
inline std::vector<float> randn(size_t n, braid::Rng& r, double s, double mean = 0) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(mean + r.normal() * s);
  return v;
}

struct FormErrors {
  double full = 0, step = 0, pieces = 0, ref_scale = 0;
  double one_thread = 0;  // token by token on one thread against the same on the whole team
  int64_t position = 0;   // state position after the one-call run
  size_t state_bytes = 0;
};

inline FormErrors run_three_forms(const braid::Mixer& mix, const std::vector<float>& x, int64_t T, int64_t D,
                                  const std::vector<double>& ref) {
  braid::Workspace ws;
  std::vector<float> full(size_t(T * D)), step(size_t(T * D)), pieces(size_t(T * D));
  auto s1 = mix.make_state(), s2 = mix.make_state(), s3 = mix.make_state();
  mix.forward(x.data(), T, *s1, full.data(), ws);
  for (int64_t t = 0; t < T; ++t) mix.forward(x.data() + t * D, 1, *s2, step.data() + t * D, ws);
  std::vector<float> alone(size_t(T * D));
  {
    auto s4 = mix.make_state();
    const int team = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int64_t t = 0; t < T; ++t) mix.forward(x.data() + t * D, 1, *s4, alone.data() + t * D, ws);
    omp_set_num_threads(team);
  }
  for (int64_t at = 0, k = 1; at < T; k = k * 2 + 1) {
    const int64_t n = std::min(k, T - at);
    mix.forward(x.data() + at * D, n, *s3, pieces.data() + at * D, ws);
    at += n;
  }
  FormErrors e;
  e.position = s1->position();
  e.state_bytes = s1->bytes();
  for (size_t i = 0; i < ref.size(); ++i) {
    e.full = std::max(e.full, std::abs(full[i] - ref[i]));
    e.step = std::max(e.step, std::abs(step[i] - ref[i]));
    e.pieces = std::max(e.pieces, std::abs(pieces[i] - ref[i]));
    e.one_thread = std::max(e.one_thread, double(std::abs(alone[i] - step[i])));
    e.ref_scale = std::max(e.ref_scale, std::abs(ref[i]));
  }
  return e;
}

// Each form within 1e-5 of the naive reference, relative to the reference's scale (at
// least 1): the tolerance every mixer's forms test uses.
inline void expect_forms_match(const FormErrors& e) {
  const double tol = 1e-5 * std::max(1.0, e.ref_scale);
  EXPECT_LT(e.full, tol) << "one call, reference scale " << e.ref_scale;
  EXPECT_LT(e.step, tol) << "token by token";
  EXPECT_LT(e.pieces, tol) << "uneven calls";
  EXPECT_EQ(e.one_thread, 0.0) << "decoding on one thread gives other values";
}
