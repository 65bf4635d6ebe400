// Causal depthwise 1-D convolution over time with a carried window, as used by Mamba,
// Mamba-2 and short-convolution mixers.
#pragma once
#include <cstdint>

namespace braid::ops {

// out[t][c] = act(bias[c] + sum_k w[c][k] * in[t + k - (K-1)][c]) for t in [0, T), where
// inputs before t = 0 come from `window` ([K-1][C], oldest first). `in` rows have
// stride ld. Afterwards `window` holds the last K-1 inputs. act is SiLU when `silu`.
void causal_conv1d(const float* in, int64_t ld, int64_t T, int64_t C, const float* w, const float* bias,
                   int64_t K, bool silu, float* window, float* out);
// The same for channels [c0, c0 + n) only (their outputs and their part of the window), on
// the calling thread: threads that split the channels of a step between them.
void causal_conv1d_channels(const float* in, int64_t ld, int64_t T, int64_t C, int64_t c0, int64_t n,
                            const float* w, const float* bias, int64_t K, bool silu, float* window,
                            float* out);

// Backward of causal_conv1d without activation, for a sequence that starts from a zero
// window: given dout[T][C] (the gradient of the pre-activation output), writes din
// (row stride ld) and adds dw[C][K] and dbias[C] (when not null).
void causal_conv1d_backward(const float* in, int64_t ld, int64_t T, int64_t C, const float* w, int64_t K,
                            const float* dout, float* din, float* dw, float* dbias);

}  // namespace braid::ops
