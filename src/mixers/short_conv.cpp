#include "mixers/short_conv.hpp"

#include "core/error.hpp"
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

}  // namespace braid
