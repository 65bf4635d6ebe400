// MambaForCausalLM and FalconMambaForCausalLM: blocks of RMSNorm -> Mamba-1 mixer ->
// residual (no MLP), names under backbone.layers.N. FalconMamba adds a weightless
// RMSNorm on B, C and dt (mixer_rms_eps).
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

namespace {

Import import_mamba_family(const JsonObject& cfg, bool falcon) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "layer_norm_epsilon", 1e-5, true, &s);
  s.hidden_states_from_embedding = false;
  const std::string act = cfg.get_string("hidden_act", "silu");
  check(act == "silu", cfg.where(), ": hidden_act '", act, "' is not supported for mamba (silu only)");

  MambaSpec m;
  m.d_inner = cfg.get_int("intermediate_size", cfg.get_int("expand", 2) * s.d_model);
  m.d_state = cfg.get_int("state_size");
  m.d_conv = cfg.get_int("conv_kernel");
  m.dt_rank = cfg.has("time_step_rank") && cfg.raw()["time_step_rank"].is_string()
                  ? (s.d_model + 15) / 16  // "auto"
                  : cfg.get_int("time_step_rank", (s.d_model + 15) / 16);
  m.conv_bias = cfg.get_bool("use_conv_bias", true);
  m.proj_bias = cfg.get_bool("use_bias", false);
  if (falcon) m.bcdt_norm_eps = cfg.get_float("mixer_rms_eps", 1e-6);

  BlockSpec b;
  b.mixer = MixerKind::Mamba;
  b.mamba = m;
  b.has_mlp = false;
  s.blocks = repeat_block(cfg, b);
  im.tensor_name = tensor_namer({"backbone.embeddings.weight",
                                 "backbone.norm_f.weight",
                                 "lm_head.weight",
                                 "backbone.layers.{}.",
                                 {{"norm1.weight", "norm.weight"}, {"mamba.", "mixer."}}});

  return im;
}

}  // namespace

Import import_mamba(const JsonObject& cfg) { return import_mamba_family(cfg, false); }
Import import_falcon_mamba(const JsonObject& cfg) { return import_mamba_family(cfg, true); }

}  // namespace braid::hf
