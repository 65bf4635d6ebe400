// Training parity with Hugging Face transformers: the loss (mean next-token
// cross-entropy with labels = input_ids) and the gradient of every parameter, against
// grads.safetensors of each fixture family whose mixers have a backward pass.
#include <gtest/gtest.h>

#include <cmath>

#include "fixtures.hpp"
#include "import/load.hpp"
#include "io/safetensors.hpp"
#include "model/grads.hpp"

using namespace braid;

namespace {

class GradParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GradParity, LossAndEveryGradient) {
  REQUIRE_FIXTURES();
  const std::string dir = hf_fixture(GetParam());
  std::unique_ptr<Model> model = load_model(dir);
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  auto grads_file = SafetensorsFile::open(dir + "/grads.safetensors");
  Tensor ids_t = ref->get("input_ids");
  std::vector<int32_t> ids(ids_t.data<int32_t>(), ids_t.data<int32_t>() + ids_t.numel());
  const int64_t T = int64_t(ids.size());
  std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(-1);
  Gradients g(*model);
  LossSum loss = model->loss_and_grad(ids.data(), targets.data(), T, 1.0f / float(T - 1), g);
  ASSERT_EQ(loss.count, T - 1);
  const float want_loss = grads_file->get("loss").f32()[0];
  EXPECT_NEAR(loss.sum / double(loss.count), want_loss, 1e-5 * std::max(1.0f, want_loss));
  Weights want = load_param_tensors(dir, dir + "/grads.safetensors", "grad.");
  ASSERT_EQ(want.size(), g.by_name().size());
  for (const auto& [name, got] : g.by_name()) {
    const Tensor w = want.at(name).to_f32();
    ASSERT_EQ(size_t(w.numel()), got.size()) << name;
    // Tolerance from the reference gradient's own scale: f32 sums over the sequence
    // and the width leave errors a small fraction of the largest entry.
    double ref_max = 0, err = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ref_max = std::max(ref_max, std::abs(double(w.f32()[i])));
      err = std::max(err, std::abs(double(got[i]) - w.f32()[i]));
    }
    EXPECT_LE(err, 1e-4 * ref_max + 1e-7)
        << GetParam() << " " << name << " (largest |grad| " << ref_max << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Families, GradParity,
                         ::testing::Values("llama", "qwen3", "lfm2", "mamba", "falcon_mamba", "jamba",
                                           "qwen3_next", "mamba2", "bamba", "nemotron_h", "granitemoehybrid",
                                           "falcon_h1", "minimax", "recurrent_gemma", "rwkv", "xlstm"));

}  // namespace
