// RwkvForCausalLM (RWKV-4): LayerNorm blocks of time mixing (token shift + WKV) and
// channel mixing (token shift + squared-ReLU MLP gated by sigmoid(r)); block 0 also
// normalises the embeddings. Like transformers at inference, every rescale_every layers
// the residual stream is halved and the layers' output projections scaled to match.
#include <cmath>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

Import import_rwkv(const JsonObject& cfg) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "layer_norm_epsilon", 1e-5, false, &s);
  s.max_context = cfg.get_int("context_length", 0);
  s.norm_kind = NormKind::Layer;
  s.embed_norm = true;
  s.final_norm_eps = 1e-5;  // ln_out keeps torch's default epsilon
  s.hidden_states_from_embedding = false;

  const int64_t L = read_layer_count(cfg);
  const int64_t A = cfg.has("attention_hidden_size") && !cfg.raw()["attention_hidden_size"].is_null()
                        ? cfg.get_int("attention_hidden_size")
                        : s.d_model;
  const int64_t F = cfg.has("intermediate_size") && !cfg.raw()["intermediate_size"].is_null()
                        ? cfg.get_int("intermediate_size")
                        : 4 * s.d_model;
  const int64_t R = cfg.get_int("rescale_every", 0);
  check(R >= 0, cfg.where(), ": rescale_every must be >= 0");
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    b.mixer = MixerKind::Rwkv4;
    b.rwkv.attn_dim = A;
    b.has_mlp = false;
    b.has_cmix = true;
    b.cmix.hidden = F;
    if (R > 0) {
      b.rwkv.out_scale = b.cmix.out_scale = std::ldexp(1.0, -int(i / R));
      if ((i + 1) % R == 0) b.post_scale = 0.5;
    }
    s.blocks.push_back(b);
  }

  im.tensor_name = tensor_namer({"rwkv.embeddings.weight",
                                 "rwkv.ln_out.weight",
                                 "head.weight",
                                 "rwkv.blocks.{}.",
                                 {{"norm1.", "ln1."},
                                  {"norm2.", "ln2."},
                                  {"rwkv.time_mix_k", "attention.time_mix_key"},
                                  {"rwkv.time_mix_v", "attention.time_mix_value"},
                                  {"rwkv.time_mix_r", "attention.time_mix_receptance"},
                                  {"rwkv.", "attention."},
                                  {"cmix.time_mix_k", "feed_forward.time_mix_key"},
                                  {"cmix.time_mix_r", "feed_forward.time_mix_receptance"},
                                  {"cmix.", "feed_forward."}},
                                 {{"final_norm.bias", "rwkv.ln_out.bias"},
                                  {"embed_norm.weight", "rwkv.blocks.0.pre_ln.weight"},
                                  {"embed_norm.bias", "rwkv.blocks.0.pre_ln.bias"}}});
  return im;
}

}  // namespace braid::hf
