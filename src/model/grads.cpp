#include "model/grads.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace braid {

Gradients::Gradients(const Model& m) {
  for (const auto& [name, t] : m.weights()) g_[name].assign(size_t(t.numel()), 0.0f);
  for (const auto& [addr, name] : m.param_addresses()) by_addr_[addr] = g_.at(name).data();
}

float* Gradients::of(const float* weight) {
  if (!weight) return nullptr;
  auto it = by_addr_.find(weight);
  check(it != by_addr_.end(), "gradient requested for a weight that is not a model parameter");
  return it->second;
}

float* Gradients::of(const std::string& name) {
  auto it = g_.find(name);
  check(it != g_.end(), "no gradient for parameter '", name, "'");
  return it->second.data();
}

void Gradients::zero() {
  for (auto& kv : g_) std::fill(kv.second.begin(), kv.second.end(), 0.0f);
}

void Gradients::add(const Gradients& other) {
  check(other.g_.size() == g_.size(), "adding gradients of a different model");
  auto it = other.g_.begin();
  for (auto& [name, v] : g_) {
    const std::vector<float>& o = (it++)->second;
    check(o.size() == v.size(), "adding gradients of a different model (", name, ")");
    for (size_t i = 0; i < v.size(); ++i) v[i] += o[i];
  }
}

void Gradients::scale(float s) {
  for (auto& kv : g_)
    for (float& v : kv.second) v *= s;
}

double Gradients::global_norm() const {
  double ss = 0;
  for (const auto& kv : g_)
    for (float v : kv.second) ss += double(v) * v;
  return std::sqrt(ss);
}

}  // namespace braid
