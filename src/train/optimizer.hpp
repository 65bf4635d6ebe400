// AdamW with decoupled weight decay, global-norm gradient clipping and learning-rate
// schedules (linear warmup, then cosine, linear or constant).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/grads.hpp"
#include "model/model.hpp"

namespace braid {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  // Decay also vectors (norm weights, biases, per-channel parameters) and embeddings;
  // by default only matrices other than the embedding decay.
  bool decay_all = false;
};

class AdamW {
 public:
  AdamW(const Model& m, AdamWConfig c);
  // p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p) for every parameter; then the
  // model's derived copies are refreshed.
  void step(Model& m, const Gradients& g, double lr);
  bool decays(const std::string& name) const;
  int64_t steps() const { return t_; }
  // First and second moments by parameter name, and the step count, for checkpoints.
  std::map<std::string, std::vector<float>>& first() { return m_; }
  std::map<std::string, std::vector<float>>& second() { return v_; }
  const std::map<std::string, std::vector<float>>& first() const { return m_; }
  const std::map<std::string, std::vector<float>>& second() const { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig c_;
  std::map<std::string, std::vector<float>> m_, v_;
  std::map<std::string, int> rank_;
  int64_t t_ = 0;
};

// Scales every gradient so their global L2 norm is at most max_norm (<= 0: no clipping);
// returns the norm before clipping.
double clip_grad_norm(Gradients& g, double max_norm);

enum class Decay { Cosine, Linear, Constant };
bool parse_decay(const std::string& s, Decay* out);

struct Schedule {
  double lr = 1e-3, min_lr = 1e-4;
  int64_t warmup = 0, total = 1;
  Decay decay = Decay::Cosine;
};
// Learning rate for 1-based step `step`: linear warmup from lr / warmup to lr over the
// first `warmup` steps, then decay to min_lr at step `total`.
double lr_at(const Schedule& s, int64_t step);

}  // namespace braid
