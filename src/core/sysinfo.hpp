// Process and machine facts for benchmarks: resident memory, CPU model.
#pragma once
#include <cstddef>
#include <string>

namespace braid {

size_t peak_rss_bytes();     // high-water mark of resident memory (VmHWM)
size_t current_rss_bytes();  // resident memory now (VmRSS)
std::string cpu_model();     // from /proc/cpuinfo, or "unknown"

}  // namespace braid
