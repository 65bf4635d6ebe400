// Gradient buffers for every parameter of a Model, found by name or by the address the
// forward pass reads the parameter from (what mixers' backward passes use).
#pragma once
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "mixers/mixer.hpp"
#include "model/model.hpp"

namespace braid {

class Gradients final : public GradSink {
 public:
  explicit Gradients(const Model& m);  // zero-filled, one buffer per parameter
  // Moves keep the buffers (and so the address map); a copy would alias them.
  Gradients(Gradients&&) = default;
  Gradients(const Gradients&) = delete;
  Gradients& operator=(const Gradients&) = delete;
  using GradSink::of;
  float* of(const float* weight) override;
  float* of(const std::string& name);
  const std::map<std::string, std::vector<float>>& by_name() const { return g_; }
  void zero();
  // Adds another Gradients of the same model, parameter by parameter.
  void add(const Gradients& other);
  // Multiplies every gradient by s.
  void scale(float s);
  // sqrt of the sum of squares over all gradients (in double).
  double global_norm() const;

 private:
  std::map<std::string, std::vector<float>> g_;
  std::unordered_map<const float*, float*> by_addr_;
};

}  // namespace braid
