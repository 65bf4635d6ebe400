#include "model/init.hpp"

#include <cmath>

#include "core/rng.hpp"

namespace braid {

Weights init_weights(const ModelSpec& spec, uint64_t seed, double std) {
  Weights w;
  Rng rng(seed);
  for (const ParamDecl& p : param_decls(spec)) {
    Tensor t = Tensor::zeros(DType::F32, p.shape);
    float* d = t.f32_mut();
    const int64_t n = t.numel();
    switch (p.init) {
      case ParamDecl::Init::Normal:
        for (int64_t i = 0; i < n; ++i) d[i] = float(rng.normal() * std);
        break;
      case ParamDecl::Init::Ones:
        for (int64_t i = 0; i < n; ++i) d[i] = 1.0f;
        break;
      case ParamDecl::Init::Zeros:
        break;
      case ParamDecl::Init::Half:
        for (int64_t i = 0; i < n; ++i) d[i] = 0.5f;
        break;
      case ParamDecl::Init::SsmALog: {  // rows of log(1), log(2), ..., log(N)
        const int64_t N = p.shape.back();
        for (int64_t i = 0; i < n; ++i) d[i] = float(std::log(double(i % N + 1)));
        break;
      }
      case ParamDecl::Init::HeadALog:
        for (int64_t i = 0; i < n; ++i) d[i] = float(std::log(double(i + 1)));
        break;
      case ParamDecl::Init::DtBias:  // softplus^-1(dt), dt log-uniform in [1e-3, 1e-1]
        for (int64_t i = 0; i < n; ++i) {
          const double dt = std::exp(std::log(1e-3) + rng.uniform() * (std::log(1e-1) - std::log(1e-3)));
          d[i] = float(dt + std::log(-std::expm1(-dt)));
        }
        break;
      case ParamDecl::Init::FanIn: {
        const double bound = 1.0 / std::sqrt(double(n / p.shape.front()));
        for (int64_t i = 0; i < n; ++i) d[i] = float((2.0 * rng.uniform() - 1.0) * bound);
        break;
      }
      case ParamDecl::Init::MemoryGates:
        for (int64_t i = 0; i < n / 3; ++i) d[i] = -4.6f;
        break;
    }
    w[p.name] = std::move(t);
  }
  return w;
}

}  // namespace braid
