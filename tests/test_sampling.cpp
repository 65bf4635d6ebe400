// Sampling: greedy, top-k, top-p, temperature, determinism under a seed.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "runtime/sampling.hpp"

using namespace braid;

TEST(Sampling, GreedyIsArgmaxWithLowestIndexOnTies) {
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  Sampler s({});
  EXPECT_EQ(s.sample(l.data(), 4), 1);
  EXPECT_EQ(argmax(l.data(), 4), 1);
}

// The vectorised argmax against the one-pass loop (strictly greater replaces the best), for
// lengths around its 16-lane steps and a vocabulary's, with repeated maxima, zeros of both
// signs and NaNs.
TEST(Sampling, ArgmaxMatchesTheOnePassLoop) {
  uint64_t r = 12345;
  auto next = [&] { return r = r * 6364136223846793005ull + 1442695040888963407ull; };
  for (int64_t n : {1, 2, 15, 16, 17, 31, 33, 100, 50280})
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = float(int64_t(next() >> 59) - 16);  // few distinct values: many ties
      if (trial % 4 == 1) x[size_t(next() % uint64_t(n))] = NAN;
      if (trial % 4 == 2) x[0] = NAN;
      if (trial % 4 == 3)
        for (float& v : x) v = (next() >> 63) ? 0.0f : -0.0f;
      int64_t want = 0;
      for (int64_t i = 1; i < n; ++i)
        if (x[size_t(i)] > x[size_t(want)]) want = i;
      EXPECT_EQ(argmax(x.data(), n), want) << "n " << n << " trial " << trial;
    }
}

TEST(Sampling, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> l = {0.5f, 0.1f, 2.0f, 1.9f, -3.0f};
  Sampler k({1.0f, 1, 1.0f, 7});
  Sampler p({1.0f, 0, 1e-6f, 7});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(k.sample(l.data(), 5), 2);
    EXPECT_EQ(p.sample(l.data(), 5), 2);
  }
}

TEST(Sampling, FrequenciesFollowTheSoftmax) {
  std::vector<float> l = {1.0f, 2.0f, 0.0f, 1.5f};
  Sampler s({0.7f, 0, 1.0f, 11});
  std::vector<int> count(4);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[size_t(s.sample(l.data(), 4))];
  double z = 0;
  for (float x : l) z += std::exp(x / 0.7);
  for (size_t i = 0; i < 4; ++i) {
    const double p = std::exp(l[i] / 0.7) / z;
    EXPECT_NEAR(double(count[i]) / n, p, 4 * std::sqrt(p * (1 - p) / n) + 1e-3) << i;
  }
}

TEST(Sampling, TopPKeepsTheSmallestNucleus) {
  // probabilities ~ 0.6, 0.3, 0.1: top_p 0.8 keeps the first two only.
  std::vector<float> l = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  Sampler s({1.0f, 0, 0.8f, 3});
  for (int i = 0; i < 2000; ++i) EXPECT_NE(s.sample(l.data(), 3), 2);
}

TEST(Sampling, SameSeedSameSequence) {
  std::vector<float> l(50);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i)));
  Sampler a({1.0f, 0, 0.95f, 42}), b({1.0f, 0, 0.95f, 42});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(l.data(), 50), b.sample(l.data(), 50));
}

TEST(Sampling, BadParametersAreRejected) {
  EXPECT_THROW(Sampler({-1.0f, 0, 1.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, 0, 0.0f, 0}), Error);
  EXPECT_THROW(Sampler({1.0f, -2, 1.0f, 0}), Error);
}
