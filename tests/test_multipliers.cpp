// Scalar multipliers (Falcon-H1's muP factors) must act exactly like the same factors
// folded into the weights: a model with multipliers and the original weights gives the
// logits of a model without multipliers whose weights were scaled by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "fixtures.hpp"
#include "import/load.hpp"
#include "runtime/session.hpp"

using namespace braid;

namespace {

Tensor scaled_copy(const Tensor& t, float m, int64_t row_begin = 0, int64_t row_end = -1) {
  Tensor c = Tensor::zeros(DType::F32, t.shape());
  std::memcpy(c.f32_mut(), t.f32(), t.nbytes());
  const int64_t cols = t.numel() / t.shape()[0];
  if (row_end < 0) row_end = t.shape()[0];
  float* d = c.f32_mut();
  for (int64_t i = row_begin * cols; i < row_end * cols; ++i) d[i] *= m;
  return c;
}

std::vector<float> logits_of(std::shared_ptr<const Model> m, const std::vector<int32_t>& ids) {
  Session s(std::move(m));
  return s.feed_all(ids.data(), int64_t(ids.size()));
}

}  // namespace

TEST(Multipliers, FalconH1MultipliersEqualFoldedWeights) {
  REQUIRE_FIXTURES();
  std::shared_ptr<const Model> base = load_model(hf_fixture("falcon_h1"));
  ModelSpec ms = base->spec();
  const double key = 1.5, ain = 0.7, aout = 1.3, sin = 0.8, sout = 1.2, gate = 0.6, down = 1.4, emb = 2.0,
               head = 0.5;
  const double sec[5] = {0.9, 1.1, 1.2, 0.8, 1.05};
  ms.embedding_multiplier = emb;
  ms.logits_scaling = 1.0 / head;
  for (BlockSpec& b : ms.blocks) {
    b.attn.key_multiplier = key;
    b.mixer_in_scale = ain;
    b.mixer_out_scale = aout;
    b.parallel_in_scale = sin;
    b.parallel_out_scale = sout;
    for (int i = 0; i < 5; ++i) b.mamba2.proj_multipliers[size_t(i)] = sec[i];
    b.mlp.gate_multiplier = gate;
    b.mlp.down_multiplier = down;
  }
  auto with_multipliers = std::make_shared<Model>(ms, base->weights(), "test");

  Weights folded = base->weights();
  folded["embed.weight"] = scaled_copy(folded["embed.weight"], float(emb));
  folded["lm_head.weight"] = scaled_copy(folded["lm_head.weight"], float(head));
  for (size_t i = 0; i < ms.blocks.size(); ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const Mamba2Spec& m = ms.blocks[i].mamba2;
    auto& q = folded[p + "attn.q_proj.weight"];
    q = scaled_copy(q, float(ain));
    auto& k = folded[p + "attn.k_proj.weight"];
    k = scaled_copy(k, float(ain * key));
    auto& v = folded[p + "attn.v_proj.weight"];
    v = scaled_copy(v, float(ain));
    auto& o = folded[p + "attn.o_proj.weight"];
    o = scaled_copy(o, float(aout));
    const int64_t Di = m.d_inner(), GN = m.n_groups * m.d_state;
    const int64_t bounds[6] = {0, Di, 2 * Di, 2 * Di + GN, 2 * Di + 2 * GN, 2 * Di + 2 * GN + m.n_heads};
    auto& in = folded[p + "mamba2.in_proj.weight"];
    for (int s = 0; s < 5; ++s) in = scaled_copy(in, float(sin * sec[s]), bounds[s], bounds[s + 1]);
    auto& out = folded[p + "mamba2.out_proj.weight"];
    out = scaled_copy(out, float(sout));
    auto& g = folded[p + "mlp.gate_proj.weight"];
    g = scaled_copy(g, float(gate));
    auto& d = folded[p + "mlp.down_proj.weight"];
    d = scaled_copy(d, float(down));
  }
  auto by_hand = std::make_shared<Model>(base->spec(), folded, "test");

  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(int32_t((i * 37 + 5) % base->spec().vocab_size));
  const std::vector<float> a = logits_of(with_multipliers, ids), b = logits_of(by_hand, ids),
                           plain = logits_of(base, ids);
  double err = 0, scale = 0, moved = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
    moved = std::max(moved, double(std::abs(a[i] - plain[i])));
  }
  EXPECT_LE(err, 1e-5 * scale);
  EXPECT_GT(moved, 1e-2 * scale) << "the multipliers should change the logits";
}
