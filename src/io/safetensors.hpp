// safetensors: validated zero-copy reader (single file and sharded checkpoints) and
// an atomic writer. Format: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data buffer, which the tensors must tile exactly.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/buffer.hpp"
#include "core/tensor.hpp"

namespace braid {

// Metadata key prefix naming a tensor's block format: "braid.block_format.<tensor>" ->
// "Q8_0" / "Q4_0". Such a tensor is stored as U8 [rows, row bytes] (core/quant.hpp has the
// layout) and read back as that dtype with its logical shape [rows, cols].
inline constexpr const char* kBlockFormatKey = "braid.block_format.";
// Metadata keys naming the layout of a file's Q4_0 and Q8_0 codes: kQ4Layout / kQ8Layout,
// the grouped layouts of core/quant.hpp. A file with such tensors and no key for their format
// holds each block's bytes in order (files written before the grouped layouts; Q8_0 codes as
// signed bytes); such tensors are read into memory and rewritten in the grouped layout as
// they are loaded.
inline constexpr const char* kQ4LayoutKey = "braid.q4_0_layout";
inline constexpr const char* kQ4Layout = "groups16";
inline constexpr const char* kQ8LayoutKey = "braid.q8_0_layout";
inline constexpr const char* kQ8Layout = "groups16_u8";

struct TensorInfo {
  std::string name;
  std::string dtype_name;  // as written in the file
  bool supported = false;  // braid has a DType for it
  DType dtype = DType::F32;
  Shape shape;
  size_t begin = 0, end = 0;     // byte offsets inside the data buffer
  bool blocks_in_order = false;  // Q4_0 / Q8_0 in the layout of files without their layout key
};

class SafetensorsFile {
 public:
  // Maps and validates the whole file; throws "PATH: problem" on any violation.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Validates an in-memory image (used by open and by fuzz/regression tests).
  static std::shared_ptr<SafetensorsFile> from_memory(std::shared_ptr<MappedFile> file);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return infos_; }
  const TensorInfo* find(const std::string& name) const;
  // Zero-copy view of a tensor (a converted copy for Q4_0 in the blocks-in-order layout);
  // throws when absent or of an unsupported dtype.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> file_;
  size_t data_start_ = 0;
  std::vector<TensorInfo> infos_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All weights of a checkpoint directory: model.safetensors, or the shards listed in
// model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open_dir(const std::string& dir);
  // One safetensors file whose tensor names all start with `prefix` (the prefix is
  // stripped: "grad." for a gradient file).
  static Checkpoint open_file(const std::string& path, const std::string& prefix = "");
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor get(const std::string& name) const;  // throws naming the tensor when missing
  const TensorInfo* info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, prefix_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// Writes tensors (in the given order) to `path` via a temp file and rename, so an
// interrupted write never leaves a truncated file behind.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace braid
