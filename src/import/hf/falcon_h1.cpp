// FalconH1ForCausalLM: every block runs grouped-query attention and a Mamba-2 mixer side
// by side on the same normed input and adds their outputs, then a gated MLP. The family's
// muP-style multipliers (embedding, attention/SSM in and out, keys, the five in_proj
// sections of the SSM, MLP gate and down, LM head) become spec fields.
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

namespace {

std::vector<double> read_multipliers(const JsonObject& cfg, const std::string& key, size_t n) {
  std::vector<double> v(n, 1.0);
  if (!cfg.has(key)) return v;
  const json& a = cfg.raw()[key];
  check(a.is_array() && a.size() == n, cfg.where(), ": ", key, " must be a list of ", n, " numbers");
  for (size_t i = 0; i < n; ++i) v[i] = json_to_double(a[i], cfg.where() + ": " + key);
  return v;
}

}  // namespace

Import import_falcon_h1(const JsonObject& cfg) {
  Import im = import_llama_like(cfg, {});
  ModelSpec& s = im.spec;

  Mamba2Spec m = read_prefixed_mamba2(cfg, s.norm_eps, /*grouped_norm=*/true);
  check(cfg.get_bool("projectors_bias", false) == m.proj_bias, cfg.where(),
        ": mamba_proj_bias and projectors_bias differ, which braid does not support");
  if (!cfg.get_bool("mamba_rms_norm", false))
    m.norm = Mamba2Norm::GateOnly;
  else
    m.norm =
        cfg.get_bool("mamba_norm_before_gate", true) ? Mamba2Norm::NormThenGate : Mamba2Norm::GateThenNorm;
  const std::vector<double> ssm = read_multipliers(cfg, "ssm_multipliers", 5);
  for (size_t i = 0; i < 5; ++i) m.proj_multipliers[i] = ssm[i];
  const std::vector<double> mlp = read_multipliers(cfg, "mlp_multipliers", 2);

  for (BlockSpec& b : s.blocks) {
    b.attn.key_multiplier = cfg.get_float("key_multiplier", 1.0);
    b.has_parallel = true;
    b.parallel = MixerKind::Mamba2;
    b.mamba2 = m;
    b.mixer_in_scale = cfg.get_float("attention_in_multiplier", 1.0);
    b.mixer_out_scale = cfg.get_float("attention_out_multiplier", 1.0);
    b.parallel_in_scale = cfg.get_float("ssm_in_multiplier", 1.0);
    b.parallel_out_scale = cfg.get_float("ssm_out_multiplier", 1.0);
    b.mlp.gate_multiplier = mlp[0];
    b.mlp.down_multiplier = mlp[1];
  }
  s.embedding_multiplier = cfg.get_float("embedding_multiplier", 1.0);
  const double head = cfg.get_float("lm_head_multiplier", 1.0);
  check(head != 0, cfg.where(), ": lm_head_multiplier must not be zero");
  s.logits_scaling = 1.0 / head;

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.final_layernorm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "input_layernorm.weight"},
                                  {"norm2.weight", "pre_ff_layernorm.weight"},
                                  {"attn.", "self_attn."},
                                  {"mamba2.", "mamba."},
                                  {"mlp.", "feed_forward."}}});
  return im;
}

}  // namespace braid::hf
