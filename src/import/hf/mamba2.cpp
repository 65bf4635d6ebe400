// Mamba2ForCausalLM: blocks of RMSNorm -> Mamba-2 (SSD) mixer -> residual, names under
// backbone.layers.N. transformers normalises the gated output over all d_inner channels
// at once (not per group of d_inner / n_groups as the original kernels do), and the
// fixtures confirm it; braid follows the checkpoint's reference implementation.

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_mamba2(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "layer_norm_epsilon", 1e-5, false, &s);
  s.hidden_states_from_embedding = false;
  const std::string act = cfg.get_string("hidden_act", "silu");
  check(act == "silu", cfg.where(), ": hidden_act '", act, "' is not supported for mamba2 (silu only)");

  Mamba2Spec m;
  m.n_heads = cfg.get_int("num_heads");
  m.head_dim = cfg.get_int("head_dim");
  m.d_state = cfg.get_int("state_size");
  m.n_groups = cfg.get_int("n_groups", 1);
  m.d_conv = cfg.get_int("conv_kernel");
  m.conv_bias = cfg.get_bool("use_conv_bias", true);
  m.proj_bias = cfg.get_bool("use_bias", false);
  m.norm_eps = s.norm_eps;
  const int64_t expand = cfg.get_int("expand", 2);
  check(m.n_heads * m.head_dim == expand * s.d_model, cfg.where(),
        ": num_heads x head_dim = ", m.n_heads * m.head_dim,
        " but expand x hidden_size = ", expand * s.d_model,
        " (checkpoints with an extra MLP branch in in_proj are not supported)");
  check(m.n_groups > 0 && m.n_heads % m.n_groups == 0, cfg.where(), ": n_groups ", m.n_groups,
        " must divide num_heads ", m.n_heads);
  m.norm_group_size = m.d_inner();  // one group: see the note at the top
  read_time_step_limit(cfg, &m);
  m.chunk = cfg.get_int("chunk_size", 64);

  BlockSpec b;
  b.mixer = MixerKind::Mamba2;
  b.mamba2 = m;
  b.has_mlp = false;
  s.blocks = repeat_block(cfg, b);
  im.tensor_name = tensor_namer({"backbone.embeddings.weight",
                                 "backbone.norm_f.weight",
                                 "lm_head.weight",
                                 "backbone.layers.{}.",
                                 {{"norm1.weight", "norm.weight"}, {"mamba2.", "mixer."}}});

  return im;
}

}  // namespace braid::hf
