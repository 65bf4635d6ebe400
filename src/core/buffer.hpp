// Memory: 64-byte aligned heap buffers and read-only memory-mapped files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace braid {

constexpr size_t kAlign = 64;

// Allocates n bytes aligned to kAlign (zero-filled); freed by the returned owner.
std::shared_ptr<void> aligned_alloc_shared(size_t n);

// Growable aligned float buffer for scratch space: never shrinks, so a warm
// workspace does not allocate on the decode path.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  FloatBuffer(FloatBuffer&& o) noexcept : p_(o.p_), cap_(o.cap_) { o.p_ = nullptr, o.cap_ = 0; }
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(cap_, o.cap_);
    return *this;
  }
  ~FloatBuffer();
  // Ensures room for n floats (new space is uninitialised); old contents are kept
  // only when keep is true.
  float* reserve(size_t n, bool keep = false);
  float* data() { return p_; }
  const float* data() const { return p_; }
  size_t capacity() const { return cap_; }

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};

// A whole file mapped read-only. Shared so tensors can keep the mapping alive.
class MappedFile {
 public:
  // Throws braid::Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace braid
