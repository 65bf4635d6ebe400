#include "mixers/short_conv.hpp"

#include <vector>

#include "core/error.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void ShortConvMixer::forward(const float* x, int64_t T, State& state, float* y, Workspace& ws) const {
  auto* st = dynamic_cast<ShortConvState*>(&state);
  check(st != nullptr, "short_conv layer was given a state of another mixer");
  const int64_t D = d_;
  float* bcx = ws.get(Workspace::kQ, size_t(T * 3 * D));  // [T][B | C | x]
  ops::linear(x, T, D, w_.in_proj, 3 * D, w_.in_proj_b, bcx);
  float* bx = ws.get(Workspace::kK, size_t(T * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) bx[t * D + i] = bcx[t * 3 * D + i] * bcx[t * 3 * D + 2 * D + i];
  float* conv = ws.get(Workspace::kV, size_t(T * D));
  ops::causal_conv1d(bx, D, T, D, w_.conv_w, w_.conv_b, s_.kernel, false, st->window.data(), conv);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) conv[t * D + i] *= bcx[t * 3 * D + D + i];
  st->pos += T;
  ops::linear(conv, T, D, w_.out_proj, D, w_.out_proj_b, y);
}

// Recomputes the forward from an empty state, then: y = out_proj(C * conv(B * x)).
void ShortConvMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& g) const {
  const int64_t D = d_, K = s_.kernel;
  auto vec = [](int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.0f); };
  std::vector<float> bcx = vec(T * 3 * D), bx = vec(T * D), conv = vec(T * D), gated = vec(T * D);
  std::vector<float> window = vec((K - 1) * D);
  ops::linear(x, T, D, w_.in_proj, 3 * D, w_.in_proj_b, bcx.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i)
      bx[size_t(t * D + i)] = bcx[size_t(t * 3 * D + i)] * bcx[size_t(t * 3 * D + 2 * D + i)];
  ops::causal_conv1d(bx.data(), D, T, D, w_.conv_w, w_.conv_b, K, false, window.data(), conv.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i)
      gated[size_t(t * D + i)] = conv[size_t(t * D + i)] * bcx[size_t(t * 3 * D + D + i)];

  std::vector<float> dgated = vec(T * D), dconv = vec(T * D), dbx = vec(T * D), dbcx = vec(T * 3 * D);
  ops::linear_backward(gated.data(), T, D, w_.out_proj, D, dy, dgated.data(), false, g.of(w_.out_proj),
                       g.of(w_.out_proj_b));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      const size_t r = size_t(t * D + i), c = size_t(t * 3 * D);
      dconv[r] = dgated[r] * bcx[c + size_t(D + i)];  // through C * conv
      dbcx[c + size_t(D + i)] = dgated[r] * conv[r];  // dC
    }
  ops::causal_conv1d_backward(bx.data(), D, T, D, w_.conv_w, K, dconv.data(), dbx.data(), g.of(w_.conv_w),
                              g.of(w_.conv_b));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D; ++i) {
      const size_t r = size_t(t * D + i), c = size_t(t * 3 * D);
      dbcx[c + size_t(i)] = dbx[r] * bcx[c + size_t(2 * D + i)];  // dB
      dbcx[c + size_t(2 * D + i)] = dbx[r] * bcx[c + size_t(i)];  // dx (the conv's input half)
    }
  ops::linear_backward(x, T, D, w_.in_proj, 3 * D, dbcx.data(), dx, false, g.of(w_.in_proj),
                       g.of(w_.in_proj_b));
}

}  // namespace braid
