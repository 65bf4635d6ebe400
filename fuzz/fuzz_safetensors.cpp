// libFuzzer target: a .safetensors file (header length, JSON header, offsets, data).
#include "fuzz_common.hpp"
#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = braid::fuzz::write_file("model.safetensors", data, size);
  try {
    auto f = braid::SafetensorsFile::open(path);
    for (const auto& t : f->tensors()) {  // every tensor's view, small ones read as f32
      const braid::Tensor v = f->get(t.name);
      if (v.numel() <= (int64_t(1) << 16) && v.dtype() != braid::DType::I32 && v.dtype() != braid::DType::I64)
        (void)v.to_f32();
    }
  } catch (const braid::Error&) {
  }
  return 0;
}
