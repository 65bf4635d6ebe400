// NemotronHForCausalLM: every layer is one of a Mamba-2 mixer, attention (no rotary
// embedding), or an MLP (squared-ReLU, not gated), each as norm -> op -> residual.
// The layer kinds come from layers_block_type or the older hybrid_override_pattern
// ("M" Mamba-2, "*" attention, "-" MLP, "E" MoE).
#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_nemotron_h(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "layer_norm_epsilon", 1e-5, false, &s);

  std::vector<std::string> kinds;
  if (cfg.has("layers_block_type")) {
    kinds = cfg.get_string_list("layers_block_type");
  } else {
    for (char c : cfg.get_string("hybrid_override_pattern"))
      kinds.push_back(c == 'M'   ? "mamba"
                      : c == '*' ? "attention"
                      : c == '-' ? "mlp"
                      : c == 'E' ? "moe"
                                 : std::string(1, c));
  }
  check(!kinds.empty(), cfg.where(), ": no layers in layers_block_type / hybrid_override_pattern");
  if (cfg.has("num_hidden_layers"))  // recent configs derive it from the layer kinds
    check(int64_t(kinds.size()) == cfg.get_int("num_hidden_layers"), cfg.where(), ": ", kinds.size(),
          " layer kinds for num_hidden_layers = ", cfg.get_int("num_hidden_layers"));

  AttentionSpec a;
  a.n_heads = cfg.get_positive_int("num_attention_heads");
  a.n_kv_heads = cfg.get_int("num_key_value_heads", a.n_heads);
  a.head_dim = cfg.get_int("head_dim", s.d_model / a.n_heads);
  a.qkv_bias = a.out_bias = cfg.get_bool("attention_bias", false);
  a.rope.rotary_dim = 0;  // NemotronH attention has no positional encoding

  MlpSpec mlp;
  mlp.hidden = cfg.get_int("intermediate_size");
  mlp.gated = false;
  mlp.bias = cfg.get_bool("mlp_bias", false);
  const std::string act = cfg.get_string("mlp_hidden_act", "relu2");
  check(parse_activation(act, &mlp.act), cfg.where(), ": mlp_hidden_act '", act, "' is not supported");

  Mamba2Spec m;
  m.n_heads = cfg.get_int("mamba_num_heads");
  m.head_dim = cfg.get_int("mamba_head_dim");
  m.d_state = cfg.get_int("ssm_state_size");
  m.n_groups = cfg.get_int("n_groups", 1);
  m.d_conv = cfg.get_int("conv_kernel", 4);
  m.conv_bias = cfg.get_bool("use_conv_bias", true);
  m.proj_bias = cfg.get_bool("mamba_proj_bias", cfg.get_bool("use_bias", false));
  m.norm_eps = s.norm_eps;
  m.chunk = cfg.get_int("chunk_size", 128);
  check(m.n_groups > 0 && m.n_heads % m.n_groups == 0, cfg.where(), ": n_groups ", m.n_groups,
        " must divide mamba_num_heads ", m.n_heads);
  m.norm_group_size = m.d_inner() / m.n_groups;
  const std::string mact = cfg.get_string("mamba_hidden_act", "silu");
  check(mact == "silu", cfg.where(), ": mamba_hidden_act '", mact, "' is not supported (silu only)");
  read_time_step_limit(cfg, &m);

  for (size_t i = 0; i < kinds.size(); ++i) {
    const std::string& k = kinds[i];
    BlockSpec b;
    b.has_mlp = false;
    if (k == "mamba" || k == "linear_attention") {
      b.mixer = MixerKind::Mamba2;
      b.mamba2 = m;
    } else if (k == "attention" || k == "full_attention") {
      b.mixer = MixerKind::Attention;
      b.attn = a;
    } else if (k == "mlp") {
      b.has_mixer = false;
      b.has_mlp = true;
      b.mlp = mlp;
    } else {
      fail(cfg.where(), ": layer ", i, " is of kind '", k,
           "', which braid does not support for nemotron_h yet (supported: mamba, attention, mlp)");
    }
    s.blocks.push_back(b);
  }
  s.hidden_states_from_embedding = true;

  // One norm per layer, and every op (attention, Mamba-2, MLP) lives under "mixer.".
  im.tensor_name = tensor_namer({"backbone.embeddings.weight",
                                 "backbone.norm_f.weight",
                                 "lm_head.weight",
                                 "backbone.layers.{}.",
                                 {{"norm1.weight", "norm.weight"},
                                  {"norm2.weight", "norm.weight"},
                                  {"attn.", "mixer."},
                                  {"mamba2.", "mixer."},
                                  {"mlp.", "mixer."}}});

  return im;
}

}  // namespace braid::hf
