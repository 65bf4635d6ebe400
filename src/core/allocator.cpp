#include "core/allocator.hpp"

#include <climits>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace braid {

void keep_freed_heap(size_t bytes) {
#ifdef __GLIBC__
  mallopt(M_TRIM_THRESHOLD, bytes > size_t(INT_MAX) ? INT_MAX : int(bytes));
  // Fixing the trim threshold also fixes the mmap threshold at its 128 KiB start; raise it to
  // the ceiling glibc's own adjustment would reach, so blocks up to 32 MiB are reused too.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
#else
  (void)bytes;
#endif
}

}  // namespace braid
