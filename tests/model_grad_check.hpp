// Whole-model gradient check: Model::loss_and_grad's gradients of every parameter against
// finite differences of the model's own f32 loss, on sampled entries.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "grad_check.hpp"
#include "model/grads.hpp"
#include "model/model.hpp"

// The model's weights must be owned (they are perturbed in place). Through a whole model
// the f32 forward's rounding is a property of the loss, not of one tensor: small tensors
// (A_log, dt_bias) get an absolute floor of 1e-4 of the model's largest gradient entry
// besides the per-tensor 1e-3. `run(g)` computes the loss, adding its gradients into g.
inline void expect_model_grads_match_of(braid::Model& model,
                                        const std::function<double(braid::GradSink&)>& run, int samples,
                                        double eps) {
  using namespace braid;
  Gradients g(model);
  run(g);
  std::vector<GradBuffer> bufs;
  std::vector<std::vector<float>> copies, grads;
  const auto& names = g.by_name();
  copies.reserve(names.size()), grads.reserve(names.size());
  for (const auto& [name, gv] : names) {
    const Tensor& t = model.weights().at(name);
    copies.emplace_back(t.f32(), t.f32() + t.numel());
    grads.push_back(gv);
  }
  size_t i = 0;
  for (const auto& [name, gv] : names) bufs.push_back({name, &copies[i], &grads[i]}), ++i;
  Gradients scratch(model);
  auto loss = [&] {
    size_t j = 0;
    for (const auto& [name, gv] : names) {
      std::copy(copies[j].begin(), copies[j].end(), model.param_mut(name));
      ++j;
    }
    model.refresh_derived();
    return run(scratch);
  };
  double gmax = 0;
  for (const auto& gv : grads)
    for (float v : gv) gmax = std::max(gmax, double(std::abs(v)));
  expect_grads_match(loss, bufs, samples, eps, 1e-4 * gmax);
  loss();  // leave the model with its original weights
}

// The cross-entropy of predicting tgt from tok.
inline void expect_model_grads_match(braid::Model& model, const std::vector<int32_t>& tok,
                                     const std::vector<int32_t>& tgt, int64_t loops = 0, int samples = 6,
                                     double eps = 1e-2) {
  expect_model_grads_match_of(
      model,
      [&](braid::GradSink& g) {
        return model.loss_and_grad(tok.data(), tgt.data(), int64_t(tok.size()), 1.0f, g, loops).sum;
      },
      samples, eps);
}
