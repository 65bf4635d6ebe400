#include "ops/cpu/conv.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid::ops {

namespace {

// Outputs t of channels [c0, c0 + n) for t in [0, T): the channels in the inner loop, so it
// vectorises. A token's taps come from the inputs or, before the first, from the window;
// decoding (T = 1) and a whole sequence take the same path, so each value is the same sum,
// in the same order, whichever way the tokens arrive. For more than one token a block's
// weights (up to kTaps taps) are first laid out tap by tap, so the loop reads them in order.
BRAID_DISPATCH void conv_block(const float* in, int64_t ld, int64_t T, int64_t C, int64_t c0, int64_t n,
                               const float* w, const float* bias, int64_t K, bool silu, const float* window,
                               float* out) {
  constexpr int64_t kBlock = 256, kTaps = 8;
  float acc[kBlock], taps[kTaps * kBlock];
  const bool laid_out = T > 1 && K <= kTaps;
  for (int64_t b0 = c0; b0 < c0 + n; b0 += kBlock) {
    const int64_t m = std::min(kBlock, c0 + n - b0);
    if (laid_out)
      for (int64_t c = 0; c < m; ++c)
        for (int64_t k = 0; k < K; ++k) taps[k * kBlock + c] = w[(b0 + c) * K + k];
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < m; ++c) acc[c] = bias ? bias[b0 + c] : 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t s = t + k - (K - 1);
        const float* src = (s >= 0 ? in + s * ld : window + (K - 1 + s) * C) + b0;
        if (laid_out) {
          const float* wk = taps + k * kBlock;
          for (int64_t c = 0; c < m; ++c) acc[c] += wk[c] * src[c];
        } else {
          const float* wk = w + b0 * K + k;
          for (int64_t c = 0; c < m; ++c) acc[c] += wk[c * K] * src[c];
        }
      }
      float* o = out + t * C + b0;
      for (int64_t c = 0; c < m; ++c) o[c] = silu ? ops::silu(acc[c]) : acc[c];
    }
  }
}

// Channels [c0, c0 + n) of the window after T more inputs: its last K-1 inputs.
void shift_window(const float* in, int64_t ld, int64_t T, int64_t C, int64_t c0, int64_t n, int64_t K,
                  float* window) {
  const int64_t keep = K - 1;
  const size_t bytes = size_t(n) * sizeof(float);
  for (int64_t j = 0; j < keep; ++j) {  // row j from row j + T (earlier rows first) or an input
    const int64_t s = j + T;
    std::memcpy(window + j * C + c0, s < keep ? window + s * C + c0 : in + (s - keep) * ld + c0, bytes);
  }
}

}  // namespace

void causal_conv1d(const float* in, int64_t ld, int64_t T, int64_t C, const float* w, const float* bias,
                   int64_t K, bool silu, float* window, float* out) {
  constexpr int64_t kChannels = 64;  // per thread's share of a sequence
  if (T * C < 4096) {
    conv_block(in, ld, T, C, 0, C, w, bias, K, silu, window, out);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += kChannels)
      conv_block(in, ld, T, C, c0, std::min(kChannels, C - c0), w, bias, K, silu, window, out);
  }
  shift_window(in, ld, T, C, 0, C, K, window);
}

void causal_conv1d_channels(const float* in, int64_t ld, int64_t T, int64_t C, int64_t c0, int64_t n,
                            const float* w, const float* bias, int64_t K, bool silu, float* window,
                            float* out) {
  conv_block(in, ld, T, C, c0, n, w, bias, K, silu, window, out);
  shift_window(in, ld, T, C, c0, n, K, window);
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
