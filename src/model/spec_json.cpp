#include "model/spec_json.hpp"

#include <algorithm>
#include <functional>

#include "core/error.hpp"

namespace braid {

namespace {

AttentionSpec read_attention(const JsonObject& o) {
  AttentionSpec a;
  a.n_heads = o.get_int("n_heads");
  a.n_kv_heads = o.get_int("n_kv_heads", a.n_heads);
  a.head_dim = o.get_int("head_dim");
  a.qkv_bias = o.get_bool("qkv_bias", false);
  a.out_bias = o.get_bool("out_bias", false);
  a.qk_norm = o.get_bool("qk_norm", false);
  a.sliding_window = o.get_int("sliding_window", 0);
  a.sink_tokens = o.get_int("sink_tokens", 0);
  a.rope.theta = o.get_float("rope_theta", 10000.0);
  a.rope.rotary_dim = o.get_int("rotary_dim", a.head_dim);
  a.rope.type = o.get_string("rope_type", "default");
  a.rope.factor = o.get_float("rope_factor", 1.0);
  a.scale = o.get_float("scale", 0.0);
  a.output_gate = o.get_bool("output_gate", false);
  return a;
}

json write_attention(const AttentionSpec& a) {
  return {{"type", "attention"},
          {"n_heads", a.n_heads},
          {"n_kv_heads", a.n_kv_heads},
          {"head_dim", a.head_dim},
          {"qkv_bias", a.qkv_bias},
          {"out_bias", a.out_bias},
          {"qk_norm", a.qk_norm},
          {"sliding_window", a.sliding_window},
          {"rope_theta", a.rope.theta},
          {"rotary_dim", a.rope.rotary_dim},
          {"rope_type", a.rope.type},
          {"rope_factor", a.rope.factor},
          {"scale", a.scale},
          {"output_gate", a.output_gate},
          {"sink_tokens", a.sink_tokens}};
}

MlpSpec read_mlp(const JsonObject& o) {
  MlpSpec m;
  m.hidden = o.get_int("hidden");
  const std::string act = o.get_string("activation", "silu");
  check(parse_activation(act, &m.act), o.where(), ": unknown activation '", act, "'");
  m.gated = o.get_bool("gated", true);
  m.bias = o.get_bool("bias", false);
  return m;
}

json write_mlp(const MlpSpec& m) {
  return {{"hidden", m.hidden}, {"activation", activation_name(m.act)}, {"gated", m.gated}, {"bias", m.bias}};
}

MambaSpec read_mamba(const JsonObject& o, int64_t d_model) {
  MambaSpec m;
  m.d_inner = o.get_int("d_inner", o.get_int("expand", 2) * d_model);
  m.d_state = o.get_int("d_state", 16);
  m.d_conv = o.get_int("d_conv", 4);
  m.dt_rank = o.get_int("dt_rank", (d_model + 15) / 16);
  m.conv_bias = o.get_bool("conv_bias", true);
  m.proj_bias = o.get_bool("proj_bias", false);
  m.bcdt_norm_eps = o.get_float("bcdt_norm_eps", 0.0);
  m.chunk = o.get_int("chunk", 256);
  return m;
}

json write_mamba(const MambaSpec& m) {
  return {{"type", "mamba"},          {"d_inner", m.d_inner},
          {"d_state", m.d_state},     {"d_conv", m.d_conv},
          {"dt_rank", m.dt_rank},     {"conv_bias", m.conv_bias},
          {"proj_bias", m.proj_bias}, {"bcdt_norm_eps", m.bcdt_norm_eps},
          {"chunk", m.chunk}};
}

Mamba2Spec read_mamba2(const JsonObject& o, int64_t d_model) {
  Mamba2Spec m;
  m.head_dim = o.get_positive_int("head_dim", 64);
  m.n_heads = o.get_int("n_heads", o.get_int("expand", 2) * d_model / m.head_dim);
  m.d_state = o.get_int("d_state", 64);
  m.n_groups = o.get_positive_int("n_groups", 1);
  m.d_conv = o.get_int("d_conv", 4);
  m.conv_bias = o.get_bool("conv_bias", true);
  m.proj_bias = o.get_bool("proj_bias", false);
  m.dt_min = o.get_float("dt_min", 0.0);
  m.dt_max = o.get_float("dt_max", 0.0);
  m.norm_eps = o.get_float("norm_eps", 1e-5);
  m.norm_group_size = o.get_int("norm_group_size", m.n_heads * m.head_dim / m.n_groups);
  m.chunk = o.get_int("chunk", 64);
  return m;
}

json write_mamba2(const Mamba2Spec& m) {
  return {{"type", "mamba2"},         {"n_heads", m.n_heads},     {"head_dim", m.head_dim},
          {"d_state", m.d_state},     {"n_groups", m.n_groups},   {"d_conv", m.d_conv},
          {"conv_bias", m.conv_bias}, {"proj_bias", m.proj_bias}, {"dt_min", m.dt_min},
          {"dt_max", m.dt_max},       {"norm_eps", m.norm_eps},   {"norm_group_size", m.norm_group_size},
          {"chunk", m.chunk}};
}

GatedDeltaNetSpec read_gdn(const JsonObject& o) {
  GatedDeltaNetSpec g;
  g.n_k_heads = o.get_int("n_k_heads");
  g.n_v_heads = o.get_int("n_v_heads", g.n_k_heads);
  g.head_k_dim = o.get_int("head_k_dim");
  g.head_v_dim = o.get_int("head_v_dim", g.head_k_dim);
  g.d_conv = o.get_int("d_conv", 4);
  g.norm_eps = o.get_float("norm_eps", 1e-6);
  g.chunk = o.get_int("chunk", 64);
  return g;
}

json write_gdn(const GatedDeltaNetSpec& g) {
  return {{"type", "gated_deltanet"},   {"n_k_heads", g.n_k_heads},
          {"n_v_heads", g.n_v_heads},   {"head_k_dim", g.head_k_dim},
          {"head_v_dim", g.head_v_dim}, {"d_conv", g.d_conv},
          {"norm_eps", g.norm_eps},     {"chunk", g.chunk}};
}

TitansSpec read_titans(const JsonObject& o) {
  TitansSpec m;
  m.n_heads = o.get_int("n_heads");
  m.head_dim = o.get_int("head_dim");
  m.depth = o.get_int("depth", 2);
  m.hidden = o.get_int("hidden", m.depth == 2 ? 2 * m.head_dim : 0);
  m.chunk = o.get_int("chunk", 16);
  m.window = o.get_int("window", 1);
  m.max_lr = o.get_float("max_lr", 0.01);
  m.max_grad_norm = o.get_float("max_grad_norm", 0.0);
  m.norm_eps = o.get_float("norm_eps", 1e-6);
  return m;
}

json write_titans(const TitansSpec& m) {
  return {{"type", "titans"},      {"n_heads", m.n_heads}, {"head_dim", m.head_dim},
          {"depth", m.depth},      {"hidden", m.hidden},   {"chunk", m.chunk},
          {"window", m.window},    {"max_lr", m.max_lr},   {"max_grad_norm", m.max_grad_norm},
          {"norm_eps", m.norm_eps}};
}

GlaSpec read_gla(const JsonObject& o) {
  GlaSpec g;
  g.n_heads = o.get_int("n_heads");
  g.head_k_dim = o.get_int("head_k_dim");
  g.head_v_dim = o.get_int("head_v_dim", g.head_k_dim);
  const std::string gate = o.get_string("gate", "channel");
  if (gate == "channel")
    g.gate = GlaGate::PerChannel;
  else if (gate == "head")
    g.gate = GlaGate::PerHead;
  else if (gate == "fixed")
    g.gate = GlaGate::Fixed;
  else
    fail(o.where(), ": unknown gla gate '", gate, "' (channel, head, fixed)");
  g.gate_rank = o.get_int("gate_rank", 16);
  g.gate_normalizer = o.get_float("gate_normalizer", 16.0);
  g.norm_eps = o.get_float("norm_eps", 1e-5);
  g.chunk = o.get_int("chunk", 64);
  return g;
}

json write_gla(const GlaSpec& g) {
  const char* gate = g.gate == GlaGate::PerChannel ? "channel"
                     : g.gate == GlaGate::PerHead  ? "head"
                                                   : "fixed";
  return {{"type", "gla"},
          {"n_heads", g.n_heads},
          {"head_k_dim", g.head_k_dim},
          {"head_v_dim", g.head_v_dim},
          {"gate", gate},
          {"gate_rank", g.gate_rank},
          {"gate_normalizer", g.gate_normalizer},
          {"norm_eps", g.norm_eps},
          {"chunk", g.chunk}};
}

LightningSpec read_lightning(const JsonObject& o) {
  LightningSpec l;
  l.n_heads = o.get_int("n_heads");
  l.head_dim = o.get_int("head_dim");
  l.slope_factor = o.get_float("slope_factor", 1.0);
  l.norm_eps = o.get_float("norm_eps", 1e-6);
  l.chunk = o.get_int("chunk", 64);
  return l;
}

json write_lightning(const LightningSpec& l) {
  return {{"type", "lightning"},    {"n_heads", l.n_heads},
          {"head_dim", l.head_dim}, {"slope_factor", l.slope_factor},
          {"norm_eps", l.norm_eps}, {"chunk", l.chunk}};
}

RgLruSpec read_rglru(const JsonObject& o, int64_t d_model) {
  RgLruSpec r;
  r.width = o.get_int("width", d_model);
  r.n_heads = o.get_int("n_heads", 1);
  r.d_conv = o.get_int("d_conv", 4);
  return r;
}

json write_rglru(const RgLruSpec& r) {
  return {{"type", "rglru"}, {"width", r.width}, {"n_heads", r.n_heads}, {"d_conv", r.d_conv}};
}

MlstmSpec read_mlstm(const JsonObject& o, int64_t d_model) {
  MlstmSpec m;
  m.n_heads = o.get_int("n_heads");
  m.qk_dim = o.get_int("qk_dim", d_model / 2);
  m.v_dim = o.get_int("v_dim", d_model);
  m.gate_soft_cap = o.get_float("gate_soft_cap", 15.0);
  m.eps = o.get_float("eps", 1e-6);
  m.norm_eps = o.get_float("norm_eps", 1e-6);
  m.chunk = o.get_int("chunk", 64);
  return m;
}

json write_mlstm(const MlstmSpec& m) {
  return {{"type", "mlstm"},
          {"n_heads", m.n_heads},
          {"qk_dim", m.qk_dim},
          {"v_dim", m.v_dim},
          {"gate_soft_cap", m.gate_soft_cap},
          {"eps", m.eps},
          {"norm_eps", m.norm_eps},
          {"chunk", m.chunk}};
}

MoeSpec read_moe(const JsonObject& o) {
  MoeSpec m;
  m.n_experts = o.get_int("n_experts");
  m.top_k = o.get_int("top_k");
  m.hidden = o.get_int("hidden");
  const std::string act = o.get_string("activation", "silu");
  check(parse_activation(act, &m.act), o.where(), ": unknown activation '", act, "'");
  m.renormalize = o.get_bool("renormalize", false);
  const std::string router = o.get_string("router", "softmax");
  check(router == "softmax" || router == "sigmoid", o.where(), ": router must be softmax or sigmoid, found '",
        router, "'");
  m.sigmoid_scores = router == "sigmoid";
  m.shared_hidden = o.get_int("shared_hidden", 0);
  m.shared_gate = o.get_bool("shared_gate", false);
  return m;
}

json write_moe(const MoeSpec& m) {
  return {{"n_experts", m.n_experts},
          {"top_k", m.top_k},
          {"hidden", m.hidden},
          {"activation", activation_name(m.act)},
          {"renormalize", m.renormalize},
          {"router", m.sigmoid_scores ? "sigmoid" : "softmax"},
          {"shared_hidden", m.shared_hidden},
          {"shared_gate", m.shared_gate}};
}

void read_mixer(const JsonObject& o, int64_t d_model, BlockSpec* b) {
  const std::string type = o.get_string("type");
  if (type == "attention") {
    b->mixer = MixerKind::Attention;
    b->attn = read_attention(o);
  } else if (type == "mamba") {
    b->mixer = MixerKind::Mamba;
    b->mamba = read_mamba(o, d_model);
  } else if (type == "short_conv") {
    b->mixer = MixerKind::ShortConv;
    b->short_conv.kernel = o.get_int("kernel", 3);
    b->short_conv.bias = o.get_bool("bias", false);
  } else if (type == "mamba2") {
    b->mixer = MixerKind::Mamba2;
    b->mamba2 = read_mamba2(o, d_model);
  } else if (type == "gla") {
    b->mixer = MixerKind::Gla;
    b->gla = read_gla(o);
  } else if (type == "lightning") {
    b->mixer = MixerKind::Lightning;
    b->lightning = read_lightning(o);
  } else if (type == "rglru") {
    b->mixer = MixerKind::RgLru;
    b->rglru = read_rglru(o, d_model);
  } else if (type == "mlstm") {
    b->mixer = MixerKind::Mlstm;
    b->mlstm = read_mlstm(o, d_model);
  } else if (type == "titans") {
    b->mixer = MixerKind::Titans;
    b->titans = read_titans(o);
  } else if (type == "gated_deltanet") {
    b->mixer = MixerKind::GatedDeltaNet;
    b->gdn = read_gdn(o);
  } else {
    fail(o.where(), ": unknown mixer type '", type,
         "' (supported: attention, mamba, mamba2, short_conv, gated_deltanet, gla, lightning, rglru, mlstm, "
         "titans, parallel)");
  }
}

json write_mixer(const BlockSpec& b, MixerKind kind, bool strict) {
  switch (kind) {
    case MixerKind::Attention:
      return write_attention(b.attn);
    case MixerKind::Mamba:
      return write_mamba(b.mamba);
    case MixerKind::Mamba2:
      return write_mamba2(b.mamba2);
    case MixerKind::ShortConv:
      return {{"type", "short_conv"}, {"kernel", b.short_conv.kernel}, {"bias", b.short_conv.bias}};
    case MixerKind::GatedDeltaNet:
      return write_gdn(b.gdn);
    case MixerKind::Gla:
      return write_gla(b.gla);
    case MixerKind::Lightning:
      return write_lightning(b.lightning);
    case MixerKind::RgLru:
      return write_rglru(b.rglru);
    case MixerKind::Mlstm:
      return write_mlstm(b.mlstm);
    case MixerKind::Titans:
      return write_titans(b.titans);
    case MixerKind::Rwkv4:
      check(!strict, "braid's spec format cannot express ", mixer_kind_name(kind), " layers yet");
      return {{"type", "rwkv4"}, {"attn_dim", b.rwkv.attn_dim}, {"out_scale", b.rwkv.out_scale}};
  }
  return nullptr;
}

}  // namespace

ModelSpec spec_from_json(const json& j, const std::string& where) {
  JsonObject o(j, where);
  ModelSpec s;
  s.family = "braid";
  s.name = o.get_string("name", "");
  // Real-valued models name their widths input_dim / output_dim; token models vocab_size.
  s.input_dim = o.get_int("input_dim", 0);
  if (o.has("input_dim")) {
    check(!o.has("vocab_size"), where, ": a model with input_dim has output_dim, not vocab_size");
    s.vocab_size = o.get_int("output_dim");
  } else {
    check(!o.has("output_dim"), where, ": output_dim needs input_dim (real-valued inputs)");
    s.vocab_size = o.get_int("vocab_size");
  }
  s.d_model = o.get_int("d_model");
  s.norm_eps = o.get_float("norm_eps", 1e-6);
  s.tie_embeddings = o.get_bool("tie_embeddings", s.input_dim == 0);
  s.max_context = o.get_int("max_context", 0);
  s.embedding_multiplier = o.get_float("embedding_multiplier", 1.0);
  s.residual_multiplier = o.get_float("residual_multiplier", 1.0);
  s.logits_scaling = o.get_float("logits_scaling", 1.0);
  s.persistent_tokens = o.get_int("persistent_tokens", 0);
  s.bos_token_id = o.get_int("bos_token_id", -1);
  if (o.has("eos_token_id")) s.eos_token_ids = {o.get_int("eos_token_id")};

  // Default channel mixer for every layer unless a layer says otherwise: an MLP or a mixture
  // of experts.
  bool default_has_mlp = o.has("mlp"), default_has_moe = o.has("moe");
  check(!(default_has_mlp && default_has_moe), where,
        ": give either 'mlp' or 'moe' as the default channel mixer");
  MlpSpec default_mlp;
  MoeSpec default_moe;
  if (default_has_mlp) default_mlp = read_mlp(o.get_object("mlp"));
  if (default_has_moe) default_moe = read_moe(o.get_object("moe"));

  std::vector<json> layers;
  check(o.has("layers"), where, ": field 'layers' is missing");
  const json& L = j["layers"];
  if (L.is_object()) {  // {"pattern": [...], "repeat": n}
    JsonObject lo(L, where + ": layers");
    const int64_t rep = lo.get_int("repeat", 1);
    check(rep > 0, where, ": layers.repeat must be positive");
    check(lo.has("pattern") && L["pattern"].is_array(), where, ": layers.pattern must be an array");
    check(rep * int64_t(L["pattern"].size()) <= kMaxLayers, where, ": layers.repeat ", rep,
          " makes more than ", kMaxLayers, " layers");
    for (int64_t r = 0; r < rep; ++r)
      for (const auto& e : L["pattern"]) layers.push_back(e);
  } else {
    check(L.is_array(), where, ": 'layers' must be an array or {pattern, repeat}");
    for (const auto& e : L) layers.push_back(e);
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string lw = where + ": layers[" + std::to_string(i) + "]";
    BlockSpec b;
    b.has_mlp = default_has_mlp;
    b.mlp = default_mlp;
    b.has_moe = default_has_moe;
    b.moe = default_moe;
    const json& e = layers[i];
    // A mixer given by name (from "mixers") or inline; "parallel" holds two of them.
    std::function<void(const json&, const std::string&, bool)> mixer_at =
        [&](const json& m, const std::string& mw, bool nested) {
          if (m.is_string()) {
            const std::string name = m.get<std::string>();
            check(o.has("mixers") && j["mixers"].is_object() && j["mixers"].contains(name), mw, ": mixer '",
                  name, "' is not defined in 'mixers'");
            mixer_at(j["mixers"][name], where + ": mixers." + name, nested);
            return;
          }
          JsonObject mo(m, mw);
          if (mo.get_string("type") != "parallel") {
            read_mixer(mo, s.d_model, &b);
            return;
          }
          check(!nested, mw, ": a parallel mixer cannot be a branch of another");
          const std::string combine = mo.get_string("combine", "sum");
          check(combine == "sum" || combine == "gate" || combine == "context", mw,
                ": 'combine' must be \"sum\", \"gate\" or \"context\", not \"", combine, "\"");
          check(combine == "context" || !mo.has("persistent_tokens"), mw,
                ": 'persistent_tokens' belongs to \"combine\": \"context\"");
          check(mo.has("mixers") && m["mixers"].is_array() && m["mixers"].size() == 2, mw,
                ": 'mixers' must list two mixers (names or objects)");
          auto scales = [&](const char* key) {
            std::vector<double> v{1.0, 1.0};
            if (!mo.has(key)) return v;
            check(m[key].is_array() && m[key].size() == 2, mw, ": '", key, "' must hold two numbers");
            for (size_t k = 0; k < 2; ++k) v[k] = json_to_double(m[key][k], mw + ": " + key);
            return v;
          };
          const std::vector<double> ins = scales("in_scales"), outs = scales("out_scales");
          mixer_at(m["mixers"][0], mw + ": mixers[0]", true);
          const MixerKind first = b.mixer;
          mixer_at(m["mixers"][1], mw + ": mixers[1]", true);
          b.has_parallel = true;
          b.parallel = b.mixer;
          b.mixer = first;
          b.parallel_gate = combine == "gate";
          b.parallel_context = combine == "context";
          b.context_persistent = mo.get_int("persistent_tokens", 0);
          b.mixer_in_scale = ins[0], b.parallel_in_scale = ins[1];
          b.mixer_out_scale = outs[0], b.parallel_out_scale = outs[1];
        };
    if (e.is_string()) {
      mixer_at(e, lw, false);
    } else {
      JsonObject lo(e, lw);
      if (lo.has("mixer"))
        mixer_at(e["mixer"], lw + ": mixer", false);
      else
        b.has_mixer = false;  // "mixer": null (or absent): an MLP-only block
      check(!(lo.has("mlp") && lo.has("moe")), lw, ": a layer has either 'mlp' or 'moe'");
      if (lo.has("mlp")) {
        b.has_mlp = true, b.has_moe = false;
        b.mlp = read_mlp(lo.get_object("mlp"));
      } else if (lo.has("moe")) {
        b.has_moe = true, b.has_mlp = false;
        b.moe = read_moe(lo.get_object("moe"));
      } else if (e.contains("mlp") || e.contains("moe")) {
        b.has_mlp = b.has_moe = false;  // "mlp": null disables the channel mixer for this layer
      }
    }
    s.blocks.push_back(b);
  }
  if (o.has("loop")) {
    JsonObject lo = o.get_object("loop");
    LoopSpec& l = s.loop;
    l.begin = lo.get_int("begin");
    l.end = lo.get_int("end");
    l.loops = lo.get_int("loops");
    l.max_loops = lo.get_int("max_loops", l.loops);
    l.train_min = lo.get_int("train_min_loops", l.loops);
    l.train_max = lo.get_int("train_max_loops", std::max(l.loops, l.train_min));
    l.inject = lo.get_bool("inject", true);
    l.step_embedding = lo.get_bool("step_embedding", false);
    check(l.begin < l.end, lo.where(), ": 'begin' ", l.begin, " must be below 'end' ", l.end);
  }
  if (o.has("segments")) {
    JsonObject so = o.get_object("segments");
    s.segment.length = so.get_int("length");
    s.segment.memory_tokens = so.get_int("memory_tokens");
    s.segment.bptt = so.get_int("bptt", 0);
  }
  validate_spec(s);
  return s;
}

// The spec as JSON; `strict`: only what spec_from_json reads back (refusing what it cannot
// express), else every field, for a description.
static json write_spec(const ModelSpec& s, bool strict) {
  json j = {{"model_type", "braid"},
            {"name", s.name},
            {"vocab_size", s.vocab_size},
            {"d_model", s.d_model},
            {"norm_eps", s.norm_eps},
            {"tie_embeddings", s.tie_embeddings},
            {"max_context", s.max_context},
            {"bos_token_id", s.bos_token_id},
            {"embedding_multiplier", s.embedding_multiplier},
            {"residual_multiplier", s.residual_multiplier},
            {"logits_scaling", s.logits_scaling},
            {"persistent_tokens", s.persistent_tokens}};
  if (s.input_dim > 0) {
    j.erase("vocab_size");
    j["input_dim"] = s.input_dim;
    j["output_dim"] = s.vocab_size;
  }
  if (!s.eos_token_ids.empty()) j["eos_token_id"] = s.eos_token_ids[0];
  if (!strict)
    j["norms"] = {{"layer_norm", s.norm_kind == NormKind::Layer},
                  {"weight_offset", s.norm_weight_offset},
                  {"embed_norm", s.embed_norm},
                  {"logits_soft_cap", s.logits_soft_cap}};
  check(!strict || (s.norm_kind == NormKind::RMS && !s.norm_weight_offset && !s.embed_norm &&
                    s.logits_soft_cap == 0),
        "braid's spec format cannot express LayerNorm, (1 + w) norms, an embedding norm or a logit cap yet");
  json layers = json::array();
  for (const BlockSpec& b : s.blocks) {
    // Family-specific scalings the format has no field for must not be dropped silently.
    const Mamba2Spec& m2 = b.mamba2;
    json l;
    if (!strict)
      l["extra"] = {{"key_multiplier", b.attn.key_multiplier},
                    {"gate_multiplier", b.mlp.gate_multiplier},
                    {"down_multiplier", b.mlp.down_multiplier},
                    {"mamba2_norm", int(m2.norm)},
                    {"mamba2_multipliers", m2.proj_multipliers},
                    {"rwkv_channel_mix", b.has_cmix ? json{b.cmix.hidden, b.cmix.out_scale} : json(nullptr)},
                    {"post_scale", b.post_scale},
                    {"normed_residual", b.normed_residual}};
    check(!strict || (b.attn.key_multiplier == 1.0 && b.mlp.gate_multiplier == 1.0 &&
                      b.mlp.down_multiplier == 1.0 && m2.norm == Mamba2Norm::GateThenNorm &&
                      std::all_of(m2.proj_multipliers.begin(), m2.proj_multipliers.end(),
                                  [](double v) { return v == 1.0; })),
          "braid's spec format cannot express key / MLP / SSM multipliers or other Mamba-2 norm modes yet");
    check(!strict || (!b.has_cmix && b.post_scale == 1.0 && !b.normed_residual),
          "braid's spec format cannot express RWKV channel mixing or scaled residuals yet");
    if (!b.has_mixer)
      l["mixer"] = nullptr;
    else if (b.has_parallel) {
      l["mixer"] = {{"type", "parallel"},
                    {"combine", b.parallel_gate      ? "gate"
                                : b.parallel_context ? "context"
                                                     : "sum"},
                    {"mixers", {write_mixer(b, b.mixer, strict), write_mixer(b, b.parallel, strict)}},
                    {"in_scales", {b.mixer_in_scale, b.parallel_in_scale}},
                    {"out_scales", {b.mixer_out_scale, b.parallel_out_scale}}};
      if (b.context_persistent > 0) l["mixer"]["persistent_tokens"] = b.context_persistent;
    } else
      l["mixer"] = write_mixer(b, b.mixer, strict);
    if (b.has_moe)
      l["moe"] = write_moe(b.moe);
    else
      l["mlp"] = b.has_mlp ? write_mlp(b.mlp) : json(nullptr);
    layers.push_back(l);
  }
  j["layers"] = layers;
  if (s.loop.enabled()) {
    const LoopSpec& l = s.loop;
    j["loop"] = {{"begin", l.begin},
                 {"end", l.end},
                 {"loops", l.loops},
                 {"max_loops", l.max_loops},
                 {"train_min_loops", l.train_min},
                 {"train_max_loops", l.train_max},
                 {"inject", l.inject},
                 {"step_embedding", l.step_embedding}};
  }
  if (s.segment.enabled())
    j["segments"] = {
        {"length", s.segment.length}, {"memory_tokens", s.segment.memory_tokens}, {"bptt", s.segment.bptt}};
  return j;
}

json spec_to_json(const ModelSpec& s) { return write_spec(s, true); }
json spec_description(const ModelSpec& s) { return write_spec(s, false); }

}  // namespace braid
