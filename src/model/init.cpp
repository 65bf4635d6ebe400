#include "model/init.hpp"

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
    }
    w[p.name] = std::move(t);
  }
  return w;
}

}  // namespace braid
