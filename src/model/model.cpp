#include "model/model.hpp"

#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "mixers/attention.hpp"
#include "mixers/gated_deltanet.hpp"
#include "mixers/gla.hpp"
#include "mixers/lightning.hpp"
#include "mixers/mamba.hpp"
#include "mixers/mamba2.hpp"
#include "mixers/memory_context.hpp"
#include "mixers/mlstm.hpp"
#include "mixers/parallel.hpp"
#include "mixers/rglru.hpp"
#include "mixers/rwkv4.hpp"
#include "mixers/short_conv.hpp"
#include "mixers/titans.hpp"
#include "ops/cpu/backward.hpp"
#include "ops/cpu/elementwise.hpp"
#include "ops/cpu/gemm.hpp"
#include "ops/cpu/wdot.hpp"

namespace braid {

Model::Model(ModelSpec spec, Weights weights, const std::string& source) : spec_(std::move(spec)) {
  validate_spec(spec_);
  for (const ParamDecl& p : param_decls(spec_)) {
    auto it = weights.find(p.name);
    check(it != weights.end(), source, ": missing tensor for parameter '", p.name, "'");
    const Tensor& t = it->second;
    check(t.shape() == p.shape, source, ": tensor for '", p.name, "' has shape ", shape_str(t.shape()),
          ", expected ", shape_str(p.shape));
    check(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16 ||
              is_block_quantized(t.dtype()),
          source, ": tensor for '", p.name, "' has dtype ", dtype_name(t.dtype()),
          ", expected F32, BF16, F16, Q8_0 or Q4_0");
    // Kept as stored for now: matrices that only linear() reads stay in their format (m()),
    // everything else becomes f32 when the layers ask for it (w()).
    weights_[p.name] = t;
  }
  source_ = source;
  for (size_t i = 0; i < spec_.blocks.size(); ++i) {
    const BlockSpec& b = spec_.blocks[i];
    if (!b.has_mixer) {
      mixers_.push_back(nullptr);
    } else if (!b.has_parallel) {
      mixers_.push_back(make_mixer(b.mixer, i));
    } else if (b.parallel_context) {
      std::unique_ptr<Mixer> memory = make_mixer(b.parallel, i);
      std::unique_ptr<TitansMixer> titans(static_cast<TitansMixer*>(memory.release()));
      const std::string ctx = "blocks." + std::to_string(i) + ".context.";
      mixers_.push_back(std::make_unique<MemoryContextMixer>(
          make_mixer(b.mixer, i), std::move(titans), w(ctx + "q_proj.weight"),
          b.context_persistent > 0 ? w(ctx + "persistent") : nullptr, b.context_persistent, spec_.d_model));
    } else {
      std::vector<ParallelMixer::Branch> br(2);
      br[0] = {make_mixer(b.mixer, i), float(b.mixer_in_scale), float(b.mixer_out_scale)};
      br[1] = {make_mixer(b.parallel, i), float(b.parallel_in_scale), float(b.parallel_out_scale)};
      mixers_.push_back(std::make_unique<ParallelMixer>(
          std::move(br), spec_.d_model,
          b.parallel_gate ? ParallelMixer::Combine::Gate : ParallelMixer::Combine::Sum));
    }
    const std::string blk = "blocks." + std::to_string(i) + ".";
    BlockWeights bw;
    if (b.has_mixer) bw.norm1 = norm_w(blk + "norm1.weight"), bw.norm1_b = w_opt(blk + "norm1.bias");
    bw.norm2_b = w_opt(blk + "norm2.bias");
    if (b.has_cmix) {
      bw.norm2 = norm_w(blk + "norm2.weight");
      RwkvChannelMixWeights cw;
      cw.mix_k = w(blk + "cmix.time_mix_k");
      cw.mix_r = w(blk + "cmix.time_mix_r");
      cw.key = m(blk + "cmix.key.weight");
      cw.receptance = m(blk + "cmix.receptance.weight");
      cw.value = m(blk + "cmix.value.weight");
      cmixers_.push_back(std::make_unique<RwkvChannelMix>(b.cmix, spec_.d_model, cw));
    } else {
      cmixers_.push_back(nullptr);
    }
    if (b.has_mlp) {
      bw.norm2 = norm_w(blk + "norm2.weight");
      bw.mlp = {m_opt(blk + "mlp.gate_proj.weight"), w_opt(blk + "mlp.gate_proj.bias"),
                m(blk + "mlp.up_proj.weight"),       w_opt(blk + "mlp.up_proj.bias"),
                m(blk + "mlp.down_proj.weight"),     w_opt(blk + "mlp.down_proj.bias")};
    }
    if (b.has_moe) {
      bw.norm2 = norm_w(blk + "norm2.weight");
      bw.moe.router = w(blk + "moe.router.weight");
      for (int64_t e = 0; e < b.moe.n_experts; ++e) {
        const std::string ep = blk + "moe.experts." + std::to_string(e) + ".";
        bw.moe.experts.push_back({m(ep + "gate_proj.weight"), nullptr, m(ep + "up_proj.weight"), nullptr,
                                  m(ep + "down_proj.weight"), nullptr});
      }
      if (b.moe.shared_hidden > 0)
        bw.moe.shared = {m(blk + "moe.shared.gate_proj.weight"), nullptr,
                         m(blk + "moe.shared.up_proj.weight"),   nullptr,
                         m(blk + "moe.shared.down_proj.weight"), nullptr};
      if (b.moe.shared_gate) bw.moe.shared_gate = w(blk + "moe.shared_gate.weight");
    }
    blocks_.push_back(bw);
  }
  if (spec_.input_dim > 0)
    read_in_ = w("read_in.weight"), read_in_b_ = w("read_in.bias");
  else
    embed_ = m("embed.weight");
  if (spec_.persistent_tokens > 0) persistent_ = w("persistent.weight");
  if (spec_.segment.enabled()) memory_ = w("segment.memory.weight");
  final_norm_ = norm_w("final_norm.weight");
  final_norm_b_ = w_opt("final_norm.bias");
  if (spec_.embed_norm) embed_norm_ = norm_w("embed_norm.weight"), embed_norm_b_ = w_opt("embed_norm.bias");
  head_ = m(spec_.tie_embeddings ? "embed.weight" : "lm_head.weight");
  if (spec_.loop.enabled() && spec_.loop.step_embedding) {
    loop_step_embed_ = w("loop.step_embed.weight");
    loop_count_embed_ = w("loop.count_embed.weight");
  }
}

std::unique_ptr<Mixer> Model::make_mixer(MixerKind kind, size_t i) {
  const BlockSpec& b = spec_.blocks[i];
  const std::string pre = "blocks." + std::to_string(i) + ".attn.";
  switch (kind) {
    case MixerKind::Attention: {
      AttentionWeights aw;
      aw.wq = m(pre + "q_proj.weight");
      aw.wk = m(pre + "k_proj.weight");
      aw.wv = m(pre + "v_proj.weight");
      aw.wo = m(pre + "o_proj.weight");
      aw.bq = w_opt(pre + "q_proj.bias");
      aw.bk = w_opt(pre + "k_proj.bias");
      aw.bv = w_opt(pre + "v_proj.bias");
      aw.bo = w_opt(pre + "o_proj.bias");
      aw.q_norm = b.attn.qk_norm ? norm_w(pre + "q_norm.weight") : nullptr;
      aw.k_norm = b.attn.qk_norm ? norm_w(pre + "k_norm.weight") : nullptr;
      return std::make_unique<AttentionMixer>(b.attn, spec_.d_model, spec_.norm_eps, aw);
    }
    case MixerKind::Mamba: {
      const std::string mp = "blocks." + std::to_string(i) + ".mamba.";
      MambaWeights mw;
      mw.in_proj = m(mp + "in_proj.weight");
      mw.in_proj_b = w_opt(mp + "in_proj.bias");
      mw.conv_w = w(mp + "conv1d.weight");
      mw.conv_b = w_opt(mp + "conv1d.bias");
      mw.x_proj = m(mp + "x_proj.weight");
      mw.dt_proj = m(mp + "dt_proj.weight");
      mw.dt_proj_b = w(mp + "dt_proj.bias");
      mw.A_log = w(mp + "A_log");
      mw.D = w(mp + "D");
      mw.out_proj = m(mp + "out_proj.weight");
      mw.out_proj_b = w_opt(mp + "out_proj.bias");
      mw.b_norm = w_opt(mp + "b_norm.weight");
      mw.c_norm = w_opt(mp + "c_norm.weight");
      mw.dt_norm = w_opt(mp + "dt_norm.weight");
      return std::make_unique<MambaMixer>(b.mamba, spec_.d_model, mw);
    }
    case MixerKind::Mamba2: {
      const std::string mp = "blocks." + std::to_string(i) + ".mamba2.";
      Mamba2Weights mw;
      mw.in_proj = m(mp + "in_proj.weight");
      mw.in_proj_b = w_opt(mp + "in_proj.bias");
      mw.conv_w = w(mp + "conv1d.weight");
      mw.conv_b = w_opt(mp + "conv1d.bias");
      mw.dt_bias = w(mp + "dt_bias");
      mw.A_log = w(mp + "A_log");
      mw.D = w(mp + "D");
      mw.norm = w_opt(mp + "norm.weight");
      mw.out_proj = m(mp + "out_proj.weight");
      mw.out_proj_b = w_opt(mp + "out_proj.bias");
      return std::make_unique<Mamba2Mixer>(b.mamba2, spec_.d_model, mw);
    }
    case MixerKind::ShortConv: {
      const std::string cp = "blocks." + std::to_string(i) + ".short_conv.";
      ShortConvWeights cw;
      cw.in_proj = m(cp + "in_proj.weight");
      cw.in_proj_b = w_opt(cp + "in_proj.bias");
      cw.conv_w = w(cp + "conv.weight");
      cw.conv_b = w_opt(cp + "conv.bias");
      cw.out_proj = m(cp + "out_proj.weight");
      cw.out_proj_b = w_opt(cp + "out_proj.bias");
      return std::make_unique<ShortConvMixer>(b.short_conv, spec_.d_model, cw);
    }
    case MixerKind::Rwkv4: {
      const std::string rp = "blocks." + std::to_string(i) + ".rwkv.";
      Rwkv4Weights rw;
      rw.time_decay = w(rp + "time_decay");
      rw.time_first = w(rp + "time_first");
      rw.mix_k = w(rp + "time_mix_k");
      rw.mix_v = w(rp + "time_mix_v");
      rw.mix_r = w(rp + "time_mix_r");
      rw.key = m(rp + "key.weight");
      rw.value = m(rp + "value.weight");
      rw.receptance = m(rp + "receptance.weight");
      rw.output = m(rp + "output.weight");
      return std::make_unique<Rwkv4TimeMix>(b.rwkv, spec_.d_model, rw);
    }
    case MixerKind::RgLru: {
      const std::string rp = "blocks." + std::to_string(i) + ".rglru.";
      RgLruWeights rw;
      rw.linear_x = m(rp + "linear_x.weight");
      rw.linear_x_b = w(rp + "linear_x.bias");
      rw.linear_y = m(rp + "linear_y.weight");
      rw.linear_y_b = w(rp + "linear_y.bias");
      rw.linear_out = m(rp + "linear_out.weight");
      rw.linear_out_b = w(rp + "linear_out.bias");
      rw.conv_w = w(rp + "conv1d.weight");
      rw.conv_b = w(rp + "conv1d.bias");
      rw.input_gate = w(rp + "input_gate_weight");
      rw.input_gate_b = w(rp + "input_gate_bias");
      rw.a_gate = w(rp + "recurrent_gate_weight");
      rw.a_gate_b = w(rp + "recurrent_gate_bias");
      rw.a_param = w(rp + "recurrent_param");
      return std::make_unique<RgLruMixer>(b.rglru, spec_.d_model, rw);
    }
    case MixerKind::Gla: {
      const std::string gp = "blocks." + std::to_string(i) + ".gla.";
      GlaWeights gw;
      gw.q = m(gp + "q_proj.weight");
      gw.k = m(gp + "k_proj.weight");
      gw.v = m(gp + "v_proj.weight");
      if (b.gla.gate == GlaGate::PerChannel) {
        gw.gate_a = m(gp + "gk_proj.0.weight");
        gw.gate_b = m(gp + "gk_proj.1.weight");
        gw.gate_bias = w(gp + "gk_proj.1.bias");
      } else if (b.gla.gate == GlaGate::PerHead) {
        gw.gate_b = m(gp + "gk_proj.weight");
        gw.gate_bias = w(gp + "gk_proj.bias");
      }
      gw.g = m(gp + "g_proj.weight");
      gw.norm = w(gp + "g_norm.weight");
      gw.o = m(gp + "o_proj.weight");
      return std::make_unique<GlaMixer>(b.gla, spec_.d_model, gw);
    }
    case MixerKind::Mlstm: {
      const std::string mp = "blocks." + std::to_string(i) + ".mlstm.";
      MlstmWeights mw;
      mw.q = m(mp + "q.weight");
      mw.k = m(mp + "k.weight");
      mw.v = m(mp + "v.weight");
      mw.o = m(mp + "ogate_preact.weight");
      mw.igate = m(mp + "igate_preact.weight");
      mw.igate_b = w(mp + "igate_preact.bias");
      mw.fgate = m(mp + "fgate_preact.weight");
      mw.fgate_b = w(mp + "fgate_preact.bias");
      mw.norm = w(mp + "multihead_norm.weight");
      mw.out_proj = m(mp + "out_proj.weight");
      return std::make_unique<MlstmMixer>(b.mlstm, spec_.d_model, mw);
    }
    case MixerKind::Titans: {
      const std::string tp = "blocks." + std::to_string(i) + ".titans.";
      TitansWeights tw;
      tw.q = m(tp + "q_proj.weight");
      tw.k = m(tp + "k_proj.weight");
      tw.v = m(tp + "v_proj.weight");
      tw.gates = m(tp + "gates.weight");
      tw.gates_b = w(tp + "gates.bias");
      tw.memory = w(tp + "memory");
      tw.norm = norm_w(tp + "norm.weight");
      tw.out = m(tp + "out_proj.weight");
      return std::make_unique<TitansMixer>(b.titans, spec_.d_model, tw);
    }
    case MixerKind::Lightning: {
      const std::string lp = "blocks." + std::to_string(i) + ".lightning.";
      LightningWeights lw;
      lw.qkv_proj = m(lp + "qkv_proj.weight");
      lw.output_gate = m(lp + "output_gate.weight");
      lw.norm = w(lp + "norm.weight");
      lw.out_proj = m(lp + "out_proj.weight");
      return std::make_unique<LightningMixer>(b.lightning, spec_.d_model, lw);
    }
    case MixerKind::GatedDeltaNet: {
      const std::string gp = "blocks." + std::to_string(i) + ".gdn.";
      GatedDeltaNetWeights gw;
      gw.in_proj_qkvz = m(gp + "in_proj_qkvz.weight");
      gw.in_proj_ba = m(gp + "in_proj_ba.weight");
      gw.conv_w = w(gp + "conv1d.weight");
      gw.dt_bias = w(gp + "dt_bias");
      gw.A_log = w(gp + "A_log");
      gw.norm = w(gp + "norm.weight");
      gw.out_proj = m(gp + "out_proj.weight");
      return std::make_unique<GatedDeltaNetMixer>(b.gdn, spec_.d_model, gw);
    }
  }
  fail("unknown mixer kind");
}

const float* Model::norm_w(const std::string& name) {
  if (!spec_.norm_weight_offset) return w(name);
  auto it = weights_.find(name);
  check(it != weights_.end(), "model has no parameter '", name, "'");
  // The reference multiplies by (1 + w) computed in f32; precompute exactly that.
  std::vector<float>& v = offset_norms_[name];
  const float* src = it->second.f32();
  v.resize(size_t(it->second.numel()));
  for (size_t j = 0; j < v.size(); ++j) v[j] = 1.0f + src[j];
  return v.data();
}

const float* Model::w(const std::string& name) {
  auto it = weights_.find(name);
  check(it != weights_.end(), "model has no parameter '", name, "'");
  Tensor& t = it->second;
  check(t.dtype() == DType::F32 || !matrix_params_.count(name), "'", name,
        "' is read both as a matrix in its stored format and as f32 values");
  check(!is_block_quantized(t.dtype()), source_, ": '", name, "' is stored as ", dtype_name(t.dtype()),
        ", but braid reads it as f32 values (only projection matrices can be block-quantized)");
  if (t.dtype() != DType::F32) t = t.to_f32();
  return t.f32();
}

const float* Model::w_opt(const std::string& name) { return weights_.count(name) ? w(name) : nullptr; }

ops::MatRef Model::m(const std::string& name) {
  auto it = weights_.find(name);
  check(it != weights_.end(), "model has no parameter '", name, "'");
  const Tensor& t = it->second;
  check(t.rank() == 2, "'", name, "' is not a matrix");
  matrix_params_.insert(name);
  if (t.dtype() == DType::F32) return t.f32();
  return {t.raw(), t.dtype()};
}

ops::MatRef Model::m_opt(const std::string& name) { return weights_.count(name) ? m(name) : ops::MatRef(); }

std::vector<std::pair<const float*, std::string>> Model::param_addresses() const {
  std::vector<std::pair<const float*, std::string>> out;
  for (const auto& [name, t] : weights_)
    if (t.dtype() == DType::F32)  // compact matrices are for inference only
      out.emplace_back(offset_norms_.count(name) ? offset_norms_.at(name).data() : t.f32(), name);
  return out;
}

float* Model::param_mut(const std::string& name) {
  auto it = weights_.find(name);
  check(it != weights_.end(), "model has no parameter '", name, "'");
  return it->second.f32_mut();
}

void Model::refresh_derived() {
  for (auto& [name, v] : offset_norms_) {
    const float* src = weights_.at(name).f32();
    for (size_t j = 0; j < v.size(); ++j) v[j] = 1.0f + src[j];
  }
  for (auto& m : mixers_)
    if (m) m->refresh_derived();
  for (auto& m : cmixers_)
    if (m) m->refresh_derived();
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const auto& kv : weights_) n += kv.second.numel();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& kv : weights_) n += kv.second.nbytes();
  return n;
}

std::map<std::string, size_t> Model::weight_bytes_by_format() const {
  std::map<std::string, size_t> out;
  for (const auto& [name, t] : weights_) out[dtype_name(t.dtype())] += t.nbytes();
  return out;
}

size_t Model::layer_fixed_state_bytes(size_t i) const {
  return (mixers_[i] ? mixers_[i]->fixed_state_bytes() : 0) +
         (cmixers_[i] ? cmixers_[i]->fixed_state_bytes() : 0);
}

size_t Model::layer_bytes_per_token(size_t i) const {
  return (mixers_[i] ? mixers_[i]->bytes_per_token() : 0) +
         (cmixers_[i] ? cmixers_[i]->bytes_per_token() : 0);
}

size_t Model::fixed_state_bytes() const {
  size_t n = 0, per_token = 0;
  for (const LayerStep& st : schedule())
    n += layer_fixed_state_bytes(st.block), per_token += layer_bytes_per_token(st.block);
  // Segments bound every layer's context to the rows of one segment (read, tokens, write)
  // and add the memory they carry.
  if (const SegmentSpec& g = spec_.segment; g.enabled())
    n += per_token * size_t(2 * g.memory_tokens + g.length) +
         size_t(g.memory_tokens * spec_.d_model) * sizeof(float);
  return n;
}

size_t Model::state_bytes_per_token() const {
  if (spec_.segment.enabled()) return 0;  // counted in the fixed bytes
  size_t n = 0;
  for (const LayerStep& st : schedule()) n += layer_bytes_per_token(st.block);
  return n;
}

std::vector<LayerStep> Model::schedule(int64_t loops) const {
  const LoopSpec& l = spec_.loop;
  if (!l.enabled()) loops = 1;
  if (loops == 0) loops = l.loops;
  check(loops >= 1 && (!l.enabled() || loops <= l.max_loops), "loop count ", loops, " is outside [1, ",
        l.max_loops, "], the range this model allows");
  const size_t n = mixers_.size() + (l.enabled() ? size_t((loops - 1) * (l.end - l.begin)) : 0);
  std::vector<LayerStep> s;
  for (size_t i = 0; i < n; ++i) s.push_back(step_at(i, loops));
  return s;
}

LayerStep Model::step_at(size_t s, int64_t loops) const {
  const LoopSpec& l = spec_.loop;
  if (!l.enabled() || int64_t(s) < l.begin) return {s, -1};
  const int64_t core = l.end - l.begin, in_loops = int64_t(s) - l.begin;
  if (in_loops < loops * core) return {size_t(l.begin + in_loops % core), in_loops / core};
  return {size_t(int64_t(s) - (loops - 1) * core), -1};  // the coda
}

int64_t Model::loops_for_states(size_t n) const {
  if (spec_.segment.enabled()) {  // the segment state follows the layers'
    check(n >= 1, "forward: no states");
    --n;
  }
  const LoopSpec& l = spec_.loop;
  const size_t L = mixers_.size();
  if (!l.enabled()) {
    check(n == L, "forward: ", n, " states for ", L, " layers");
    return 1;
  }
  const size_t core = size_t(l.end - l.begin);
  check(n >= L && (n - L) % core == 0 && int64_t((n - L) / core) + 1 <= l.max_loops, "forward: ", n,
        " states do not fit ", L, " layers with a looped core of ", core, " (at most ", l.max_loops,
        " loops)");
  return int64_t((n - L) / core) + 1;
}

std::unique_ptr<State> Model::make_layer_state(size_t i) const {
  std::unique_ptr<State> tok = mixers_[i] ? mixers_[i]->make_state() : nullptr;
  if (!cmixers_[i]) return tok;
  auto c = std::make_unique<CompositeState>();
  c->parts.push_back(std::move(tok));
  c->parts.push_back(cmixers_[i]->make_state());
  return c;
}

std::vector<std::unique_ptr<State>> Model::layer_states(int64_t loops) const {
  std::vector<std::unique_ptr<State>> s;
  for (const LayerStep& st : schedule(loops)) s.push_back(make_layer_state(st.block));
  return s;
}

std::vector<std::unique_ptr<State>> Model::make_states(int64_t loops) const {
  std::vector<std::unique_ptr<State>> s = layer_states(loops);
  if (spec_.segment.enabled()) {
    auto seg = std::make_unique<SegmentState>();
    seg->length = spec_.segment.length;
    seg->memory.assign(memory_, memory_ + spec_.segment.memory_tokens * spec_.d_model);
    s.push_back(std::move(seg));
    Workspace ws;
    start_segment(s, memory_, loops_for_states(s.size()), ws);
    return s;
  }
  if (const int64_t N = spec_.persistent_tokens; N > 0) {
    Workspace ws;
    std::memcpy(ws.get(Workspace::kHidden, size_t(N * spec_.d_model)), persistent_,
                size_t(N * spec_.d_model) * sizeof(float));
    forward_rows(N, s, ws, LogitsMode::None, nullptr, nullptr);
  }
  return s;
}

void Model::loop_entry(float* h, float* e, int64_t iter, int64_t loops, int64_t T) const {
  const LoopSpec& l = spec_.loop;
  const int64_t D = spec_.d_model;
  if (l.inject && iter == 0 && loops > 1)
    std::memcpy(e, h, size_t(T * D) * sizeof(float));
  else if (l.inject && iter > 0)
    ops::add_inplace(h, e, T * D);
  if (!l.step_embedding) return;
  const float *se = loop_step_embed_ + iter * D, *ce = loop_count_embed_ + (loops - 1) * D;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < D; ++c) h[t * D + c] += se[c] + ce[c];
}

void Model::loop_entry_backward(float* dh, float* de, int64_t iter, int64_t loops, int64_t T,
                                GradSink& g) const {
  const LoopSpec& l = spec_.loop;
  const int64_t D = spec_.d_model;
  if (l.step_embedding) {
    float* gs = g.of(loop_step_embed_);
    float* gc = g.of(loop_count_embed_);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c) {
        if (gs) gs[iter * D + c] += dh[t * D + c];
        if (gc) gc[(loops - 1) * D + c] += dh[t * D + c];
      }
  }
  if (l.inject && iter > 0)
    ops::add_inplace(de, dh, T * D);
  else if (l.inject && iter == 0 && loops > 1)
    ops::add_inplace(dh, de, T * D);
}

void Model::norm(const float* x, const float* w, const float* b, int64_t T, float* y, double eps) const {
  if (eps == 0) eps = spec_.norm_eps;
  if (spec_.norm_kind == NormKind::Layer)
    ops::layernorm(x, w, b, float(eps), T, spec_.d_model, y);
  else
    ops::rmsnorm(x, w, float(eps), T, spec_.d_model, y);
}

void Model::norm_backward(const float* x, const float* w, const float* b, int64_t T, const float* dy,
                          float* dx, bool accumulate_dx, GradSink& g, double eps) const {
  if (eps == 0) eps = spec_.norm_eps;
  if (spec_.norm_kind == NormKind::Layer)
    ops::layernorm_backward(x, w, float(eps), T, spec_.d_model, dy, dx, accumulate_dx, g.of(w), g.of(b));
  else
    ops::rmsnorm_backward(x, w, float(eps), T, spec_.d_model, dy, dx, accumulate_dx, g.of(w));
}

void Model::add_residual(float* h, const float* n, const float* v, int64_t count, bool from_norm,
                         double alpha, double beta) const {
  const float rm = float(spec_.residual_multiplier);
  if (!from_norm && rm == 1.0f && alpha == 1.0 && beta == 1.0) return ops::add_inplace(h, v, count);
  const float* base = from_norm ? n : h;
  const float a = float(alpha), b = float(beta) * rm;
  for (int64_t i = 0; i < count; ++i) h[i] = base[i] * a + v[i] * b;
}

void Model::forward(const int32_t* tokens, int64_t T, std::vector<std::unique_ptr<State>>& states,
                    Workspace& ws, LogitsMode mode, float* logits, HiddenCapture* capture) const {
  loops_for_states(states.size());  // throws for states of another depth
  check(spec_.input_dim == 0, "this model reads vectors of ", spec_.input_dim, " values, not token ids");
  if (T == 0) return;
  const int64_t V = spec_.vocab_size;
  for (int64_t t = 0; t < T; ++t)
    check(tokens[t] >= 0 && tokens[t] < V, "token id ", tokens[t], " at position ", t,
          " is outside the vocabulary [0, ", V, ")");
  if (spec_.segment.enabled()) {
    check(capture == nullptr, "hidden-state capture is not supported for segmented models");
    return forward_segments(tokens, T, states, ws, mode, logits);
  }
  embed_tokens(tokens, T, ws.get(Workspace::kHidden, size_t(T * spec_.d_model)));
  forward_rows(T, states, ws, mode, logits, capture);
}

void Model::embed_tokens(const int32_t* tokens, int64_t n, float* rows) const {
  const int64_t D = spec_.d_model;
  if (embed_.dtype == DType::F32) {
    const float* e = static_cast<const float*>(embed_.data);
    for (int64_t t = 0; t < n; ++t)
      std::memcpy(rows + t * D, e + int64_t(tokens[t]) * D, size_t(D) * sizeof(float));
  } else {
    for (int64_t t = 0; t < n; ++t)
      ops::dequantize_rows(embed_.dtype, embed_.from_row(tokens[t], D).data, 1, D, rows + t * D);
  }
}

void Model::forward_vectors(const float* x, int64_t T, std::vector<std::unique_ptr<State>>& states,
                            Workspace& ws, LogitsMode mode, float* out, HiddenCapture* capture) const {
  loops_for_states(states.size());
  const int64_t I = spec_.input_dim;
  check(I > 0, "this model reads token ids, not vectors");
  if (T == 0) return;
  for (int64_t i = 0; i < T * I; ++i)
    check(std::isfinite(x[i]), "input value ", x[i], " at position ", i / I, " is not finite");
  ops::linear(x, T, I, read_in_, spec_.d_model, read_in_b_,
              ws.get(Workspace::kHidden, size_t(T * spec_.d_model)));
  forward_rows(T, states, ws, mode, out, capture);
}

double Model::relative_change(const float* before, const float* after, int64_t T) const {
  const int64_t D = spec_.d_model;
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    double diff = 0, norm2 = 0;
    for (int64_t c = 0; c < D; ++c) {
      const double a = after[t * D + c], d = a - before[t * D + c];
      diff += d * d, norm2 += a * a;
    }
    worst = std::max(worst, std::sqrt(diff / std::max(norm2, 1e-30)));
  }
  return worst;
}

void Model::forward_rows(int64_t T, std::vector<std::unique_ptr<State>>& states, Workspace& ws,
                         LogitsMode mode, float* logits, HiddenCapture* capture) const {
  std::vector<std::unique_ptr<State>>* one = &states;
  forward_rows(T, &one, 1, ws, mode, logits, capture);
}

void Model::forward_batch(const int32_t* tokens, int64_t B, std::vector<std::unique_ptr<State>>* const* seqs,
                          Workspace& ws, float* logits) const {
  check(spec_.input_dim == 0, "this model reads vectors of ", spec_.input_dim, " values, not token ids");
  check(!spec_.segment.enabled(),
        "batched decoding is not supported for segmented models; feed each sequence");
  if (B == 0) return;
  const int64_t V = spec_.vocab_size;
  for (int64_t b = 0; b < B; ++b) {
    check(tokens[b] >= 0 && tokens[b] < V, "token id ", tokens[b], " of sequence ", b,
          " is outside the vocabulary [0, ", V, ")");
    check(seqs[b]->size() == seqs[0]->size(), "batched decoding: sequence ", b,
          " runs at another loop depth");
  }
  loops_for_states(seqs[0]->size());
  ops::DecodeRows rows;  // each row computed as if alone
  embed_tokens(tokens, B, ws.get(Workspace::kHidden, size_t(B * spec_.d_model)));
  forward_rows(B, seqs, B, ws, LogitsMode::All, logits, nullptr);
}

void Model::forward_rows(int64_t T, std::vector<std::unique_ptr<State>>* const* seqs, int64_t n_seqs,
                         Workspace& ws, LogitsMode mode, float* logits, HiddenCapture* capture) const {
  const std::vector<std::unique_ptr<State>>& states = *seqs[0];
  const int64_t loops = loops_for_states(states.size());
  const int64_t D = spec_.d_model, V = spec_.vocab_size;
  float* h = ws.get(Workspace::kHidden, size_t(T * D));
  float* n = ws.get(Workspace::kNormed, size_t(T * D));
  float* tmp = ws.get(Workspace::kMixOut, size_t(T * D));
  if (spec_.embedding_multiplier != 1.0)
    for (int64_t i = 0; i < T * D; ++i) h[i] *= float(spec_.embedding_multiplier);
  auto residual = [&](const float* v, bool from_norm, double alpha, double beta) {
    add_residual(h, n, v, T * D, from_norm, alpha, beta);
  };
  auto snap = [&](const float* src) {
    if (capture) capture->states.emplace_back(src, src + T * D);
  };
  if (capture) capture->states.clear(), capture->loop_change.clear();
  std::vector<float> prev_iter;      // the stream after the previous core iteration, when captured
  std::vector<State*> batch_states;  // one layer's states of the batch's sequences
  if (embed_norm_) norm(h, embed_norm_, embed_norm_b_, T, h);
  if (spec_.hidden_states_from_embedding) snap(h);
  const size_t n_steps = states.size() - (spec_.segment.enabled() ? 1 : 0);
  float* loop_in = spec_.loop.enabled() ? ws.get(Workspace::kLoopInput, size_t(T * D)) : nullptr;
  for (size_t s = 0; s < n_steps; ++s) {
    const LayerStep step = step_at(s, loops);
    const size_t i = step.block;
    const BlockSpec& b = spec_.blocks[i];
    const BlockWeights& bw = blocks_[i];
    if (step.iter >= 0 && int64_t(i) == spec_.loop.begin) loop_entry(h, loop_in, step.iter, loops, T);
    // The token mixer's and channel mixer's states of sequence q at this step.
    auto layer_states = [&](int64_t q) {
      State* st = (*seqs[q])[s].get();
      if (!cmixers_[i]) return std::make_pair(st, static_cast<State*>(nullptr));
      auto* c = dynamic_cast<CompositeState*>(st);
      check(c != nullptr && c->parts.size() == 2, "forward: layer ", i,
            " was given a state of another model");
      return std::make_pair(c->parts[0].get(), c->parts[1].get());
    };
    // One sequence: all T rows through the stateful mixer at once; a batch: row q alone
    // (one token) with sequence q's state.
    auto run_stateful = [&](const Mixer& m, bool channel) {
      if (n_seqs == 1) {
        const auto st = layer_states(0);
        m.forward(n, T, *(channel ? st.second : st.first), tmp, ws);
      } else {
        batch_states.resize(size_t(n_seqs));
        for (int64_t q = 0; q < n_seqs; ++q) {
          const auto st = layer_states(q);
          batch_states[size_t(q)] = channel ? st.second : st.first;
        }
        m.decode_batch(n, n_seqs, D, batch_states.data(), tmp, ws);
      }
    };
    if (mixers_[i]) {
      norm(h, bw.norm1, bw.norm1_b, T, n);
      run_stateful(*mixers_[i], false);
      residual(tmp, b.normed_residual, b.mixer_alpha, b.mixer_beta);
    }
    if (b.has_mlp || b.has_moe || b.has_cmix) {
      norm(h, bw.norm2, bw.norm2_b, T, n);
      if (b.has_cmix)
        run_stateful(*cmixers_[i], true);
      else if (b.has_moe)
        moe_forward(b.moe, bw.moe, n, T, D, tmp, ws);
      else
        ffn_forward(b.mlp, n, T, D, bw.mlp, tmp, ws);
      residual(tmp, b.normed_residual, b.channel_alpha, b.channel_beta);
    }
    if (b.post_scale != 1.0)
      for (int64_t j = 0; j < T * D; ++j) h[j] *= float(b.post_scale);
    if (s + 1 < n_steps || !spec_.hidden_states_from_embedding) snap(h);
    if (capture && step.iter >= 0 && int64_t(i) == spec_.loop.end - 1) {
      if (step.iter > 0) capture->loop_change.push_back(relative_change(prev_iter.data(), h, T));
      prev_iter.assign(h, h + T * D);
    }
  }
  norm(h, final_norm_, final_norm_b_, T, n, spec_.final_norm_eps);
  snap(n);
  if (mode == LogitsMode::None) return;
  const ops::MatRef head = head_;
  if (mode == LogitsMode::Last)
    ops::linear(n + (T - 1) * D, 1, D, head, V, nullptr, logits);
  else
    ops::linear(n, T, D, head, V, nullptr, logits);
  const int64_t n_out = (mode == LogitsMode::Last ? 1 : T) * V;
  if (spec_.logits_scaling != 1.0) {
    const float sc = float(spec_.logits_scaling);
    for (int64_t i = 0; i < n_out; ++i) logits[i] /= sc;
  }
  if (spec_.logits_soft_cap > 0) {
    const float cap = float(spec_.logits_soft_cap);
    for (int64_t i = 0; i < n_out; ++i) logits[i] = std::tanh(logits[i] / cap) * cap;
  }
}

}  // namespace braid
