#include "model/spec.hpp"

#include "core/error.hpp"

namespace braid {

const char* mixer_kind_name(MixerKind k) {
  switch (k) {
    case MixerKind::Attention:
      return "attention";
    case MixerKind::Mamba:
      return "mamba";
    case MixerKind::Mamba2:
      return "mamba2";
    case MixerKind::ShortConv:
      return "short_conv";
    case MixerKind::GatedDeltaNet:
      return "gated_deltanet";
    case MixerKind::Rwkv4:
      return "rwkv4";
    case MixerKind::RgLru:
      return "rglru";
    case MixerKind::Lightning:
      return "lightning";
    case MixerKind::Mlstm:
      return "mlstm";
    case MixerKind::Gla:
      return "gla";
    case MixerKind::Titans:
      return "titans";
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::SiLU:
      return "silu";
    case Activation::GeluTanh:
      return "gelu_tanh";
    case Activation::GeluErf:
      return "gelu";
    case Activation::Relu2:
      return "relu2";
  }
  return "?";
}

bool parse_activation(const std::string& s, Activation* out) {
  if (s == "silu" || s == "swish")
    *out = Activation::SiLU;
  else if (s == "gelu_pytorch_tanh" || s == "gelu_new" || s == "gelu_tanh")
    *out = Activation::GeluTanh;
  else if (s == "gelu")
    *out = Activation::GeluErf;
  else if (s == "relu2")
    *out = Activation::Relu2;
  else
    return false;
  return true;
}

namespace {

// The parameters of one token mixer of kind `k` in block `b`, under prefix `pre`.
void mixer_params(MixerKind k, const BlockSpec& b, const std::string& pre, int64_t D, bool norm_offset,
                  std::vector<ParamDecl>& p) {
  using I = ParamDecl::Init;
  const I norm_init = norm_offset ? I::Zeros : I::Ones;
  switch (k) {
    case MixerKind::Attention: {
      const AttentionSpec& a = b.attn;
      const int64_t q = a.n_heads * a.head_dim, kv = a.n_kv_heads * a.head_dim;
      p.push_back({pre + "attn.q_proj.weight", {a.output_gate ? 2 * q : q, D}, I::Normal});
      p.push_back({pre + "attn.k_proj.weight", {kv, D}, I::Normal});
      p.push_back({pre + "attn.v_proj.weight", {kv, D}, I::Normal});
      if (a.qkv_bias) {
        p.push_back({pre + "attn.q_proj.bias", {a.output_gate ? 2 * q : q}, I::Zeros});
        p.push_back({pre + "attn.k_proj.bias", {kv}, I::Zeros});
        p.push_back({pre + "attn.v_proj.bias", {kv}, I::Zeros});
      }
      p.push_back({pre + "attn.o_proj.weight", {D, q}, I::Normal});
      if (a.out_bias) p.push_back({pre + "attn.o_proj.bias", {D}, I::Zeros});
      if (a.qk_norm) {
        p.push_back({pre + "attn.q_norm.weight", {a.head_dim}, norm_init});
        p.push_back({pre + "attn.k_norm.weight", {a.head_dim}, norm_init});
      }
      break;
    }
    case MixerKind::Mamba: {
      const MambaSpec& m = b.mamba;
      const int64_t Di = m.d_inner, N = m.d_state, R = m.dt_rank;
      p.push_back({pre + "mamba.in_proj.weight", {2 * Di, D}, I::FanIn});
      if (m.proj_bias) p.push_back({pre + "mamba.in_proj.bias", {2 * Di}, I::Zeros});
      p.push_back({pre + "mamba.conv1d.weight", {Di, 1, m.d_conv}, I::FanIn});
      if (m.conv_bias) p.push_back({pre + "mamba.conv1d.bias", {Di}, I::Zeros});
      p.push_back({pre + "mamba.x_proj.weight", {R + 2 * N, Di}, I::FanIn});
      p.push_back({pre + "mamba.dt_proj.weight", {Di, R}, I::FanIn});
      p.push_back({pre + "mamba.dt_proj.bias", {Di}, I::DtBias});
      p.push_back({pre + "mamba.A_log", {Di, N}, I::SsmALog});
      p.push_back({pre + "mamba.D", {Di}, I::Ones});
      p.push_back({pre + "mamba.out_proj.weight", {D, Di}, I::Normal});
      if (m.proj_bias) p.push_back({pre + "mamba.out_proj.bias", {D}, I::Zeros});
      if (m.bcdt_norm_weights) {
        p.push_back({pre + "mamba.b_norm.weight", {N}, I::Ones});
        p.push_back({pre + "mamba.c_norm.weight", {N}, I::Ones});
        p.push_back({pre + "mamba.dt_norm.weight", {R}, I::Ones});
      }
      break;
    }
    case MixerKind::Mamba2: {
      const Mamba2Spec& m = b.mamba2;
      const int64_t Di = m.d_inner(), GN = m.n_groups * m.d_state, H = m.n_heads;
      const int64_t conv_dim = Di + 2 * GN;
      p.push_back({pre + "mamba2.in_proj.weight", {Di + conv_dim + H, D}, I::FanIn});
      if (m.proj_bias) p.push_back({pre + "mamba2.in_proj.bias", {Di + conv_dim + H}, I::Zeros});
      p.push_back({pre + "mamba2.conv1d.weight", {conv_dim, 1, m.d_conv}, I::FanIn});
      if (m.conv_bias) p.push_back({pre + "mamba2.conv1d.bias", {conv_dim}, I::Zeros});
      p.push_back({pre + "mamba2.dt_bias", {H}, I::DtBias});
      p.push_back({pre + "mamba2.A_log", {H}, I::HeadALog});
      p.push_back({pre + "mamba2.D", {H}, I::Ones});
      if (m.norm != Mamba2Norm::GateOnly) p.push_back({pre + "mamba2.norm.weight", {Di}, I::Ones});
      p.push_back({pre + "mamba2.out_proj.weight", {D, Di}, I::Normal});
      if (m.proj_bias) p.push_back({pre + "mamba2.out_proj.bias", {D}, I::Zeros});
      break;
    }
    case MixerKind::ShortConv: {
      const ShortConvSpec& c = b.short_conv;
      p.push_back({pre + "short_conv.in_proj.weight", {3 * D, D}, I::Normal});
      if (c.bias) p.push_back({pre + "short_conv.in_proj.bias", {3 * D}, I::Zeros});
      p.push_back({pre + "short_conv.conv.weight", {D, 1, c.kernel}, I::FanIn});
      if (c.bias) p.push_back({pre + "short_conv.conv.bias", {D}, I::Zeros});
      p.push_back({pre + "short_conv.out_proj.weight", {D, D}, I::Normal});
      if (c.bias) p.push_back({pre + "short_conv.out_proj.bias", {D}, I::Zeros});
      break;
    }
    case MixerKind::Rwkv4: {
      const int64_t A = b.rwkv.attn_dim;
      p.push_back({pre + "rwkv.time_decay", {A}, I::Zeros});
      p.push_back({pre + "rwkv.time_first", {A}, I::Zeros});
      p.push_back({pre + "rwkv.time_mix_k", {D}, I::Half});
      p.push_back({pre + "rwkv.time_mix_v", {D}, I::Half});
      p.push_back({pre + "rwkv.time_mix_r", {D}, I::Half});
      p.push_back({pre + "rwkv.key.weight", {A, D}, I::Normal});
      p.push_back({pre + "rwkv.value.weight", {A, D}, I::Normal});
      p.push_back({pre + "rwkv.receptance.weight", {A, D}, I::Normal});
      p.push_back({pre + "rwkv.output.weight", {D, A}, I::Normal});
      break;
    }
    case MixerKind::RgLru: {
      const int64_t W = b.rglru.width, H = b.rglru.n_heads, bw = b.rglru.head_width();
      p.push_back({pre + "rglru.linear_x.weight", {W, D}, I::Normal});
      p.push_back({pre + "rglru.linear_x.bias", {W}, I::Zeros});
      p.push_back({pre + "rglru.linear_y.weight", {W, D}, I::Normal});
      p.push_back({pre + "rglru.linear_y.bias", {W}, I::Zeros});
      p.push_back({pre + "rglru.linear_out.weight", {D, W}, I::Normal});
      p.push_back({pre + "rglru.linear_out.bias", {D}, I::Zeros});
      p.push_back({pre + "rglru.conv1d.weight", {W, 1, b.rglru.d_conv}, I::FanIn});
      p.push_back({pre + "rglru.conv1d.bias", {W}, I::Zeros});
      p.push_back({pre + "rglru.input_gate_weight", {H, bw, bw}, I::Normal});
      p.push_back({pre + "rglru.input_gate_bias", {H, bw}, I::Zeros});
      p.push_back({pre + "rglru.recurrent_gate_weight", {H, bw, bw}, I::Normal});
      p.push_back({pre + "rglru.recurrent_gate_bias", {H, bw}, I::Zeros});
      p.push_back({pre + "rglru.recurrent_param", {W}, I::Zeros});
      break;
    }
    case MixerKind::Titans: {
      const TitansSpec& m = b.titans;
      const int64_t HD = m.n_heads * m.head_dim;
      const int64_t P = m.depth == 1 ? m.head_dim * m.head_dim : 2 * m.hidden * m.head_dim;
      p.push_back({pre + "titans.q_proj.weight", {HD, D}, I::Normal});
      p.push_back({pre + "titans.k_proj.weight", {HD, D}, I::Normal});
      p.push_back({pre + "titans.v_proj.weight", {HD, D}, I::Normal});
      p.push_back({pre + "titans.gates.weight", {3 * m.n_heads, D}, I::Normal});
      p.push_back({pre + "titans.gates.bias", {3 * m.n_heads}, I::MemoryGates});
      p.push_back({pre + "titans.memory", {m.n_heads, P}, I::Normal});
      p.push_back({pre + "titans.norm.weight", {m.head_dim}, norm_init});
      p.push_back({pre + "titans.out_proj.weight", {D, HD}, I::Normal});
      break;
    }
    case MixerKind::Gla: {
      const GlaSpec& g = b.gla;
      const int64_t KD = g.n_heads * g.head_k_dim, VD = g.n_heads * g.head_v_dim;
      p.push_back({pre + "gla.q_proj.weight", {KD, D}, I::Normal});
      p.push_back({pre + "gla.k_proj.weight", {KD, D}, I::Normal});
      p.push_back({pre + "gla.v_proj.weight", {VD, D}, I::Normal});
      if (g.gate == GlaGate::PerChannel) {
        p.push_back({pre + "gla.gk_proj.0.weight", {g.gate_rank, D}, I::Normal});
        p.push_back({pre + "gla.gk_proj.1.weight", {KD, g.gate_rank}, I::Normal});
        p.push_back({pre + "gla.gk_proj.1.bias", {KD}, I::Zeros});
      } else if (g.gate == GlaGate::PerHead) {
        p.push_back({pre + "gla.gk_proj.weight", {g.n_heads, D}, I::Normal});
        p.push_back({pre + "gla.gk_proj.bias", {g.n_heads}, I::Zeros});
      }
      p.push_back({pre + "gla.g_proj.weight", {VD, D}, I::Normal});
      p.push_back({pre + "gla.g_norm.weight", {g.head_v_dim}, I::Ones});
      p.push_back({pre + "gla.o_proj.weight", {D, VD}, I::Normal});
      break;
    }
    case MixerKind::Mlstm: {
      const MlstmSpec& m = b.mlstm;
      p.push_back({pre + "mlstm.q.weight", {m.qk_dim, D}, I::Normal});
      p.push_back({pre + "mlstm.k.weight", {m.qk_dim, D}, I::Normal});
      p.push_back({pre + "mlstm.v.weight", {m.v_dim, D}, I::Normal});
      p.push_back({pre + "mlstm.ogate_preact.weight", {m.v_dim, D}, I::Normal});
      p.push_back({pre + "mlstm.igate_preact.weight", {m.n_heads, D}, I::Normal});
      p.push_back({pre + "mlstm.igate_preact.bias", {m.n_heads}, I::Zeros});
      p.push_back({pre + "mlstm.fgate_preact.weight", {m.n_heads, D}, I::Normal});
      p.push_back({pre + "mlstm.fgate_preact.bias", {m.n_heads}, I::Ones});
      p.push_back({pre + "mlstm.multihead_norm.weight", {m.v_dim}, I::Ones});
      p.push_back({pre + "mlstm.out_proj.weight", {D, m.v_dim}, I::Normal});
      break;
    }
    case MixerKind::Lightning: {
      const int64_t HD = b.lightning.n_heads * b.lightning.head_dim;
      p.push_back({pre + "lightning.qkv_proj.weight", {3 * HD, D}, I::Normal});
      p.push_back({pre + "lightning.output_gate.weight", {HD, D}, I::Normal});
      p.push_back({pre + "lightning.norm.weight", {HD}, I::Ones});
      p.push_back({pre + "lightning.out_proj.weight", {D, HD}, I::Normal});
      break;
    }
    case MixerKind::GatedDeltaNet: {
      const GatedDeltaNetSpec& g = b.gdn;
      const int64_t NV = g.n_v_heads;
      p.push_back({pre + "gdn.in_proj_qkvz.weight", {2 * g.key_dim() + 2 * g.value_dim(), D}, I::Normal});
      p.push_back({pre + "gdn.in_proj_ba.weight", {2 * NV, D}, I::Normal});
      p.push_back({pre + "gdn.conv1d.weight", {g.conv_dim(), 1, g.d_conv}, I::FanIn});
      p.push_back({pre + "gdn.dt_bias", {NV}, I::DtBias});
      p.push_back({pre + "gdn.A_log", {NV}, I::HeadALog});
      p.push_back({pre + "gdn.norm.weight", {g.head_v_dim}, I::Ones});
      p.push_back({pre + "gdn.out_proj.weight", {D, g.value_dim()}, I::Normal});
      break;
    }
  }
}

}  // namespace

std::vector<ParamDecl> param_decls(const ModelSpec& s) {
  using I = ParamDecl::Init;
  const I norm_init = s.norm_weight_offset ? I::Zeros : I::Ones;
  std::vector<ParamDecl> p;
  const int64_t D = s.d_model;
  // A norm's weight, and its bias for LayerNorm.
  auto norm = [&](const std::string& name) {
    p.push_back({name + ".weight", {D}, norm_init});
    if (s.norm_kind == NormKind::Layer) p.push_back({name + ".bias", {D}, I::Zeros});
  };
  if (s.input_dim > 0) {
    p.push_back({"read_in.weight", {D, s.input_dim}, I::FanIn});
    p.push_back({"read_in.bias", {D}, I::Zeros});
  } else {
    p.push_back({"embed.weight", {s.vocab_size, D}, I::Normal});
  }
  if (s.persistent_tokens > 0) p.push_back({"persistent.weight", {s.persistent_tokens, D}, I::Normal});
  if (s.embed_norm) norm("embed_norm");
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const BlockSpec& b = s.blocks[i];
    const std::string pre = "blocks." + std::to_string(i) + ".";
    if (b.has_mixer) norm(pre + "norm1");
    if (b.has_mixer) mixer_params(b.mixer, b, pre, D, s.norm_weight_offset, p);
    if (b.has_mixer && b.has_parallel) mixer_params(b.parallel, b, pre, D, s.norm_weight_offset, p);
    if (b.parallel_context)  // the reading's query projection; persistent rows
      p.push_back({pre + "context.q_proj.weight", {b.titans.n_heads * b.titans.head_dim, D}, I::Normal});
    if (b.parallel_context && b.context_persistent > 0)
      p.push_back({pre + "context.persistent", {b.context_persistent, D}, I::Normal});
    if (b.has_moe) {
      const MoeSpec& m = b.moe;
      const int64_t F = m.hidden;
      norm(pre + "norm2");
      p.push_back({pre + "moe.router.weight", {m.n_experts, D}, I::Normal});
      for (int64_t e = 0; e < m.n_experts; ++e) {
        const std::string ep = pre + "moe.experts." + std::to_string(e) + ".";
        p.push_back({ep + "gate_proj.weight", {F, D}, I::Normal});
        p.push_back({ep + "up_proj.weight", {F, D}, I::Normal});
        p.push_back({ep + "down_proj.weight", {D, F}, I::Normal});
      }
      if (m.shared_hidden > 0) {
        p.push_back({pre + "moe.shared.gate_proj.weight", {m.shared_hidden, D}, I::Normal});
        p.push_back({pre + "moe.shared.up_proj.weight", {m.shared_hidden, D}, I::Normal});
        p.push_back({pre + "moe.shared.down_proj.weight", {D, m.shared_hidden}, I::Normal});
        if (m.shared_gate) p.push_back({pre + "moe.shared_gate.weight", {1, D}, I::Normal});
      }
    }
    if (b.has_cmix) {
      const int64_t F = b.cmix.hidden;
      norm(pre + "norm2");
      p.push_back({pre + "cmix.time_mix_k", {D}, I::Half});
      p.push_back({pre + "cmix.time_mix_r", {D}, I::Half});
      p.push_back({pre + "cmix.key.weight", {F, D}, I::Normal});
      p.push_back({pre + "cmix.receptance.weight", {D, D}, I::Normal});
      p.push_back({pre + "cmix.value.weight", {D, F}, I::Normal});
    }
    if (b.has_mlp) {
      const int64_t F = b.mlp.hidden;
      norm(pre + "norm2");
      if (b.mlp.gated) {
        p.push_back({pre + "mlp.gate_proj.weight", {F, D}, I::Normal});
        if (b.mlp.bias) p.push_back({pre + "mlp.gate_proj.bias", {F}, I::Zeros});
      }
      p.push_back({pre + "mlp.up_proj.weight", {F, D}, I::Normal});
      if (b.mlp.bias) p.push_back({pre + "mlp.up_proj.bias", {F}, I::Zeros});
      p.push_back({pre + "mlp.down_proj.weight", {D, F}, I::Normal});
      if (b.mlp.bias) p.push_back({pre + "mlp.down_proj.bias", {D}, I::Zeros});
    }
  }
  if (s.segment.enabled()) p.push_back({"segment.memory.weight", {s.segment.memory_tokens, D}, I::Normal});
  if (s.loop.enabled() && s.loop.step_embedding) {
    p.push_back({"loop.step_embed.weight", {s.loop.max_loops, D}, I::Normal});
    p.push_back({"loop.count_embed.weight", {s.loop.max_loops, D}, I::Normal});
  }
  norm("final_norm");
  if (!s.tie_embeddings) p.push_back({"lm_head.weight", {s.vocab_size, D}, I::Normal});
  return p;
}

namespace {

// Throws for the first inconsistent hyper-parameter of the mixer of kind `k` in `b`.
void validate_mixer(MixerKind k, const BlockSpec& b, const std::string& where) {
  if (k == MixerKind::Attention) {
    const AttentionSpec& a = b.attn;
    check(a.n_heads > 0 && a.n_kv_heads > 0 && a.head_dim > 0, where,
          ": attention heads, kv heads and head_dim must be positive");
    check(a.n_heads % a.n_kv_heads == 0, where, ": n_heads ", a.n_heads, " is not a multiple of n_kv_heads ",
          a.n_kv_heads);
    check(a.rope.rotary_dim >= 0 && a.rope.rotary_dim <= a.head_dim && a.rope.rotary_dim % 2 == 0, where,
          ": rotary_dim ", a.rope.rotary_dim, " must be even and <= head_dim ", a.head_dim);
    check(a.rope.type == "default" || a.rope.type == "linear" || a.rope.type == "llama3", where,
          ": unsupported rope type '", a.rope.type, "' (supported: default, linear, llama3)");
    check(a.sliding_window >= 0, where, ": sliding_window must be >= 0");
    check(a.sink_tokens >= 0, where, ": sink_tokens must be >= 0");
    check(a.sink_tokens == 0 || a.sliding_window > 0, where,
          ": sink_tokens needs a sliding_window (full attention sees every position already)");
    check(a.rope.rotary_dim <= 1024, where, ": rotary_dim above 1024 is not supported");
  }
  if (k == MixerKind::Mamba) {
    const MambaSpec& m = b.mamba;
    check(m.d_inner > 0 && m.d_state > 0 && m.d_conv > 0 && m.dt_rank > 0, where,
          ": mamba d_inner, d_state, d_conv and dt_rank must be positive");
    check(m.chunk > 0, where, ": mamba chunk must be positive");
  }
  if (k == MixerKind::ShortConv)
    check(b.short_conv.kernel > 0, where, ": short_conv kernel must be positive");
  if (k == MixerKind::Mamba2) {
    const Mamba2Spec& m = b.mamba2;
    check(m.n_heads > 0 && m.head_dim > 0 && m.d_state > 0 && m.n_groups > 0 && m.d_conv > 0, where,
          ": mamba2 heads, head_dim, d_state, n_groups and d_conv must be positive");
    check(m.n_heads % m.n_groups == 0, where, ": mamba2 n_heads ", m.n_heads,
          " is not a multiple of n_groups ", m.n_groups);
    check(m.norm_group_size == 0 || m.d_inner() % m.norm_group_size == 0, where, ": mamba2 norm group size ",
          m.norm_group_size, " does not divide d_inner ", m.d_inner());
    check(m.chunk > 0, where, ": mamba2 chunk must be positive");
  }
  if (k == MixerKind::Gla) {
    const GlaSpec& g = b.gla;
    check(g.n_heads > 0 && g.head_k_dim > 0 && g.head_v_dim > 0 && g.chunk > 0, where,
          ": gla n_heads, head dims and chunk must be positive");
    check(g.gate != GlaGate::PerChannel || g.gate_rank > 0, where, ": gla gate_rank must be positive");
    check(g.gate == GlaGate::Fixed || g.gate_normalizer > 0, where, ": gla gate_normalizer must be positive");
  }
  if (k == MixerKind::Mlstm) {
    const MlstmSpec& m = b.mlstm;
    check(
        m.n_heads > 0 && m.qk_dim > 0 && m.v_dim > 0 && m.qk_dim % m.n_heads == 0 && m.v_dim % m.n_heads == 0,
        where, ": mlstm qk_dim and v_dim must be positive multiples of n_heads");
    check(m.chunk > 0, where, ": mlstm chunk must be positive");
  }
  if (k == MixerKind::Titans) {
    const TitansSpec& m = b.titans;
    check(m.n_heads > 0 && m.head_dim > 0, where, ": titans n_heads and head_dim must be positive");
    check(m.depth == 1 || (m.depth == 2 && m.hidden > 0), where,
          ": titans memory depth must be 1 or 2 (with a positive hidden width), found ", m.depth);
    check(m.chunk > 0 && m.window > 0, where, ": titans chunk and window must be positive");
    check(m.max_lr > 0 && m.norm_eps > 0, where, ": titans max_lr and norm_eps must be positive");
    check(m.max_grad_norm >= 0, where, ": titans max_grad_norm must be 0 (off) or positive, found ",
          m.max_grad_norm);
  }
  if (k == MixerKind::Lightning)
    check(b.lightning.n_heads > 0 && b.lightning.head_dim > 0 && b.lightning.chunk > 0, where,
          ": lightning n_heads, head_dim and chunk must be positive");
  if (k == MixerKind::RgLru)
    check(b.rglru.width > 0 && b.rglru.n_heads > 0 && b.rglru.width % b.rglru.n_heads == 0 &&
              b.rglru.d_conv > 0,
          where, ": rglru width must be a positive multiple of n_heads, d_conv positive");
  if (k == MixerKind::Rwkv4) check(b.rwkv.attn_dim > 0, where, ": rwkv4 attn_dim must be positive");
  if (k == MixerKind::GatedDeltaNet) {
    const GatedDeltaNetSpec& g = b.gdn;
    check(g.n_k_heads > 0 && g.n_v_heads > 0 && g.head_k_dim > 0 && g.head_v_dim > 0 && g.d_conv > 0, where,
          ": gated_deltanet heads, head dims and d_conv must be positive");
    check(g.n_v_heads % g.n_k_heads == 0, where, ": gated_deltanet n_v_heads ", g.n_v_heads,
          " is not a multiple of n_k_heads ", g.n_k_heads);
    check(g.head_v_dim <= 1024, where, ": gated_deltanet head_v_dim above 1024 is not supported");
    check(g.chunk > 0, where, ": gated_deltanet chunk must be positive");
  }
}

}  // namespace

void validate_spec(const ModelSpec& s) {
  check(s.vocab_size > 0, "model spec: vocab_size must be positive, found ", s.vocab_size);
  check(s.d_model > 0, "model spec: d_model must be positive, found ", s.d_model);
  check(s.persistent_tokens >= 0, "model spec: persistent_tokens must be >= 0, found ", s.persistent_tokens);
  check(s.input_dim >= 0, "model spec: input_dim must be >= 0, found ", s.input_dim);
  check(s.input_dim == 0 || !s.tie_embeddings,
        "model spec: a model with real-valued inputs (input_dim) has no embedding table to tie its head to");
  check(s.input_dim == 0 || (s.logits_scaling == 1.0 && s.logits_soft_cap == 0),
        "model spec: a model with real-valued outputs takes no logits_scaling or logit cap");
  check(!s.blocks.empty(), "model spec: the model has no layers");
  check(int64_t(s.blocks.size()) <= kMaxLayers, "model spec: ", s.blocks.size(), " layers, more than the ",
        kMaxLayers, " supported");
  check(s.norm_eps > 0, "model spec: norm eps must be positive");
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const BlockSpec& b = s.blocks[i];
    const std::string where = "model spec: layer " + std::to_string(i);
    check(b.has_mixer || b.has_mlp || b.has_moe || b.has_cmix, where,
          ": a layer needs a token mixer, a channel mixer or both");
    check(int(b.has_mlp) + int(b.has_moe) + int(b.has_cmix) <= 1, where,
          ": a layer has at most one channel mixer (MLP, mixture of experts or RWKV channel mix)");
    if (b.has_cmix) check(b.cmix.hidden > 0, where, ": rwkv channel mix hidden size must be positive");
    if (b.has_moe)
      check(b.moe.n_experts > 0 && b.moe.top_k > 0 && b.moe.top_k <= b.moe.n_experts && b.moe.hidden > 0,
            where, ": moe needs n_experts > 0, 0 < top_k <= n_experts and hidden > 0");
    if (b.has_mixer) validate_mixer(b.mixer, b, where);
    check(!b.parallel_gate || b.has_parallel, where, ": a gate needs a parallel mixer");
    if (b.has_parallel) {
      check(b.has_mixer, where, ": a parallel mixer needs a main mixer");
      check(b.parallel != b.mixer, where, ": the parallel mixer must be of another kind than the main one");
      validate_mixer(b.parallel, b, where);
    }
    if (b.parallel_context) {
      check(b.has_parallel && !b.parallel_gate && b.mixer == MixerKind::Attention &&
                b.parallel == MixerKind::Titans,
            where, ": memory as context combines an attention mixer and a titans memory, in that order");
      check(b.mixer_in_scale == 1 && b.mixer_out_scale == 1 && b.parallel_in_scale == 1 &&
                b.parallel_out_scale == 1,
            where, ": memory as context takes no in / out scales");
    }
    check(b.context_persistent == 0 || (b.parallel_context && b.context_persistent > 0), where,
          ": persistent_tokens (", b.context_persistent,
          ") belongs to memory as context and must be positive");
    if (b.has_mlp) check(b.mlp.hidden > 0, where, ": MLP hidden size must be positive");
  }
  const LoopSpec& l = s.loop;
  if (l.end != 0 || l.begin != 0) {
    const int64_t L = int64_t(s.blocks.size());
    check(l.begin >= 0 && l.begin < l.end && l.end <= L, "model spec: loop blocks [", l.begin, ", ", l.end,
          ") are not a non-empty range of the ", L, " layers");
    check(l.loops >= 1 && l.loops <= l.max_loops, "model spec: loop count ", l.loops,
          " must be between 1 and max_loops ", l.max_loops);
    check(l.train_min >= 1 && l.train_min <= l.train_max && l.train_max <= l.max_loops,
          "model spec: training loop range [", l.train_min, ", ", l.train_max,
          "] must lie within [1, max_loops ", l.max_loops, "]");
  }
  const SegmentSpec& g = s.segment;
  if (g.length != 0 || g.memory_tokens != 0) {
    check(g.length >= 1 && g.memory_tokens >= 1 && g.bptt >= 0, "model spec: segments need length >= 1 and ",
          "memory_tokens >= 1 (and bptt >= 0), found ", g.length, ", ", g.memory_tokens, " and ", g.bptt);
    check(s.persistent_tokens == 0 && s.input_dim == 0,
          "model spec: segments with memory tokens do not combine with persistent tokens or real-valued "
          "inputs");
  }
}

}  // namespace braid
