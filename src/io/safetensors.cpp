#include "io/safetensors.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/quant.hpp"
#include "io/json.hpp"

namespace braid {

namespace {

// Element sizes of every dtype the format defines (braid computes with a subset).
bool format_dtype_size(const std::string& n, size_t* size) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = sizes.find(n);
  if (it == sizes.end()) return false;
  *size = it->second;
  return true;
}

constexpr uint64_t kMaxHeader = 100u << 20;  // 100 MiB, as the reference implementation

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  return from_memory(MappedFile::open(path));
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_memory(std::shared_ptr<MappedFile> file) {
  const std::string& path = file->path();
  const uint8_t* p = file->data();
  size_t size = file->size();
  check(size >= 8, path, ": not a safetensors file: ", size,
        " bytes is shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
  check(n >= 2, path, ": header length ", n, " is too small for a JSON object");
  check(n <= kMaxHeader, path, ": header length ", n, " exceeds the 100 MiB limit");
  check(n <= size - 8, path, ": truncated: header length ", n, " but only ", size - 8, " bytes follow");
  std::string text(reinterpret_cast<const char*>(p + 8), size_t(n));
  json h = parse_json(text, path + " (header)");
  check(h.is_object(), path, ": header is not a JSON object");

  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->file_ = file;
  f->data_start_ = 8 + size_t(n);
  size_t data_size = size - f->data_start_;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      check(v.is_object(), path, ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        check(m.value().is_string(), path, ": __metadata__ value for '", m.key(), "' is not a string");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    std::string where = path + ": tensor '" + name + "'";
    check(v.is_object(), where, ": entry is not an object");
    check(v.contains("dtype") && v["dtype"].is_string(), where, ": missing or non-string dtype");
    check(v.contains("shape") && v["shape"].is_array(), where, ": missing or non-array shape");
    check(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2, where,
          ": data_offsets must be [begin, end]");
    TensorInfo ti;
    ti.name = name;
    ti.dtype_name = v["dtype"].get<std::string>();
    size_t esize = 0;
    check(format_dtype_size(ti.dtype_name, &esize), where, ": unknown dtype '", ti.dtype_name, "'");
    ti.supported = parse_dtype(ti.dtype_name, &ti.dtype);
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      check(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where,
            ": shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      check(dim == 0 || numel <= (uint64_t(1) << 62) / dim, where, ": shape overflows");
      numel *= dim;
      ti.shape.push_back(int64_t(dim));
    }
    for (const auto& o : v["data_offsets"])
      check(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), where,
            ": data_offsets must be non-negative integers");
    uint64_t b = v["data_offsets"][0].get<uint64_t>(), e = v["data_offsets"][1].get<uint64_t>();
    check(b <= e, where, ": data_offsets begin ", b, " > end ", e);
    check(e <= data_size, where, ": data_offsets end ", e, " is past the data buffer (", data_size,
          " bytes; file truncated?)");
    check(numel <= (uint64_t(1) << 62) / esize && e - b == numel * esize, where, ": ", e - b,
          " bytes for shape ", shape_str(ti.shape), " of ", ti.dtype_name, " (expected ", numel * esize, ")");
    ti.begin = size_t(b);
    ti.end = size_t(e);
    f->index_[name] = f->infos_.size();
    f->infos_.push_back(std::move(ti));
  }
  // The tensors must tile the data buffer: sorted by offset, no gaps, no overlaps.
  std::vector<const TensorInfo*> order;
  for (const auto& t : f->infos_) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](auto a, auto b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  size_t at = 0;
  for (const TensorInfo* t : order) {
    check(t->begin == at, path, ": tensor '", t->name, "' starts at byte ", t->begin, ", expected ", at,
          " (tensors must tile the data buffer without gaps or overlaps)");
    at = t->end;
  }
  check(at == data_size, path, ": data buffer is ", data_size, " bytes but tensors cover ", at);
  // Block-quantized matrices are stored as U8 [rows, row bytes] and named in the metadata.
  // Whether the file names the grouped layout of a block format (an unknown layout is refused).
  auto grouped = [&](const char* key, const char* expected, const char* format) {
    const auto layout = f->metadata_.find(key);
    check(layout == f->metadata_.end() || layout->second == expected, path, ": __metadata__ gives ", format,
          " layout '", layout == f->metadata_.end() ? "" : layout->second, "' (expected ", expected, ")");
    return layout != f->metadata_.end();
  };
  const bool q4_grouped = grouped(kQ4LayoutKey, kQ4Layout, "Q4_0");
  const bool q8_grouped = grouped(kQ8LayoutKey, kQ8Layout, "Q8_0");
  for (const auto& [key, value] : f->metadata_) {
    if (key.rfind(kBlockFormatKey, 0) != 0) continue;
    const std::string name = key.substr(std::strlen(kBlockFormatKey));
    auto it = f->index_.find(name);
    check(it != f->index_.end(), path, ": __metadata__ gives a block format for '", name,
          "', which is not a tensor of the file");
    TensorInfo& ti = f->infos_[it->second];
    const std::string where = path + ": tensor '" + name + "'";
    DType q = DType::Q8_0;
    check(value == "Q8_0" || value == "Q4_0", where, ": unknown block format '", value,
          "' (expected Q8_0 or Q4_0)");
    if (value == "Q4_0") q = DType::Q4_0;
    check(ti.dtype_name == "U8" && ti.shape.size() == 2, where, ": a ", value,
          " matrix must be stored as a 2-d U8 array, not ", ti.dtype_name, " ", shape_str(ti.shape));
    const int64_t block = int64_t(row_bytes(q, 32));
    check(ti.shape[1] % block == 0, where, ": ", ti.shape[1], " bytes per row is not a whole number of ",
          value, " blocks (", block, " bytes each)");
    ti.dtype = q;
    ti.shape[1] = ti.shape[1] / block * 32;
    ti.blocks_in_order = !(q == DType::Q4_0 ? q4_grouped : q8_grouped);
  }
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &infos_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  check(t != nullptr, path(), ": no tensor named '", name, "'");
  check(t->supported, path(), ": tensor '", name, "' has dtype ", t->dtype_name,
        ", which braid does not support");
  const uint8_t* data = file_->data() + data_start_ + t->begin;
  if (t->blocks_in_order) {
    Tensor out = Tensor::zeros(t->dtype, t->shape);
    const int64_t cols = t->shape[1];
    const size_t rb = row_bytes(t->dtype, cols);
    const auto rewrite = t->dtype == DType::Q4_0 ? q4_row_from_blocks_in_order : q8_row_from_blocks_in_order;
    for (int64_t r = 0; r < t->shape[0]; ++r)
      rewrite(data + size_t(r) * rb, cols, out.data_mut<uint8_t>() + size_t(r) * rb);
    return out;
  }
  return Tensor::view(t->dtype, t->shape, data, file_);
}

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  c.dir_ = dir;
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> shards;
  if (fs::exists(index)) {
    json j = read_json_file(index.string());
    check(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index.string(),
          ": missing 'weight_map' object");
    std::map<std::string, size_t> shard_ids;
    std::map<std::string, std::string> wanted;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      check(it.value().is_string(), index.string(), ": weight_map entry '", it.key(), "' is not a file name");
      std::string file = it.value().get<std::string>();
      check(file.find('/') == std::string::npos && file.find("..") == std::string::npos, index.string(),
            ": shard name '", file, "' must be a plain file name");
      if (!shard_ids.count(file)) {
        shard_ids[file] = c.files_.size();
        c.files_.push_back(SafetensorsFile::open((fs::path(dir) / file).string()));
      }
      wanted[it.key()] = file;
    }
    for (const auto& [name, file] : wanted) {
      size_t id = shard_ids[file];
      check(c.files_[id]->find(name) != nullptr, index.string(), ": tensor '", name, "' is listed in ", file,
            " but that shard does not contain it");
      c.where_[name] = id;
    }
  } else if (fs::exists(single)) {
    c.files_.push_back(SafetensorsFile::open(single.string()));
    for (const auto& t : c.files_[0]->tensors()) c.where_[t.name] = 0;
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json");
  }
  return c;
}

Checkpoint Checkpoint::open_file(const std::string& path, const std::string& prefix) {
  Checkpoint c;
  c.dir_ = path;
  c.prefix_ = prefix;
  c.files_.push_back(SafetensorsFile::open(path));
  for (const auto& t : c.files_[0]->tensors())
    if (t.name.compare(0, prefix.size(), prefix) == 0) c.where_[t.name.substr(prefix.size())] = 0;
  return c;
}

const TensorInfo* Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(prefix_ + name);
}

Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  check(it != where_.end(), dir_, ": checkpoint has no tensor '", name, "'");
  return files_[it->second]->get(prefix_ + name);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  std::map<std::string, std::string> meta = metadata;
  size_t off = 0;
  for (const auto& [name, t] : tensors) {
    check(name != "__metadata__" && !h.contains(name), path, ": duplicate or reserved tensor name '", name,
          "'");
    if (is_block_quantized(t.dtype())) {
      check(t.rank() == 2, path, ": block-quantized tensor '", name, "' must be a matrix");
      const Shape stored = {t.dim(0), int64_t(row_bytes(t.dtype(), t.dim(1)))};
      h[name] = {{"dtype", "U8"}, {"shape", stored}, {"data_offsets", {off, off + t.nbytes()}}};
      meta[kBlockFormatKey + name] = dtype_name(t.dtype());
      if (t.dtype() == DType::Q4_0) meta[kQ4LayoutKey] = kQ4Layout;
      if (t.dtype() == DType::Q8_0) meta[kQ8LayoutKey] = kQ8Layout;
    } else {
      h[name] = {
          {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    }
    off += t.nbytes();
  }
  if (!meta.empty()) h["__metadata__"] = meta;
  std::string header = h.dump();
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');  // align the data buffer
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp, ": cannot create file");
    uint64_t n = header.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = (n >> (8 * i)) & 0xff;
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const auto& [name, t] : tensors)
      out.write(static_cast<const char*>(t.raw()), std::streamsize(t.nbytes()));
    out.flush();
    if (!out) fail(tmp, ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, ": cannot rename from ", tmp);
}

}  // namespace braid
