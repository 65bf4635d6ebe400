#include <cmath>

#include "core/error.hpp"
#include "import/hf/importer.hpp"

namespace braid::hf {

RopeSpec read_rope(const JsonObject& cfg, int64_t head_dim) {
  RopeSpec r;
  double partial = cfg.get_float("partial_rotary_factor", 1.0);
  const json* scaling = nullptr;
  if (cfg.has("rope_parameters")) {
    JsonObject rp = cfg.get_object("rope_parameters");
    r.theta = rp.get_float("rope_theta", cfg.get_float("rope_theta", 10000.0));
    r.type = rp.get_string("rope_type", rp.get_string("type", "default"));
    partial = rp.get_float("partial_rotary_factor", partial);
    scaling = &cfg.raw()["rope_parameters"];
  } else {
    r.theta = cfg.get_float("rope_theta", 10000.0);
    if (cfg.has("rope_scaling")) {
      JsonObject rs = cfg.get_object("rope_scaling");
      r.type = rs.get_string("rope_type", rs.get_string("type", "default"));
      scaling = &cfg.raw()["rope_scaling"];
    }
  }
  if (scaling && r.type != "default") {
    JsonObject s(*scaling, cfg.where() + ": rope scaling");
    r.factor = s.get_float("factor");
    if (r.type == "llama3") {
      r.low_freq_factor = s.get_float("low_freq_factor");
      r.high_freq_factor = s.get_float("high_freq_factor");
      r.original_max_position = s.get_int("original_max_position_embeddings");
    }
  }
  check(r.type == "default" || r.type == "linear" || r.type == "llama3", cfg.where(), ": rope type '", r.type,
        "' is not supported (supported: default, linear, llama3)");
  check(partial > 0 && partial <= 1, cfg.where(), ": partial_rotary_factor ", partial, " must be in (0, 1]");
  r.rotary_dim = int64_t(double(head_dim) * partial);
  r.rotary_dim -= r.rotary_dim % 2;
  return r;
}

void read_time_step_limit(const JsonObject& cfg, Mamba2Spec* m) {
  if (!cfg.has("time_step_limit")) return;
  const json& lim = cfg.raw()["time_step_limit"];
  check(lim.is_array() && lim.size() == 2, cfg.where(), ": time_step_limit must be [min, max]");
  m->dt_min = json_to_double(lim[0], cfg.where() + ": time_step_limit[0]");
  const double mx = json_to_double(lim[1], cfg.where() + ": time_step_limit[1]");
  m->dt_max = std::isinf(mx) ? 0.0 : mx;
}

void read_model_fields(const JsonObject& cfg, const std::string& eps_key, double default_eps,
                       bool default_tie, ModelSpec* s) {
  s->family = cfg.get_string("model_type");
  s->vocab_size = cfg.get_int("vocab_size");
  s->d_model = cfg.get_int("hidden_size");
  s->norm_eps = cfg.get_float(eps_key, default_eps);
  s->tie_embeddings = cfg.get_bool("tie_word_embeddings", default_tie);
  s->max_context = cfg.get_int("max_position_embeddings", 0);
  auto bos = read_token_ids(cfg, "bos_token_id");
  s->bos_token_id = bos.empty() ? -1 : bos[0];
  s->eos_token_ids = read_token_ids(cfg, "eos_token_id");
}

int64_t read_layer_count(const JsonObject& cfg, const std::string& key) {
  const int64_t L = cfg.get_int(key);
  check(L > 0 && L <= kMaxLayers, cfg.where(), ": ", key, " must be between 1 and ", kMaxLayers, ", found ",
        L);
  return L;
}

std::vector<BlockSpec> repeat_block(const JsonObject& cfg, const BlockSpec& b) {
  const int64_t L = read_layer_count(cfg);
  return std::vector<BlockSpec>(size_t(L), b);
}

Mamba2Spec read_prefixed_mamba2(const JsonObject& cfg, double norm_eps, bool grouped_norm) {
  Mamba2Spec m;
  m.n_heads = cfg.get_int("mamba_n_heads");
  m.head_dim = cfg.get_int("mamba_d_head");
  m.d_state = cfg.get_int("mamba_d_state");
  m.n_groups = cfg.get_int("mamba_n_groups", 1);
  m.d_conv = cfg.get_int("mamba_d_conv", 4);
  m.conv_bias = cfg.get_bool("mamba_conv_bias", true);
  m.proj_bias = cfg.get_bool("mamba_proj_bias", false);
  m.norm_eps = norm_eps;
  m.chunk = cfg.get_int("mamba_chunk_size", 256);
  check(m.n_heads > 0 && m.head_dim > 0, cfg.where(), ": mamba_n_heads and mamba_d_head must be positive");
  check(m.n_groups > 0 && m.n_heads % m.n_groups == 0, cfg.where(), ": mamba_n_groups ", m.n_groups,
        " must divide mamba_n_heads ", m.n_heads);
  if (cfg.has("mamba_d_ssm") && !cfg.raw()["mamba_d_ssm"].is_null()) {
    check(m.d_inner() == cfg.get_int("mamba_d_ssm"), cfg.where(),
          ": mamba_n_heads x mamba_d_head = ", m.d_inner(),
          " but mamba_d_ssm = ", cfg.get_int("mamba_d_ssm"));
  } else if (cfg.has("mamba_expand")) {
    const int64_t expand = cfg.get_int("mamba_expand");
    check(m.n_heads * m.head_dim == expand * cfg.get_int("hidden_size"), cfg.where(),
          ": mamba_n_heads x mamba_d_head = ", m.n_heads * m.head_dim,
          " but mamba_expand x hidden_size = ", expand * cfg.get_int("hidden_size"));
  }
  m.norm_group_size = grouped_norm ? m.d_inner() / m.n_groups : m.d_inner();
  read_time_step_limit(cfg, &m);
  return m;
}

bool split_block_name(const std::string& c, std::string* n, std::string* rest) {
  if (c.rfind("blocks.", 0) != 0) return false;
  const size_t dot = c.find('.', 7);
  if (dot == std::string::npos) return false;
  *n = c.substr(7, dot - 7);
  *rest = c.substr(dot + 1);
  return true;
}

std::function<std::string(const std::string&)> tensor_namer(NameMap map) {
  return [map = std::move(map)](const std::string& c) -> std::string {
    if (c == "embed.weight") return map.embed;
    if (c == "final_norm.weight") return map.final_norm;
    if (c == "lm_head.weight") return map.lm_head;
    for (const auto& [from, to] : map.exact)
      if (c == from) return to;
    std::string n, rest;
    if (!split_block_name(c, &n, &rest)) return c;
    std::string pre = map.layer_prefix;
    pre.replace(pre.find("{}"), 2, n);
    for (const auto& [from, to] : map.rules)
      if (rest.rfind(from, 0) == 0) return pre + to + rest.substr(from.size());
    return pre + rest;
  };
}

std::vector<int64_t> read_token_ids(const JsonObject& cfg, const std::string& key) {
  std::vector<int64_t> ids;
  if (!cfg.has(key)) return ids;
  const json& v = cfg.raw()[key];
  if (v.is_number_integer()) return {v.get<int64_t>()};
  check(v.is_array(), cfg.where(), ": field '", key, "' should be an integer or a list of integers");
  for (const auto& e : v) {
    check(e.is_number_integer(), cfg.where(), ": field '", key, "' should hold integers");
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

Import import_llama_like(const JsonObject& cfg, const LlamaLikeOptions& opt) {
  Import im;
  ModelSpec& s = im.spec;
  read_model_fields(cfg, "rms_norm_eps", 1e-6, opt.default_tie, &s);

  const int64_t L = read_layer_count(cfg);
  const int64_t H = cfg.get_positive_int("num_attention_heads");
  AttentionSpec a;
  a.n_heads = H;
  a.n_kv_heads = cfg.get_int("num_key_value_heads", H);
  a.head_dim = cfg.get_int("head_dim", s.d_model / H);
  a.qkv_bias = cfg.get_bool("attention_bias", opt.default_qkv_bias);
  a.out_bias = cfg.get_bool("attention_bias", false);
  a.qk_norm = opt.qk_norm;
  a.rope = read_rope(cfg, a.head_dim);

  MlpSpec m;
  m.hidden = cfg.get_int("intermediate_size");
  m.bias = cfg.get_bool("mlp_bias", false);
  const std::string act = cfg.get_string("hidden_act", "silu");
  check(parse_activation(act, &m.act), cfg.where(), ": hidden_act '", act, "' is not supported");
  m.gated = true;

  std::vector<std::string> layer_types;
  if (cfg.has("layer_types")) {
    layer_types = cfg.get_string_list("layer_types");
    check(int64_t(layer_types.size()) == L, cfg.where(), ": layer_types has ", layer_types.size(),
          " entries for ", L, " layers");
  }
  const bool use_sliding = cfg.get_bool("use_sliding_window", false);
  for (int64_t i = 0; i < L; ++i) {
    BlockSpec b;
    b.mixer = MixerKind::Attention;
    b.attn = a;
    if (!layer_types.empty()) {
      const std::string& t = layer_types[size_t(i)];
      check(t == "full_attention" || t == "sliding_attention", cfg.where(), ": layer_types[", i, "] = '", t,
            "' is not supported");
      if (t == "sliding_attention" && use_sliding) b.attn.sliding_window = cfg.get_int("sliding_window");
    }
    b.mlp = m;
    s.blocks.push_back(b);
  }

  im.tensor_name = tensor_namer({"model.embed_tokens.weight",
                                 "model.norm.weight",
                                 "lm_head.weight",
                                 "model.layers.{}.",
                                 {{"norm1.weight", "input_layernorm.weight"},
                                  {"norm2.weight", "post_attention_layernorm.weight"},
                                  {"attn.", "self_attn."}}});

  return im;
}

}  // namespace braid::hf
