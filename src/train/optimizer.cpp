#include "train/optimizer.hpp"

#include <cmath>

#include "core/error.hpp"

namespace braid {

AdamW::AdamW(const Model& model, AdamWConfig c) : c_(c) {
  for (const auto& [name, t] : model.weights()) {
    m_[name].assign(size_t(t.numel()), 0.0f);
    v_[name].assign(size_t(t.numel()), 0.0f);
    rank_[name] = t.rank();
  }
}

bool AdamW::decays(const std::string& name) const {
  if (c_.decay_all) return true;
  return rank_.at(name) >= 2 && name != "embed.weight";
}

void AdamW::step(Model& model, const Gradients& g, double lr) {
  ++t_;
  const double b1 = c_.beta1, b2 = c_.beta2;
  const double c1 = 1.0 - std::pow(b1, double(t_)), c2 = 1.0 - std::pow(b2, double(t_));
  for (const auto& entry : g.by_name()) {
    const auto& name = entry.first;
    const auto& grad = entry.second;  // a plain reference: OpenMP regions cannot capture bindings
    float* p = model.param_mut(name);
    float* m = m_.at(name).data();
    float* v = v_.at(name).data();
    const double wd = decays(name) ? c_.weight_decay : 0.0;
    const int64_t n = int64_t(grad.size());
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const double gi = grad[size_t(i)];
      m[i] = float(b1 * m[i] + (1 - b1) * gi);
      v[i] = float(b2 * v[i] + (1 - b2) * gi * gi);
      const double upd = (m[i] / c1) / (std::sqrt(v[i] / c2) + c_.eps);
      p[i] = float(p[i] - lr * (upd + wd * p[i]));
    }
  }
  model.refresh_derived();
}

double clip_grad_norm(Gradients& g, double max_norm) {
  const double norm = g.global_norm();
  if (max_norm > 0 && norm > max_norm) g.scale(float(max_norm / (norm + 1e-6)));
  return norm;
}

bool parse_decay(const std::string& s, Decay* out) {
  if (s == "cosine") return *out = Decay::Cosine, true;
  if (s == "linear") return *out = Decay::Linear, true;
  if (s == "constant") return *out = Decay::Constant, true;
  return false;
}

double lr_at(const Schedule& s, int64_t step) {
  if (s.warmup > 0 && step <= s.warmup) return s.lr * double(step) / double(s.warmup);
  if (s.decay == Decay::Constant || s.total <= s.warmup) return s.lr;
  const double f = std::min(1.0, double(step - s.warmup) / double(s.total - s.warmup));
  const double shape = s.decay == Decay::Cosine ? 0.5 * (1.0 + std::cos(M_PI * f)) : 1.0 - f;
  return s.min_lr + (s.lr - s.min_lr) * shape;
}

}  // namespace braid
