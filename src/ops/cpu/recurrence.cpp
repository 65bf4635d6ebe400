#include "ops/cpu/recurrence.hpp"

#include "ops/cpu/dispatch.hpp"
#include "ops/cpu/elementwise.hpp"

namespace braid::ops {

namespace {

// s[i] = next(i) for i in [0, n), returning the new s . c; 16 lanes of partial sums (then
// added in a fixed order) keep the loop vectorised without reassociating one sum.
template <class Next>
inline float update_dot(float* s, int64_t n, const float* c, const Next& next) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) {
      const float v = next(i + k);
      s[i + k] = v;
      acc[k] += v * c[i + k];
    }
  for (int k = 0; k < 8; ++k) acc[k] += acc[k + 8];
  for (int k = 0; k < 4; ++k) acc[k] += acc[k + 4];
  float r = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  for (; i < n; ++i) {
    const float v = next(i);
    s[i] = v;
    r += v * c[i];
  }
  return r;
}

}  // namespace

BRAID_DISPATCH void decay_update_readout(float* S, int64_t rows, int64_t n, float a, float d, const float* x,
                                         const float* b, const float* c, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float* s = S + r * n;
    const float ur = d * x[r];
    y[r] = update_dot(s, n, c, [&](int64_t i) { return a * s[i] + ur * b[i]; });
  }
}

BRAID_DISPATCH void selective_scan(float* h, const float* A, int64_t channels, int64_t n, int64_t T,
                                   const float* dt, const float* u, int64_t ld, const float* B,
                                   const float* C, int64_t ldbc, float* y) {
  for (int64_t ch = 0; ch < channels; ++ch) {
    float* hc = h + ch * n;
    const float* Ac = A + ch * n;
    for (int64_t t = 0; t < T; ++t) {
      const float d = dt[t * ld + ch], x = u[t * ld + ch];
      const float* Bt = B + t * ldbc;
      y[t * ld + ch] = update_dot(hc, n, C + t * ldbc,
                                  [&](int64_t i) { return exp_fast(Ac[i] * d) * hc[i] + (d * Bt[i]) * x; });
    }
  }
}

}  // namespace braid::ops
