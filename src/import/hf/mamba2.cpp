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
  s.family = cfg.get_string("model_type");
  s.vocab_size = cfg.get_int("vocab_size");
  s.d_model = cfg.get_int("hidden_size");
  s.norm_eps = cfg.get_float("layer_norm_epsilon", 1e-5);
  s.tie_embeddings = cfg.get_bool("tie_word_embeddings", false);
  s.hidden_states_from_embedding = false;
  auto bos = read_token_ids(cfg, "bos_token_id");
  s.bos_token_id = bos.empty() ? -1 : bos[0];
  s.eos_token_ids = read_token_ids(cfg, "eos_token_id");
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

  const int64_t L = cfg.get_int("num_hidden_layers");
  check(L > 0, cfg.where(), ": num_hidden_layers must be positive, found ", L);
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    b.mixer = MixerKind::Mamba2;
    b.mamba2 = m;
    b.has_mlp = false;
    s.blocks.push_back(b);
  }
  im.tensor_name = [](const std::string& c) -> std::string {
    if (c == "embed.weight") return "backbone.embeddings.weight";
    if (c == "final_norm.weight") return "backbone.norm_f.weight";
    if (c == "lm_head.weight") return "lm_head.weight";
    const size_t dot = c.find('.', 7);
    const std::string n = c.substr(7, dot - 7), rest = c.substr(dot + 1);
    const std::string pre = "backbone.layers." + n + ".";
    if (rest == "norm1.weight") return pre + "norm.weight";
    if (rest.rfind("mamba2.", 0) == 0) return pre + "mixer." + rest.substr(7);
    return pre + rest;
  };
  return im;
}

}  // namespace braid::hf
