// xLSTMForCausalLM (xLSTM-7B style): num_blocks pre-norm blocks of an mLSTM layer and a
// gated SiLU feed-forward, RMSNorms, soft-capped gate pre-activations and logits.
#include <cmath>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_xlstm(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "norm_eps", 1e-6, false, &s);
  check(cfg.get_int("embedding_dim", s.d_model) == s.d_model, cfg.where(),
        ": embedding_dim must equal hidden_size");
  const std::string mode = cfg.get_string("weight_mode", "single");
  check(mode == "single", cfg.where(), ": weight_mode '", mode, "' is not supported (single)");
  check(!cfg.get_bool("use_bias", false), cfg.where(), ": use_bias = true is not supported");
  if (cfg.has("output_logit_soft_cap") && !cfg.raw()["output_logit_soft_cap"].is_null())
    s.logits_soft_cap = cfg.get_float("output_logit_soft_cap");

  MlstmSpec m;
  m.n_heads = cfg.get_int("num_heads");
  check(m.n_heads > 0, cfg.where(), ": num_heads must be positive");
  m.qk_dim = int64_t(double(s.d_model) * cfg.get_float("qk_dim_factor", 0.5));
  m.v_dim = int64_t(double(s.d_model) * cfg.get_float("v_dim_factor", 1.0));
  if (cfg.has("gate_soft_cap") && !cfg.raw()["gate_soft_cap"].is_null())
    m.gate_soft_cap = cfg.get_float("gate_soft_cap");
  m.eps = cfg.get_float("eps", 1e-6);
  m.norm_eps = s.norm_eps;

  MlpSpec mlp;
  const double up = double(s.d_model) * cfg.get_float("ffn_proj_factor", 2.667);
  const int64_t mult = cfg.get_positive_int("ffn_round_up_to_multiple_of", 64);
  check(mult > 0, cfg.where(), ": ffn_round_up_to_multiple_of must be positive");
  mlp.hidden = int64_t(std::floor((up + double(mult) - 1) / double(mult))) * mult;
  mlp.act = Activation::SiLU;

  const int64_t L = read_layer_count(cfg, "num_blocks");
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    b.mixer = MixerKind::Mlstm;
    b.mlstm = m;
    b.mlp = mlp;
    s.blocks.push_back(b);
  }

  im.tensor_name = tensor_namer({"backbone.embeddings.weight",
                                 "backbone.out_norm.weight",
                                 "lm_head.weight",
                                 "backbone.blocks.{}.",
                                 {{"norm1.weight", "norm_mlstm.weight"},
                                  {"norm2.weight", "norm_ffn.weight"},
                                  {"mlstm.", "mlstm_layer."},
                                  {"mlp.gate_proj.", "ffn.proj_up_gate."},
                                  {"mlp.up_proj.", "ffn.proj_up."},
                                  {"mlp.down_proj.", "ffn.proj_down."}}});
  return im;
}

}  // namespace braid::hf
