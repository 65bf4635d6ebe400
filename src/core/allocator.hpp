// Process-wide allocator settings.
#pragma once
#include <cstddef>

namespace braid {

// Let the C allocator keep up to `bytes` of freed memory at the top of each heap instead of
// returning it to the system at every free. Training allocates and frees a few hundred KB of
// activations per sequence; with glibc's default (128 KiB, adjusted dynamically) every
// sequence gave its pages back and faulted them in again, which cost more than the
// arithmetic (2.7x on a Mamba training step). Peak memory is unchanged: only memory that was
// in use is kept. Blocks up to 32 MiB come from the heap (reused) rather than fresh mappings.
// No effect with other C libraries.
void keep_freed_heap(size_t bytes);

}  // namespace braid
