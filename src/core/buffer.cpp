#include "core/buffer.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.hpp"

namespace braid {

static void* raw_alloc(size_t n, bool zero) {
  size_t bytes = (n + kAlign - 1) / kAlign * kAlign;
  if (bytes == 0) bytes = kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw std::bad_alloc();
  if (zero) std::memset(p, 0, bytes);
  return p;
}

std::shared_ptr<void> aligned_alloc_shared(size_t n) {
  return std::shared_ptr<void>(raw_alloc(n, true), [](void* p) { std::free(p); });
}

FloatBuffer::~FloatBuffer() { std::free(p_); }

float* FloatBuffer::reserve(size_t n, bool keep) {
  if (n <= cap_) return p_;
  size_t cap = cap_ ? cap_ : 64;
  while (cap < n) cap *= 2;
  // Not zeroed: scratch and caches are written before they are read, and touching
  // fresh pages twice would double the page-fault cost of growing a KV cache.
  auto* np = static_cast<float*>(raw_alloc(cap * sizeof(float), false));
  if (keep && p_) std::memcpy(np, p_, cap_ * sizeof(float));
  std::free(p_);
  p_ = np;
  cap_ = cap;
  return p_;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, ": cannot mmap: ", std::strerror(e));
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace braid
