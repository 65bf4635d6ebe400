// Sixteen floats as one value (a GCC / Clang vector extension, lowered to each dispatch
// clone's instructions), for the kernels that keep partial sums in registers: written as
// arrays, loops whose sums run across an outer loop keep them in memory, a store and a
// reload in each step's chain of additions.
#pragma once
#include <cstring>

namespace braid::ops {

typedef float F32x16 __attribute__((vector_size(64)));

// Through references: a 64-byte vector passed by value would take a different calling
// convention in the clones with and without AVX-512 (these are inlined into each anyway).
inline void load16(F32x16& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void store16(float* p, const F32x16& v) { std::memcpy(p, &v, sizeof v); }

}  // namespace braid::ops
