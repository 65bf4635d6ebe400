// The per-token recurrence of the Titans memory mixer, shared by its forward and backward
// passes so that they cannot drift apart.
#pragma once
#include <cmath>
#include <cstdint>

#include "mixers/titans.hpp"

namespace braid {

// x /= sqrt(|x|^2 + eps), eps = 1e-6 (queries and keys of the memory).
constexpr float kTitansL2Eps = 1e-6f;
inline void l2_normalize(float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(s + kTitansL2Eps));
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}
// Its backward from the unnormalised x: dx = (dy - y (y . dy)) / sqrt(|x|^2 + eps), written.
inline void l2_normalize_backward(const float* x, const float* dy, int64_t n, float* dx) {
  double s = 0, yd = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(s + kTitansL2Eps);
  for (int64_t i = 0; i < n; ++i) yd += double(x[i]) * inv * dy[i];
  for (int64_t i = 0; i < n; ++i) dx[i] = float((dy[i] - x[i] * inv * yd) * inv);
}

// sum_i a[i] b[i] accumulated in double in 8 lanes (i mod 8), then a fixed tree: the loop
// vectorises (one running sum would not: its additions cannot be reordered) and every caller
// gets the same order.
inline double dot_f64(const float* a, const float* b, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += double(a[i + l]) * b[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += double(a[i]) * b[i];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// One token of one head: U = sum over the n window tokens of grad ||M0(k_j) - v_j||^2,
// rescaled to norm max_norm if it is longer (max_norm > 0), S = eta S - theta U,
// M = (1 - alpha) M + S. U and tmp are scratch (net.size(), net.scratch()); U keeps the
// (rescaled) gradient afterwards. Returns the norm of U before rescaling.
float titans_update(const MemoryNet& net, const float* M0, const float* const* keys,
                    const float* const* values, int64_t n, float alpha, float eta, float theta,
                    float max_norm, float* M, float* S, float* U, float* tmp);
// The backward of M = (1 - alpha) Mprev + S, S = eta Sprev - theta U for one token: dM and dS
// (with respect to M and S, in place) become those with respect to Mprev and Sprev, dU is
// written; returns the gradients with respect to alpha, eta and theta.
struct TitansGateGrads {
  double alpha, eta, theta;
};
TitansGateGrads titans_update_backward(int64_t P, float alpha, float eta, float theta, const float* Mprev,
                                       const float* Sprev, const float* U, float* dM, float* dS, float* dU);
// The backward of that rescaling: dU (with respect to the rescaled U, in place) becomes the
// gradient with respect to the raw sum, given the rescaled U and the raw norm.
void titans_clip_backward(const float* U, int64_t P, float max_norm, float raw_norm, float* dU);

}  // namespace braid
