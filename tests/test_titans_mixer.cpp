// Titans memory mixer: one call, token by token and uneven calls against a naive per-token
// reference in double (memory depth 1 and 2, chunked gradients, the sliding-window rule);
// the memory network's test-time gradient against finite differences of its loss.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "grad_check.hpp"
#include "mixer_forms.hpp"
#include "mixers/titans.hpp"

using namespace braid;

namespace {

using Dvec = std::vector<double>;

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// M(x) and grad_M ||M(k) - v||^2 in double, written out per depth.
struct NaiveNet {
  int64_t d, m, depth;
  Dvec apply(const Dvec& M, const double* x) const {
    Dvec y(static_cast<size_t>(d), 0.0);
    if (depth == 1) {
      for (int64_t r = 0; r < d; ++r)
        for (int64_t c = 0; c < d; ++c) y[size_t(r)] += M[size_t(r * d + c)] * x[c];
      return y;
    }
    Dvec h(static_cast<size_t>(m), 0.0);
    for (int64_t r = 0; r < m; ++r) {
      double a = 0;
      for (int64_t c = 0; c < d; ++c) a += M[size_t(r * d + c)] * x[c];
      h[size_t(r)] = a * sig(a);
    }
    for (int64_t r = 0; r < d; ++r)
      for (int64_t c = 0; c < m; ++c) y[size_t(r)] += M[size_t(m * d + r * m + c)] * h[size_t(c)];
    return y;
  }
  Dvec grad(const Dvec& M, const double* k, const double* v) const {
    Dvec U(M.size(), 0.0);
    if (depth == 1) {
      const Dvec o = apply(M, k);
      for (int64_t r = 0; r < d; ++r)
        for (int64_t c = 0; c < d; ++c) U[size_t(r * d + c)] = 2 * (o[size_t(r)] - v[r]) * k[c];
      return U;
    }
    Dvec a(static_cast<size_t>(m), 0.0), h(static_cast<size_t>(m)), e(static_cast<size_t>(d), 0.0);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < d; ++c) a[size_t(r)] += M[size_t(r * d + c)] * k[c];
      h[size_t(r)] = a[size_t(r)] * sig(a[size_t(r)]);
    }
    for (int64_t r = 0; r < d; ++r) {
      for (int64_t c = 0; c < m; ++c) e[size_t(r)] += M[size_t(m * d + r * m + c)] * h[size_t(c)];
      e[size_t(r)] = 2 * (e[size_t(r)] - v[r]);
    }
    for (int64_t r = 0; r < d; ++r)
      for (int64_t c = 0; c < m; ++c) U[size_t(m * d + r * m + c)] = e[size_t(r)] * h[size_t(c)];
    for (int64_t c = 0; c < m; ++c) {
      double back = 0;
      for (int64_t r = 0; r < d; ++r) back += M[size_t(m * d + r * m + c)] * e[size_t(r)];
      const double s = sig(a[size_t(c)]), ds = s * (1 + a[size_t(c)] * (1 - s));
      for (int64_t j = 0; j < d; ++j) U[size_t(c * d + j)] = back * ds * k[j];
    }
    return U;
  }
};

struct Case {
  int64_t H, d, depth, hidden, chunk, window, T;
  double clip = 0;  // max_grad_norm
};

class TitansForms : public ::testing::TestWithParam<Case> {};

TEST_P(TitansForms, MatchTheNaiveRecurrence) {
  const Case c = GetParam();
  const int64_t D = 12, H = c.H, d = c.d, HD = H * d, T = c.T;
  TitansSpec s;
  s.n_heads = H, s.head_dim = d, s.depth = c.depth, s.hidden = c.hidden, s.chunk = c.chunk,
  s.window = c.window, s.max_lr = 0.3, s.max_grad_norm = c.clip;
  MemoryNet net;
  net.d = d, net.m = c.hidden, net.depth = c.depth;
  const int64_t P = net.size();
  Rng r(21);
  auto wq = randn(HD * D, r, 0.4), wk = randn(HD * D, r, 0.4), wv = randn(HD * D, r, 0.4),
       wg = randn(3 * H * D, r, 0.4), bg = randn(3 * H, r, 0.5), mem = randn(H * P, r, 0.3),
       norm = randn(d, r, 0.2, 1.0), out = randn(D * HD, r, 0.3), x = randn(T * D, r, 1.0);
  TitansMixer mix(
      s, D, {wq.data(), wk.data(), wv.data(), wg.data(), bg.data(), mem.data(), norm.data(), out.data()});

  // Naive reference in double.
  auto proj = [&](const std::vector<float>& W, int64_t rows, int64_t t, int64_t row) {
    double a = 0;
    for (int64_t j = 0; j < D; ++j) a += double(W[size_t(row * D + j)]) * x[size_t(t * D + j)];
    (void)rows;
    return a;
  };
  std::vector<Dvec> q(static_cast<size_t>(T), Dvec(static_cast<size_t>(HD))), k = q, v = q;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < HD; ++i)
      q[size_t(t)][size_t(i)] = proj(wq, HD, t, i), k[size_t(t)][size_t(i)] = proj(wk, HD, t, i),
      v[size_t(t)][size_t(i)] = proj(wv, HD, t, i);
    for (Dvec* z : {&q[size_t(t)], &k[size_t(t)]})
      for (int64_t h = 0; h < H; ++h) {
        double n2 = 0;
        for (int64_t i = 0; i < d; ++i) n2 += (*z)[size_t(h * d + i)] * (*z)[size_t(h * d + i)];
        for (int64_t i = 0; i < d; ++i) (*z)[size_t(h * d + i)] /= std::sqrt(n2 + 1e-6);
      }
  }
  const NaiveNet nn{d, c.hidden, c.depth};
  std::vector<double> o(static_cast<size_t>(T * HD));
  int64_t clipped = 0;
  for (int64_t h = 0; h < H; ++h) {
    Dvec M(mem.begin() + h * P, mem.begin() + (h + 1) * P), S(static_cast<size_t>(P), 0.0), M0 = M;
    for (int64_t t = 0; t < T; ++t) {
      if (t % c.chunk == 0) M0 = M;
      Dvec U(static_cast<size_t>(P), 0.0);
      for (int64_t j = std::max<int64_t>(0, t - c.window + 1); j <= t; ++j) {
        const Dvec u = nn.grad(M0, &k[size_t(j)][size_t(h * d)], &v[size_t(j)][size_t(h * d)]);
        for (int64_t i = 0; i < P; ++i) U[size_t(i)] += u[size_t(i)];
      }
      double n2 = 0;
      for (double e : U) n2 += e * e;
      if (c.clip > 0 && std::sqrt(n2) > c.clip) {
        ++clipped;
        for (double& e : U) e *= c.clip / std::sqrt(n2);
      }
      const double alpha = sig(proj(wg, 0, t, h) + bg[size_t(h)]),
                   eta = sig(proj(wg, 0, t, H + h) + bg[size_t(H + h)]),
                   theta = 0.3 * sig(proj(wg, 0, t, 2 * H + h) + bg[size_t(2 * H + h)]);
      for (int64_t i = 0; i < P; ++i) {
        S[size_t(i)] = eta * S[size_t(i)] - theta * U[size_t(i)];
        M[size_t(i)] = (1 - alpha) * M[size_t(i)] + S[size_t(i)];
      }
      const Dvec y = nn.apply(M, &q[size_t(t)][size_t(h * d)]);
      double ms = 0;
      for (double e : y) ms += e * e;
      const double inv = 1.0 / std::sqrt(ms / double(d) + s.norm_eps);
      for (int64_t i = 0; i < d; ++i) o[size_t(t * HD + h * d + i)] = y[size_t(i)] * inv * norm[size_t(i)];
    }
  }
  std::vector<double> ref(static_cast<size_t>(T * D), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r2 = 0; r2 < D; ++r2)
      for (int64_t i = 0; i < HD; ++i)
        ref[size_t(t * D + r2)] += double(out[size_t(r2 * HD + i)]) * o[size_t(t * HD + i)];

  if (c.clip > 0) {  // the case exercises both sides of the rescaling
    EXPECT_GT(clipped, 0);
    EXPECT_LT(clipped, H * T);
  }
  const FormErrors e = run_three_forms(mix, x, T, D, ref);
  expect_forms_match(e);
  EXPECT_EQ(e.position, T);
  EXPECT_EQ(e.state_bytes, mix.fixed_state_bytes());
}

INSTANTIATE_TEST_SUITE_P(Layouts, TitansForms,
                         ::testing::Values(Case{2, 4, 1, 0, 4, 1, 13},         // linear memory, chunks of 4
                                           Case{1, 6, 2, 8, 5, 1, 17},         // MLP memory
                                           Case{2, 4, 2, 6, 3, 4, 14},         // sliding window over chunks
                                           Case{1, 4, 1, 0, 1, 2, 9},          // per-token gradients
                                           Case{2, 4, 2, 6, 3, 2, 14, 0.6}));  // clipped gradients

// The memory's test-time gradient and its backward, against finite differences.
TEST(TitansMemoryNet, GradientAndItsBackwardMatchFiniteDifferences) {
  for (int64_t depth : {1, 2}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    MemoryNet net;
    net.d = 5, net.m = depth == 2 ? 7 : 0, net.depth = depth;
    Rng r(3);
    auto M = randn(size_t(net.size()), r, 0.5), k = randn(5, r, 0.6), v = randn(5, r, 0.6),
         R = randn(size_t(net.size()), r, 1.0);
    std::vector<float> tmp(size_t(net.scratch()));
    // grad_M of l(M) = ||M(k) - v||^2 against differences of l.
    std::vector<float> U(size_t(net.size()), 0.0f);
    net.grad(M.data(), k.data(), v.data(), 1.0f, U.data(), tmp.data());
    auto lossM = [&] {
      std::vector<float> y(5);
      net.apply(M.data(), k.data(), y.data(), tmp.data());
      double l = 0;
      for (int i = 0; i < 5; ++i)
        l += (double(y[size_t(i)]) - v[size_t(i)]) * (double(y[size_t(i)]) - v[size_t(i)]);
      return l;
    };
    expect_grads_match(lossM, {{"M", &M, &U}}, 40, 1e-2);
    // grad_backward: gradients of R . u(M, k, v).
    std::vector<float> dM(M.size(), 0.0f), dk(5, 0.0f), dv(5, 0.0f);
    net.grad_backward(M.data(), k.data(), v.data(), R.data(), dM.data(), dk.data(), dv.data(), tmp.data());
    auto lossU = [&] {
      std::vector<float> u(M.size(), 0.0f);
      net.grad(M.data(), k.data(), v.data(), 1.0f, u.data(), tmp.data());
      return weighted_sum(u, R);
    };
    expect_grads_match(lossU, {{"M", &M, &dM}, {"k", &k, &dk}, {"v", &v, &dv}}, 40, 1e-2);
    // apply_backward: gradients of R[:d] . M(k).
    std::vector<float> R5(R.begin(), R.begin() + 5), aM(M.size(), 0.0f), ak(5, 0.0f);
    net.apply_backward(M.data(), k.data(), R5.data(), aM.data(), ak.data(), tmp.data());
    auto lossY = [&] {
      std::vector<float> y(5);
      net.apply(M.data(), k.data(), y.data(), tmp.data());
      return weighted_sum(y, R5);
    };
    expect_grads_match(lossY, {{"M", &M, &aM}, {"k", &k, &ak}}, 40, 1e-2);
  }
}

}  // namespace
