// Backward of the Titans memory mixer. A first sweep keeps each head's memory and
// momentum at chunk starts (and the retrieved values); the second walks the chunks in
// reverse, replays each chunk's per-token memories from its start, and differentiates the
// recurrence token by token: through the retrieval y = M_t(q), the forgetting and
// momentum updates, and the test-time gradient u = grad ||M0(k) - v||^2 (a Hessian-vector
// product with respect to the chunk-start memory M0, which is the memory entering the
// chunk).
#include <cstring>

#include "core/error.hpp"
#include "mixers/titans.hpp"
#include "mixers/titans_recurrence.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

void TitansMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  if (T == 0) return;
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size(), W = s_.window, C = s_.chunk;
  const int64_t nch = (T + C - 1) / C;
  const float clip = float(s_.max_grad_norm);
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); };
  Inputs in;
  project(x, T, in);
  Vec o = vec(T * HD), ckM = vec(H * nch * P), ckS = vec(H * nch * P);
  auto window_of = [&](int64_t h, int64_t t, const float** keys, const float** values) {
    int64_t n = 0;
    for (int64_t j = std::max<int64_t>(0, t - W + 1); j <= t; ++j, ++n)
      keys[n] = &in.k[size_t(j * HD + h * d)], values[n] = &in.v[size_t(j * HD + h * d)];
    return n;
  };
  // Sweep 1: retrievals, and memory and momentum at each chunk start.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec M(w_.memory + h * P, w_.memory + (h + 1) * P), S = vec(P), U = vec(P), tmp = vec(net_.scratch());
    std::vector<const float*> keys(static_cast<size_t>(W)), values(static_cast<size_t>(W));
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) {
        std::memcpy(&ckM[size_t((h * nch + t / C) * P)], M.data(), size_t(P) * sizeof(float));
        std::memcpy(&ckS[size_t((h * nch + t / C) * P)], S.data(), size_t(P) * sizeof(float));
      }
      const float* M0 = &ckM[size_t((h * nch + t / C) * P)];
      const int64_t n = window_of(h, t, keys.data(), values.data());
      const float* gt = &in.gates[size_t(t * 3 * H)];
      titans_update(net_, M0, keys.data(), values.data(), n, gt[h], gt[H + h], gt[2 * H + h], clip, M.data(),
                    S.data(), U.data(), tmp.data());
      net_.apply(M.data(), &in.q[size_t(t * HD + h * d)], &o[size_t(t * HD + h * d)], tmp.data());
    }
  }
  // Output path: y = out(rmsnorm(o)) per head.
  Vec on = vec(T * HD), don = vec(T * HD), dO = vec(T * HD);
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * H, d, on.data());
  ops::linear_backward(on.data(), T, HD, w_.out, d_, dy, don.data(), false, gs.of(w_.out), nullptr);
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T * H, d, don.data(), dO.data(), false,
                        gs.of(w_.norm));
  // Sweep 2: the recurrence in reverse. Each head touches only its own columns.
  Vec dq = vec(T * HD), dk = vec(T * HD), dv = vec(T * HD), dgate = vec(T * 3 * H);
  float* dmem = gs.of(w_.memory);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec Ms = vec((C + 1) * P), Ss = vec((C + 1) * P), Us = vec(C * P), dM = vec(P), dS = vec(P), dM0 = vec(P),
        dU = vec(P), tmp = vec(net_.scratch()), norms = vec(C);
    std::vector<const float*> keys(static_cast<size_t>(W)), values(static_cast<size_t>(W));
    for (int64_t c = nch - 1; c >= 0; --c) {
      const int64_t t0 = c * C, n = std::min(C, T - t0);
      const float* M0 = &ckM[size_t((h * nch + c) * P)];
      std::memcpy(Ms.data(), M0, size_t(P) * sizeof(float));
      std::memcpy(Ss.data(), &ckS[size_t((h * nch + c) * P)], size_t(P) * sizeof(float));
      for (int64_t j = 0; j < n; ++j) {
        float *Mj = &Ms[size_t((j + 1) * P)], *Sj = &Ss[size_t((j + 1) * P)];
        std::memcpy(Mj, Mj - P, size_t(P) * sizeof(float));
        std::memcpy(Sj, Sj - P, size_t(P) * sizeof(float));
        const int64_t nw = window_of(h, t0 + j, keys.data(), values.data());
        const float* gt = &in.gates[size_t((t0 + j) * 3 * H)];
        norms[size_t(j)] = titans_update(net_, M0, keys.data(), values.data(), nw, gt[h], gt[H + h],
                                         gt[2 * H + h], clip, Mj, Sj, &Us[size_t(j * P)], tmp.data());
      }
      std::fill(dM0.begin(), dM0.end(), 0.0f);
      for (int64_t j = n - 1; j >= 0; --j) {
        const int64_t t = t0 + j;
        const float* gt = &in.gates[size_t(t * 3 * H)];
        const float alpha = gt[h], eta = gt[H + h], theta = gt[2 * H + h];
        // y_t = M_t(q_t)
        net_.apply_backward(&Ms[size_t((j + 1) * P)], &in.q[size_t(t * HD + h * d)],
                            &dO[size_t(t * HD + h * d)], dM.data(), &dq[size_t(t * HD + h * d)], tmp.data());
        // M_t = (1 - alpha) M_{t-1} + S_t
        double da = 0, de = 0, dth = 0;
        const float *Mprev = &Ms[size_t(j * P)], *Sprev = &Ss[size_t(j * P)], *U = &Us[size_t(j * P)];
        for (int64_t i = 0; i < P; ++i) {
          dS[size_t(i)] += dM[size_t(i)];
          da -= double(dM[size_t(i)]) * Mprev[i];
          dM[size_t(i)] *= 1.0f - alpha;
        }
        // S_t = eta S_{t-1} - theta U_t
        for (int64_t i = 0; i < P; ++i) {
          de += double(dS[size_t(i)]) * Sprev[i];
          dth -= double(dS[size_t(i)]) * U[i];
          dU[size_t(i)] = -theta * dS[size_t(i)];
          dS[size_t(i)] *= eta;
        }
        // U_t = sum over the window of grad ||M0(k_i) - v_i||^2, rescaled
        titans_clip_backward(U, P, clip, norms[size_t(j)], dU.data());
        const int64_t nw = window_of(h, t, keys.data(), values.data());
        for (int64_t i = 0; i < nw; ++i) {
          const int64_t ti = t - nw + 1 + i;
          net_.grad_backward(M0, keys[size_t(i)], values[size_t(i)], dU.data(), dM0.data(),
                             &dk[size_t(ti * HD + h * d)], &dv[size_t(ti * HD + h * d)], tmp.data());
        }
        float* dg = &dgate[size_t(t * 3 * H)];
        const float* raw = &in.gates_raw[size_t(t * 3 * H)];
        auto dsig = [&](int64_t col) {
          const float s = ops::sigmoid(raw[col]);
          return s * (1.0f - s);
        };
        dg[h] = float(da) * dsig(h);
        dg[H + h] = float(de) * dsig(H + h);
        dg[2 * H + h] = float(dth) * float(s_.max_lr) * dsig(2 * H + h);
      }
      for (int64_t i = 0; i < P; ++i) dM[size_t(i)] += dM0[size_t(i)];  // M0 is the memory entering the chunk
    }
    if (dmem)
      for (int64_t i = 0; i < P; ++i) dmem[h * P + i] += dM[size_t(i)];
  }
  // Through the normalisations and the projections.
  Vec dq_raw = vec(T * HD), dk_raw = vec(T * HD);
  for (int64_t r = 0; r < T * H; ++r) {
    l2_normalize_backward(&in.q_raw[size_t(r * d)], &dq[size_t(r * d)], d, &dq_raw[size_t(r * d)]);
    l2_normalize_backward(&in.k_raw[size_t(r * d)], &dk[size_t(r * d)], d, &dk_raw[size_t(r * d)]);
  }
  ops::linear_backward(x, T, d_, w_.q, HD, dq_raw.data(), dx, false, gs.of(w_.q), nullptr);
  ops::linear_backward(x, T, d_, w_.k, HD, dk_raw.data(), dx, true, gs.of(w_.k), nullptr);
  ops::linear_backward(x, T, d_, w_.v, HD, dv.data(), dx, true, gs.of(w_.v), nullptr);
  ops::linear_backward(x, T, d_, w_.gates, 3 * H, dgate.data(), dx, true, gs.of(w_.gates), gs.of(w_.gates_b));
}

}  // namespace braid
