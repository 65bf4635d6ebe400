#include "import/load.hpp"

#include <filesystem>

#include "core/error.hpp"
#include "import/hf/importer.hpp"
#include "io/safetensors.hpp"
#include "model/spec_json.hpp"

namespace braid {

namespace {

struct Resolved {
  ModelSpec spec;
  std::function<std::string(const std::string&)> tensor_name;
};

Resolved resolve(const std::string& dir) {
  namespace fs = std::filesystem;
  check(fs::is_directory(dir), dir, ": not a directory");
  const std::string path = (fs::path(dir) / "config.json").string();
  check(fs::exists(path), path, ": missing (a model directory needs config.json)");
  json j = read_json_file(path);
  JsonObject cfg(j, path);
  const std::string type = cfg.get_string("model_type");
  if (type == "braid") return {spec_from_json(j, path), [](const std::string& n) { return n; }};
  const hf::Importer* imp = hf::find_importer(type);
  if (!imp) {
    std::string known = "braid";
    for (const auto& i : hf::importers()) known += std::string(", ") + i.model_type;
    fail(path, ": unknown architecture '", type, "' (supported model_type: ", known, ")");
  }
  hf::Import im = imp->fn(cfg);
  im.spec.name = fs::path(dir).filename().string();
  return {std::move(im.spec), std::move(im.tensor_name)};
}

}  // namespace

ModelSpec load_spec(const std::string& dir) { return resolve(dir).spec; }

std::unique_ptr<Model> load_model(const std::string& dir) {
  Resolved r = resolve(dir);
  Checkpoint ck = Checkpoint::open_dir(dir);
  Weights w;
  for (const ParamDecl& p : param_decls(r.spec)) {
    const std::string name = r.tensor_name(p.name);
    if (!ck.has(name)) {
      // Tied heads are sometimes also saved; a missing untied head is an error.
      fail(dir, ": checkpoint has no tensor '", name, "' (needed for ", p.name, ")");
    }
    const TensorInfo* info = ck.info(name);
    check(info->supported, dir, ": tensor '", name, "' has dtype ", info->dtype_name,
          ", which braid does not support (F32, BF16, F16)");
    check(info->shape == p.shape, dir, ": tensor '", name, "' has shape ", shape_str(info->shape),
          ", expected ", shape_str(p.shape));
    w[p.name] = ck.get(name);
  }
  return std::make_unique<Model>(std::move(r.spec), std::move(w), dir);
}

}  // namespace braid
