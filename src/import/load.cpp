#include "import/load.hpp"

#include <filesystem>
#include <regex>

#include "core/error.hpp"
#include "import/hf/importer.hpp"
#include "io/safetensors.hpp"
#include "model/spec_json.hpp"

namespace braid {

namespace {

struct Resolved {
  ModelSpec spec;
  std::function<hf::TensorRef(const std::string&)> tensor_ref;
};

Resolved resolve(const std::string& dir) {
  namespace fs = std::filesystem;
  check(fs::is_directory(dir), dir, ": not a directory");
  const std::string path = (fs::path(dir) / "config.json").string();
  check(fs::exists(path), path, ": missing (a model directory needs config.json)");
  json j = read_json_file(path);
  JsonObject cfg(j, path);
  const std::string type = cfg.get_string("model_type");
  if (type == "braid")
    return {spec_from_json(j, path), [](const std::string& n) { return hf::TensorRef{n}; }};
  const hf::Importer* imp = hf::find_importer(type);
  if (!imp) {
    std::string known = "braid";
    for (const auto& i : hf::importers()) known += std::string(", ") + i.model_type;
    fail(path, ": unknown architecture '", type, "' (supported model_type: ", known, ")");
  }
  hf::Import im = imp->fn(cfg);
  im.spec.name = fs::path(dir).filename().string();
  // An inconsistent config is named as such, before any tensor shape derived from it.
  try {
    validate_spec(im.spec);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  if (im.tensor_ref) return {std::move(im.spec), std::move(im.tensor_ref)};
  auto by_name = im.tensor_name;
  return {std::move(im.spec), [by_name](const std::string& n) { return hf::TensorRef{by_name(n)}; }};
}

}  // namespace

ModelSpec load_spec(const std::string& dir) { return resolve(dir).spec; }

namespace {

// Newer transformers checkpoints store a MoE layer's experts fused: experts.gate_up_proj
// [E, 2F, D] (expert e's gate is rows [0, F) of entry e, its up rows [F, 2F)) and
// experts.down_proj [E, D, F]. Maps a per-expert name ("...experts.3.up_proj.weight", or
// Mixtral-style w1 / w3 / w2 for gate / up / down; F rows) to its place in the fused
// tensor, under the same module or (MiniMax) under `mlp`; empty names for other tensors.
std::vector<hf::TensorRef> fused_expert_refs(const std::string& name, int64_t rows) {
  static const std::regex re(R"(^(.*\.)experts\.([0-9]+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$)");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return {};
  const int64_t e = std::stoll(m[2].str());
  const std::string which = m[3].str();
  std::vector<std::string> modules = {m[1].str()};
  if (const size_t at = modules[0].rfind(".block_sparse_moe."); at != std::string::npos)
    modules.push_back(modules[0].substr(0, at) + ".mlp.");
  std::vector<hf::TensorRef> out;
  for (const std::string& mod : modules) {
    if (which == "down_proj" || which == "w2")
      out.push_back({mod + "experts.down_proj", e});
    else if (which == "gate_proj" || which == "w1")
      out.push_back({mod + "experts.gate_up_proj", e, 0, rows});
    else
      out.push_back({mod + "experts.gate_up_proj", e, rows, 2 * rows});
  }
  return out;
}

// Names newer transformers versions give the same tensors, tried when a checkpoint lacks
// the one a family's importer asks for (e.g. gradient files written by those versions).
std::string renamed(std::string name) {
  static const std::pair<std::string, std::string> kRenames[] = {
      {"backbone.", "model."},  // NemotronH
      {".block_sparse_moe.input_linear.weight",
       ".block_sparse_moe.experts.gate_up_proj"},  // GraniteMoeHybrid
      {".block_sparse_moe.output_linear.weight", ".block_sparse_moe.experts.down_proj"},
      {".router.layer.weight", ".router.weight"},
      {".block_sparse_moe.gate.weight", ".mlp.gate.weight"},  // MiniMax
  };
  for (const auto& [from, to] : kRenames)
    if (const size_t at = name.find(from); at != std::string::npos) name.replace(at, from.size(), to);
  return name;
}

// Every declared parameter of r.spec from checkpoint ck (sliced and squeezed as the
// family stores it, under a newer transformers name, or from fused experts), under its
// canonical name; `what` names the source in errors.
Weights gather(const Resolved& r, const Checkpoint& ck, const std::string& what) {
  Weights w;
  for (const ParamDecl& p : param_decls(r.spec)) {
    hf::TensorRef ref = r.tensor_ref(p.name);
    if (!ck.has(ref.name))
      if (std::string alt = renamed(ref.name); ck.has(alt)) ref.name = alt;
    if (!ck.has(ref.name) && ref.index < 0 && ref.row_end < 0 && !p.shape.empty())
      for (const hf::TensorRef& f : fused_expert_refs(ref.name, p.shape[0]))
        if (ck.has(f.name)) {
          ref = f;
          break;
        }
    const std::string& name = ref.name;
    if (!ck.has(name)) fail(what, ": checkpoint has no tensor '", name, "' (needed for ", p.name, ")");
    const TensorInfo* info = ck.info(name);
    check(info->supported, what, ": tensor '", name, "' has dtype ", info->dtype_name,
          ", which braid does not support (F32, BF16, F16)");
    // Shape after taking the referenced entry and rows.
    Shape shape = info->shape;
    if (ref.index >= 0) {
      check(shape.size() >= 2 && ref.index < shape[0], what, ": tensor '", name, "' with shape ",
            shape_str(shape), " has no entry ", ref.index, " (needed for ", p.name, ")");
      shape.erase(shape.begin());
    }
    if (ref.row_end >= 0) {
      check(!shape.empty() && ref.row_begin >= 0 && ref.row_begin < ref.row_end && ref.row_end <= shape[0],
            what, ": tensor '", name, "' with shape ", shape_str(info->shape), " has no rows [",
            ref.row_begin, ", ", ref.row_end, ") (needed for ", p.name, ")");
      shape[0] = ref.row_end - ref.row_begin;
    }
    // Vectors some checkpoints store with leading unit dimensions ([1, 1, D] for [D]).
    bool squeezed = false;
    while (shape.size() > p.shape.size() && shape.front() == 1) shape.erase(shape.begin()), squeezed = true;
    check(shape == p.shape, what, ": tensor '", name, "' has shape ", shape_str(shape), ", expected ",
          shape_str(p.shape), ref.index >= 0 || ref.row_end >= 0 ? " (after slicing)" : "");
    Tensor t = ck.get(name);
    if (ref.index >= 0) {
      Shape rest(t.shape().begin() + 1, t.shape().end());
      t = t.slice_rows(ref.index, ref.index + 1).reshape(rest);
    }
    if (ref.row_end >= 0) t = t.slice_rows(ref.row_begin, ref.row_end);
    if (squeezed) t = t.reshape(shape);
    w[p.name] = t;
  }
  return w;
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& dir, bool keep_16bit) {
  Resolved r = resolve(dir);
  Weights w = gather(r, Checkpoint::open_dir(dir), dir);
  if (!keep_16bit)
    for (auto& [name, t] : w)
      if (t.dtype() == DType::BF16 || t.dtype() == DType::F16) t = t.to_f32();
  return std::make_unique<Model>(std::move(r.spec), std::move(w), dir);
}

Weights load_param_tensors(const std::string& dir, const std::string& file, const std::string& prefix) {
  return gather(resolve(dir), Checkpoint::open_file(file, prefix), file);
}

}  // namespace braid
