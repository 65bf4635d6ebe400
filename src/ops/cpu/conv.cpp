#include "ops/cpu/conv.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace braid::ops {

void causal_conv1d(const float* in, int64_t ld, int64_t T, int64_t C, const float* w, const float* bias,
                   int64_t K, bool silu, float* window, float* out) {
  if (T == 1) {
    // One step (decoding): the channels in the inner loop, so it vectorises; each value the
    // same sum, in the same order, as the loop below gives it.
    constexpr int64_t kBlock = 256;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t n = std::min(kBlock, C - c0);
      float acc[kBlock];
      for (int64_t c = 0; c < n; ++c) acc[c] = bias ? bias[c0 + c] : 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float* src = k == K - 1 ? in + c0 : window + k * C + c0;
        for (int64_t c = 0; c < n; ++c) acc[c] += w[(c0 + c) * K + k] * src[c];
      }
      for (int64_t c = 0; c < n; ++c) out[c0 + c] = silu ? acc[c] / (1.0f + std::exp(-acc[c])) : acc[c];
    }
  } else {
#pragma omp parallel for schedule(static) if (T * C >= 4096)
    for (int64_t c = 0; c < C; ++c) {
      const float* wc = w + c * K;
      for (int64_t t = 0; t < T; ++t) {
        float acc = bias ? bias[c] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t src = t + k - (K - 1);
          acc += wc[k] * (src >= 0 ? in[src * ld + c] : window[(K - 1 + src) * C + c]);
        }
        out[t * C + c] = silu ? acc / (1.0f + std::exp(-acc)) : acc;
      }
    }
  }
  const int64_t keep = K - 1;
  if (keep <= 0) return;
  if (T >= keep) {
    for (int64_t j = 0; j < keep; ++j)
      std::memcpy(window + j * C, in + (T - keep + j) * ld, size_t(C) * sizeof(float));
  } else {
    std::memmove(window, window + T * C, size_t((keep - T) * C) * sizeof(float));
    for (int64_t j = 0; j < T; ++j)
      std::memcpy(window + (keep - T + j) * C, in + j * ld, size_t(C) * sizeof(float));
  }
}

void causal_conv1d_backward(const float* in, int64_t ld, int64_t T, int64_t C, const float* w, int64_t K,
                            const float* dout, float* din, float* dw, float* dbias) {
#pragma omp parallel for schedule(static) if (T * C >= 4096)
  for (int64_t c = 0; c < C; ++c) {
    const float* wc = w + c * K;
    for (int64_t t = 0; t < T; ++t) {
      // in[t] feeds out[t + (K - 1) - k] through tap k.
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t o = t + (K - 1) - k;
        if (o < T) acc += wc[k] * dout[o * C + c];
      }
      din[t * ld + c] = acc;
    }
    if (dw)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t t = 0; t < T; ++t) {
          const int64_t src = t + k - (K - 1);
          if (src >= 0) acc += double(dout[t * C + c]) * in[src * ld + c];
        }
        dw[c * K + k] += float(acc);
      }
    if (dbias) {
      double acc = 0;
      for (int64_t t = 0; t < T; ++t) acc += dout[t * C + c];
      dbias[c] += float(acc);
    }
  }
}

}  // namespace braid::ops
