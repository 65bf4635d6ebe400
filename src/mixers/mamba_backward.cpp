// Backward of the Mamba-1 mixer for a sequence that starts from an empty state. Per
// channel c and state n, with a = exp(A dt_t):
//   h_t = a h_{t-1} + dt_t B_t u_t;   y_t = C_t . h_t + D u_t;   g_t = y_t silu(z_t)
// is differentiated in reverse; each channel keeps its state only at chunk starts and
// recomputes a chunk's states when the reverse sweep reaches it.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "mixers/mamba.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/conv.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void MambaMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  const int64_t Di = s_.d_inner, N = s_.d_state, K = s_.d_conv, R = s_.dt_rank, P = R + 2 * N;
  const int64_t C = s_.chunk > 0 ? s_.chunk : 256, nchunks = (T + C - 1) / C;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  // Recompute the forward up to the scan's inputs.
  Vec xz = vec(T * 2 * Di), pre = vec(T * Di), window = vec((K - 1) * Di);
  ops::linear(x, T, d_, w_.in_proj, 2 * Di, w_.in_proj_b, xz.data());
  ops::causal_conv1d(xz.data(), 2 * Di, T, Di, w_.conv_w, w_.conv_b, K, false, window.data(), pre.data());
  Vec u(pre);
  ops::silu_inplace(u.data(), T * Di);
  Vec raw = vec(T * P);  // x_proj output before the optional dt / B / C norms
  ops::linear(u.data(), T, Di, w_.x_proj, P, nullptr, raw.data());
  Vec dbc(raw);
  const bool normed = s_.bcdt_norm_eps > 0;
  const float neps = float(s_.bcdt_norm_eps);
  // The norms act on column ranges of dbc; gather each into contiguous rows.
  auto cols = [&](const Vec& m, int64_t off, int64_t n) {
    Vec out = vec(T * n);
    for (int64_t t = 0; t < T; ++t) std::memcpy(&out[size_t(t * n)], &m[size_t(t * P + off)], size_t(n) * 4);
    return out;
  };
  auto put_cols = [&](Vec& m, int64_t off, int64_t n, const Vec& src) {
    for (int64_t t = 0; t < T; ++t) std::memcpy(&m[size_t(t * P + off)], &src[size_t(t * n)], size_t(n) * 4);
  };
  struct Part {
    int64_t off, n;
    const float* w;
  };
  const Part parts[3] = {{0, R, w_.dt_norm}, {R, N, w_.b_norm}, {R + N, N, w_.c_norm}};
  if (normed)
    for (const Part& p : parts) {
      Vec v = cols(raw, p.off, p.n), ones(static_cast<size_t>(p.n), 1.0f);
      ops::rmsnorm(v.data(), p.w ? p.w : ones.data(), neps, T, p.n, v.data());
      put_cols(dbc, p.off, p.n, v);
    }
  Vec dt_in = cols(dbc, 0, R), dtp = vec(T * Di), dt = vec(T * Di);
  ops::linear(dt_in.data(), T, R, w_.dt_proj, Di, w_.dt_proj_b, dtp.data());
  for (int64_t i = 0; i < T * Di; ++i) dt[size_t(i)] = ops::softplus(dtp[size_t(i)]);
  Vec A = vec(Di * N);
  for (int64_t i = 0; i < Di * N; ++i) A[size_t(i)] = -std::exp(w_.A_log[i]);

  // Forward scan per channel: outputs and the state at each chunk start.
  Vec ys = vec(T * Di), ck = vec(Di * nchunks * N);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < Di; ++c) {
    Vec h = vec(N);
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) std::memcpy(&ck[size_t((c * nchunks + t / C) * N)], h.data(), size_t(N) * 4);
      const float d = dt[size_t(t * Di + c)], uc = u[size_t(t * Di + c)];
      const float* B = &dbc[size_t(t * P + R)];
      for (int64_t n = 0; n < N; ++n)
        h[size_t(n)] = ops::exp_fast(A[size_t(c * N + n)] * d) * h[size_t(n)] + (d * B[n]) * uc;
      float acc = 0.0f;
      for (int64_t n = 0; n < N; ++n) acc += h[size_t(n)] * B[N + n];
      ys[size_t(t * Di + c)] = acc + uc * w_.D[c];
    }
  }
  // Gate and out_proj.
  Vec gated = vec(T * Di), dgated = vec(T * Di);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < Di; ++c) {
      const float zc = xz[size_t(t * 2 * Di + Di + c)];
      gated[size_t(t * Di + c)] = ys[size_t(t * Di + c)] * zc * ops::sigmoid(zc);
    }
  ops::linear_backward(gated.data(), T, Di, w_.out_proj, d_, dy, dgated.data(), false, gs.of(w_.out_proj),
                       gs.of(w_.out_proj_b));
  Vec dxz = vec(T * 2 * Di), dys = vec(T * Di), du = vec(T * Di);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < Di; ++c) {
      const size_t i = size_t(t * Di + c);
      const float zc = xz[size_t(t * 2 * Di + Di + c)], sg = ops::sigmoid(zc);
      dys[i] = dgated[i] * zc * sg;
      dxz[size_t(t * 2 * Di + Di + c)] = dgated[i] * ys[i] * sg * (1.0f + zc * (1.0f - sg));  // dz
    }

  // Reverse scan. dB and dC sum over channels, so each thread accumulates its own copy.
  const int nthreads = omp_get_max_threads();
  Vec dBC_t = vec(int64_t(nthreads) * T * 2 * N), ddt = vec(T * Di), dA = vec(Di * N), dD = vec(Di);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < Di; ++c) {
    float* dBC = &dBC_t[size_t(omp_get_thread_num()) * size_t(T * 2 * N)];
    Vec hs = vec((C + 1) * N), as = vec(C * N), dh = vec(N);  // as[j]: the decays of token t0 + j
    const float* Ac = &A[size_t(c * N)];
    for (int64_t k = nchunks - 1; k >= 0; --k) {
      const int64_t t0 = k * C, n = std::min(C, T - t0);
      // hs[j] = h_{t0 + j - 1}: the state before token t0 + j.
      std::memcpy(hs.data(), &ck[size_t((c * nchunks + k) * N)], size_t(N) * 4);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t t = t0 + j;
        const float d = dt[size_t(t * Di + c)], uc = u[size_t(t * Di + c)];
        const float* B = &dbc[size_t(t * P + R)];
        float* a = &as[size_t(j * N)];
        for (int64_t m = 0; m < N; ++m) a[m] = ops::exp_fast(Ac[m] * d);
        for (int64_t m = 0; m < N; ++m)
          hs[size_t((j + 1) * N + m)] = a[m] * hs[size_t(j * N + m)] + (d * B[m]) * uc;
      }
      for (int64_t j = n - 1; j >= 0; --j) {
        const int64_t t = t0 + j;
        const size_t i = size_t(t * Di + c);
        const float d = dt[i], uc = u[i], g = dys[i];
        const float* B = &dbc[size_t(t * P + R)];
        const float* Cv = B + N;
        const float* hprev = &hs[size_t(j * N)];
        const float* ht = &hs[size_t((j + 1) * N)];
        float* dB = dBC + t * 2 * N;
        float* dC = dB + N;
        float dd = 0.0f, duc = g * w_.D[c];
        dD[size_t(c)] += g * uc;
        for (int64_t m = 0; m < N; ++m) {
          dC[m] += g * ht[m];
          const float dhm = dh[size_t(m)] + g * Cv[m];
          const float a = as[size_t(j * N + m)];
          dd += dhm * (Ac[m] * a * hprev[m] + B[m] * uc);
          dA[size_t(c * N + m)] += dhm * d * a * hprev[m];
          dB[m] += dhm * d * uc;
          duc += dhm * d * B[m];
          dh[size_t(m)] = dhm * a;
        }
        ddt[i] = dd;
        du[i] = duc;
      }
    }
  }
  float* dA_log = gs.of(w_.A_log);
  if (dA_log)
    for (int64_t i = 0; i < Di * N; ++i) dA_log[i] += dA[size_t(i)] * A[size_t(i)];  // dA/dA_log = A
  if (float* dDw = gs.of(w_.D))
    for (int64_t c = 0; c < Di; ++c) dDw[c] += dD[size_t(c)];

  // dt = softplus(dt_in dt_proj^T + b): back to dt_in and dt_proj.
  Vec ddtp = vec(T * Di), ddt_in = vec(T * R);
  for (int64_t i = 0; i < T * Di; ++i) ddtp[size_t(i)] = ddt[size_t(i)] * ops::sigmoid(dtp[size_t(i)]);
  ops::linear_backward(dt_in.data(), T, R, w_.dt_proj, Di, ddtp.data(), ddt_in.data(), false,
                       gs.of(w_.dt_proj), gs.of(w_.dt_proj_b));
  // Gradient of x_proj's (normed) output, then back through the norms.
  Vec ddbc = vec(T * P);
  put_cols(ddbc, 0, R, ddt_in);
  for (int th = 0; th < nthreads; ++th)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t m = 0; m < 2 * N; ++m)
        ddbc[size_t(t * P + R + m)] += dBC_t[size_t(th) * size_t(T * 2 * N) + size_t(t * 2 * N + m)];
  if (normed)
    for (const Part& p : parts) {
      Vec xin = cols(raw, p.off, p.n), dout = cols(ddbc, p.off, p.n), ones(static_cast<size_t>(p.n), 1.0f);
      ops::rmsnorm_backward(xin.data(), p.w ? p.w : ones.data(), neps, T, p.n, dout.data(), dout.data(),
                            false, p.w ? gs.of(p.w) : nullptr);
      put_cols(ddbc, p.off, p.n, dout);
    }
  ops::linear_backward(u.data(), T, Di, w_.x_proj, P, ddbc.data(), du.data(), true, gs.of(w_.x_proj),
                       nullptr);
  // SiLU, convolution (into the x half of dxz; z's half is already there), in_proj.
  Vec dpre = vec(T * Di);
  ops::silu_backward(pre.data(), du.data(), T * Di, dpre.data());
  ops::causal_conv1d_backward(xz.data(), 2 * Di, T, Di, w_.conv_w, K, dpre.data(), dxz.data(),
                              gs.of(w_.conv_w),
                              gs.of(w_.conv_b));  // writes the first Di columns of each row
  ops::linear_backward(x, T, d_, w_.in_proj, 2 * Di, dxz.data(), dx, false, gs.of(w_.in_proj),
                       gs.of(w_.in_proj_b));
}

}  // namespace braid
