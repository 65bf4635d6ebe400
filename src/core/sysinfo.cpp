#include "core/sysinfo.hpp"

#include <malloc.h>

#include <fstream>
#include <sstream>

namespace braid {

static size_t status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(in, line))
    if (line.compare(0, k.size(), k) == 0) {
      std::istringstream ss(line.substr(k.size()));
      size_t kib = 0;
      ss >> kib;
      return kib * 1024;
    }
  return 0;
}

void release_free_memory() { malloc_trim(0); }

size_t peak_rss_bytes() { return status_kib("VmHWM"); }
size_t current_rss_bytes() { return status_kib("VmRSS"); }

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, 10, "model name") == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  return "unknown";
}

void retain_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest: blocks up to 32 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // and freed heap memory is not handed back
}

}  // namespace braid
