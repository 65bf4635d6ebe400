// Process and machine facts for benchmarks: resident memory, CPU model; allocator policy.
#pragma once
#include <cstddef>
#include <string>

namespace braid {

size_t peak_rss_bytes();     // high-water mark of resident memory (VmHWM)
size_t current_rss_bytes();  // resident memory now (VmRSS)
std::string cpu_model();     // from /proc/cpuinfo, or "unknown"

// For processes that allocate and free the same large buffers over and over (training
// steps): the allocator keeps freed memory for reuse instead of returning it to the system,
// which would make every step fault its pages in and zero them again (about 10% of a step).
// Resident memory then stays at its high-water mark. The braid CLI sets it for every command
// (glibc only).
void retain_freed_memory();
// Hands the allocator's free memory back to the system (glibc: every arena, holes included).
void release_free_memory();

}  // namespace braid
