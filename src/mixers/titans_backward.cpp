// Backward of the Titans memory mixer. A first sweep keeps each head's memory and
// momentum at chunk starts (and the retrieved values); the second walks the chunks in
// reverse, replays each chunk's per-token memories from its start, and differentiates the
// recurrence token by token: through the retrieval y = M_t(q), the forgetting and
// momentum updates, and the test-time gradient u = grad ||M0(k) - v||^2 (a Hessian-vector
// product with respect to the chunk-start memory M0, which is the memory entering the
// chunk).
#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "mixers/titans.hpp"
#include "mixers/titans_recurrence.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"

namespace braid {

namespace {

using Vec = std::vector<float>;
Vec zeros(int64_t n) { return Vec(static_cast<size_t>(n), 0.0f); }

// The window of token t for head h: pointers to its keys and values, oldest first.
int64_t window_of(const TitansMixer::Inputs& in, int64_t HD, int64_t d, int64_t W, int64_t h, int64_t t,
                  const float** keys, const float** values) {
  int64_t n = 0;
  for (int64_t j = std::max<int64_t>(0, t - W + 1); j <= t; ++j, ++n)
    keys[n] = &in.k[size_t(j * HD + h * d)], values[n] = &in.v[size_t(j * HD + h * d)];
  return n;
}

}  // namespace

// Sweep 1: retrievals, and memory and momentum at each chunk start.
void TitansMixer::record(const float* x, int64_t T, Tape& tp) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size(), W = s_.window, C = s_.chunk;
  const int64_t nch = (T + C - 1) / C;
  const float clip = float(s_.max_grad_norm);
  tp.T = T, tp.nch = nch;
  project(x, T, tp.in);
  tp.o = zeros(T * HD), tp.ckM = zeros(H * nch * P), tp.ckS = zeros(H * nch * P);
  const Inputs& in = tp.in;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec M(w_.memory + h * P, w_.memory + (h + 1) * P), S = zeros(P), U = zeros(P),
                                                       tmp = zeros(net_.scratch());
    std::vector<const float*> keys(static_cast<size_t>(W)), values(static_cast<size_t>(W));
    for (int64_t t = 0; t < T; ++t) {
      if (t % C == 0) {
        std::memcpy(&tp.ckM[size_t((h * nch + t / C) * P)], M.data(), size_t(P) * sizeof(float));
        std::memcpy(&tp.ckS[size_t((h * nch + t / C) * P)], S.data(), size_t(P) * sizeof(float));
      }
      const float* M0 = &tp.ckM[size_t((h * nch + t / C) * P)];
      const int64_t n = window_of(in, HD, d, W, h, t, keys.data(), values.data());
      const float* gt = &in.gates[size_t(t * 3 * H)];
      titans_update(net_, M0, keys.data(), values.data(), n, gt[h], gt[H + h], gt[2 * H + h], clip, M.data(),
                    S.data(), U.data(), tmp.data());
      net_.apply(M.data(), &in.q[size_t(t * HD + h * d)], &tp.o[size_t(t * HD + h * d)], tmp.data());
    }
  }
}

// Output path: y = out(rmsnorm(o)) per head.
void TitansMixer::backward_output(Tape& tp, const float* dy, GradSink& gs) const {
  const int64_t T = tp.T, H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size();
  Vec on = zeros(T * HD), don = zeros(T * HD);
  tp.dO = zeros(T * HD);
  ops::rmsnorm(tp.o.data(), w_.norm, float(s_.norm_eps), T * H, d, on.data());
  ops::linear_backward(on.data(), T, HD, w_.out, d_, dy, don.data(), false, gs.of(w_.out), nullptr);
  ops::rmsnorm_backward(tp.o.data(), w_.norm, float(s_.norm_eps), T * H, d, don.data(), tp.dO.data(), false,
                        gs.of(w_.norm));
  tp.dq = zeros(T * HD), tp.dk = zeros(T * HD), tp.dv = zeros(T * HD), tp.dgate = zeros(T * 3 * H);
  tp.dM = zeros(H * P), tp.dS = zeros(H * P);
}

// Sweep 2 for one chunk: the recurrence in reverse. Each head touches only its own columns.
void TitansMixer::backward_chunk(Tape& tp, int64_t c) const {
  const int64_t T = tp.T, nch = tp.nch, H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size(),
                W = s_.window, C = s_.chunk;
  const float clip = float(s_.max_grad_norm);
  const Inputs& in = tp.in;
  const int64_t t0 = c * C, n = std::min(C, T - t0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < H; ++h) {
    Vec Ms = zeros((n + 1) * P), Ss = zeros((n + 1) * P), Us = zeros(n * P), dM0 = zeros(P), dU = zeros(P),
        tmp = zeros(net_.scratch()), norms = zeros(n);
    float *dM = &tp.dM[size_t(h * P)], *dS = &tp.dS[size_t(h * P)];
    std::vector<const float*> keys(static_cast<size_t>(W)), values(static_cast<size_t>(W));
    const float* M0 = &tp.ckM[size_t((h * nch + c) * P)];
    std::memcpy(Ms.data(), M0, size_t(P) * sizeof(float));
    std::memcpy(Ss.data(), &tp.ckS[size_t((h * nch + c) * P)], size_t(P) * sizeof(float));
    for (int64_t j = 0; j < n; ++j) {
      float *Mj = &Ms[size_t((j + 1) * P)], *Sj = &Ss[size_t((j + 1) * P)];
      std::memcpy(Mj, Mj - P, size_t(P) * sizeof(float));
      std::memcpy(Sj, Sj - P, size_t(P) * sizeof(float));
      const int64_t nw = window_of(in, HD, d, W, h, t0 + j, keys.data(), values.data());
      const float* gt = &in.gates[size_t((t0 + j) * 3 * H)];
      norms[size_t(j)] = titans_update(net_, M0, keys.data(), values.data(), nw, gt[h], gt[H + h],
                                       gt[2 * H + h], clip, Mj, Sj, &Us[size_t(j * P)], tmp.data());
    }
    for (int64_t j = n - 1; j >= 0; --j) {
      const int64_t t = t0 + j;
      const float* gt = &in.gates[size_t(t * 3 * H)];
      const float alpha = gt[h], eta = gt[H + h], theta = gt[2 * H + h];
      // y_t = M_t(q_t)
      net_.apply_backward(&Ms[size_t((j + 1) * P)], &in.q[size_t(t * HD + h * d)],
                          &tp.dO[size_t(t * HD + h * d)], dM, &tp.dq[size_t(t * HD + h * d)], tmp.data());
      // M_t = (1 - alpha) M_{t-1} + S_t, S_t = eta S_{t-1} - theta U_t
      const float *Mprev = &Ms[size_t(j * P)], *Sprev = &Ss[size_t(j * P)], *U = &Us[size_t(j * P)];
      const TitansGateGrads gg =
          titans_update_backward(P, alpha, eta, theta, Mprev, Sprev, U, dM, dS, dU.data());
      // U_t = sum over the window of grad ||M0(k_i) - v_i||^2, rescaled
      titans_clip_backward(U, P, clip, norms[size_t(j)], dU.data());
      const int64_t nw = window_of(in, HD, d, W, h, t, keys.data(), values.data());
      for (int64_t i = 0; i < nw; ++i) {
        const int64_t ti = t - nw + 1 + i;
        net_.grad_backward(M0, keys[size_t(i)], values[size_t(i)], dU.data(), dM0.data(),
                           &tp.dk[size_t(ti * HD + h * d)], &tp.dv[size_t(ti * HD + h * d)], tmp.data());
      }
      float* dg = &tp.dgate[size_t(t * 3 * H)];
      const float* raw = &in.gates_raw[size_t(t * 3 * H)];
      auto dsig = [&](int64_t col) {
        const float s = ops::sigmoid(raw[col]);
        return s * (1.0f - s);
      };
      dg[h] = float(gg.alpha) * dsig(h);
      dg[H + h] = float(gg.eta) * dsig(H + h);
      dg[2 * H + h] = float(gg.theta) * float(s_.max_lr) * dsig(2 * H + h);
    }
    for (int64_t i = 0; i < P; ++i) dM[i] += dM0[size_t(i)];  // M0 is the memory entering the chunk
  }
}

// Through the normalisations and the projections, for rows [r0, r0 + n).
void TitansMixer::backward_inputs(const float* x, const Tape& tp, int64_t r0, int64_t n, float* dx,
                                  bool accumulate, GradSink& gs) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d;
  Vec dq_raw = zeros(n * HD), dk_raw = zeros(n * HD);
  for (int64_t r = 0; r < n * H; ++r) {
    const size_t at = size_t(r0 * HD + r * d);
    l2_normalize_backward(&tp.in.q_raw[at], &tp.dq[at], d, &dq_raw[size_t(r * d)]);
    l2_normalize_backward(&tp.in.k_raw[at], &tp.dk[at], d, &dk_raw[size_t(r * d)]);
  }
  const float* xr = x + r0 * d_;
  float* dxr = dx + r0 * d_;
  ops::linear_backward(xr, n, d_, w_.q, HD, dq_raw.data(), dxr, accumulate, gs.of(w_.q), nullptr);
  ops::linear_backward(xr, n, d_, w_.k, HD, dk_raw.data(), dxr, true, gs.of(w_.k), nullptr);
  ops::linear_backward(xr, n, d_, w_.v, HD, &tp.dv[size_t(r0 * HD)], dxr, true, gs.of(w_.v), nullptr);
  ops::linear_backward(xr, n, d_, w_.gates, 3 * H, &tp.dgate[size_t(r0 * 3 * H)], dxr, true, gs.of(w_.gates),
                       gs.of(w_.gates_b));
}

void TitansMixer::backward_finish(const Tape& tp, GradSink& gs) const {
  if (float* dmem = gs.of(w_.memory))
    for (size_t i = 0; i < tp.dM.size(); ++i) dmem[i] += tp.dM[i];
}

void TitansMixer::backward(const float* x, int64_t T, const float* dy, float* dx, GradSink& gs) const {
  if (T == 0) return;
  Tape tp;
  record(x, T, tp);
  backward_output(tp, dy, gs);
  for (int64_t c = tp.nch - 1; c >= 0; --c) backward_chunk(tp, c);
  backward_finish(tp, gs);
  backward_inputs(x, tp, 0, T, dx, false, gs);
}

// The read of memory as context up to the retrievals: q_raw = Wq x, q = q_raw normalised per
// head, o = M(q) per head ([T][H d] each, written).
void TitansMixer::read_heads(const float* x, int64_t T, const float* Wq, const float* M, float* q_raw,
                             float* q, float* o) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size();
  ops::linear(x, T, d_, Wq, HD, nullptr, q_raw);
  std::copy(q_raw, q_raw + T * HD, q);
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    Vec tmp = zeros(net_.scratch());
    for (int64_t t = 0; t < T; ++t) {
      float* qt = q + t * HD + h * d;
      l2_normalize(qt, d);
      net_.apply(M + h * P, qt, o + t * HD + h * d, tmp.data());
    }
  }
}

// h = out(norm(M(normalize(Wq x)))) with a given memory, no update.
void TitansMixer::read(const float* x, int64_t T, const float* Wq, const float* M, float* h) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d;
  Vec q_raw = zeros(T * HD), q = zeros(T * HD), o = zeros(T * HD);
  read_heads(x, T, Wq, M, q_raw.data(), q.data(), o.data());
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * H, d, o.data());
  ops::linear(o.data(), T, HD, w_.out, d_, nullptr, h);
}

void TitansMixer::read_backward(const float* x, int64_t T, const float* Wq, const float* M, const float* dh,
                                float* dx, float* dM, GradSink& gs) const {
  const int64_t H = s_.n_heads, d = s_.head_dim, HD = H * d, P = net_.size();
  Vec q_raw = zeros(T * HD), q = zeros(T * HD), o = zeros(T * HD), on = zeros(T * HD), don = zeros(T * HD),
      dO = zeros(T * HD), dq = zeros(T * HD);
  read_heads(x, T, Wq, M, q_raw.data(), q.data(), o.data());
  ops::rmsnorm(o.data(), w_.norm, float(s_.norm_eps), T * H, d, on.data());
  ops::linear_backward(on.data(), T, HD, w_.out, d_, dh, don.data(), false, gs.of(w_.out), nullptr);
  ops::rmsnorm_backward(o.data(), w_.norm, float(s_.norm_eps), T * H, d, don.data(), dO.data(), false,
                        gs.of(w_.norm));
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    Vec tmp = zeros(net_.scratch());
    for (int64_t t = 0; t < T; ++t) {
      const size_t at = size_t(t * HD + h * d);
      net_.apply_backward(M + h * P, &q[at], &dO[at], dM + h * P, &dq[at], tmp.data());
    }
  }
  for (int64_t r = 0; r < T * H; ++r)
    l2_normalize_backward(&q_raw[size_t(r * d)], &dq[size_t(r * d)], d, &o[size_t(r * d)]);
  ops::linear_backward(x, T, d_, Wq, HD, o.data(), dx, true, gs.of(Wq), nullptr);
}

}  // namespace braid
