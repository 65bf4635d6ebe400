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

// The lane sums of 16 vectors at once: out[j] = the sum of p[j]'s lanes, added in one fixed
// order (lanes k and k + 8, then those sums k and k + 4, then (0 + 2) + (1 + 3)), each level
// pairing two vectors, so one add serves many sums (alone, the last levels of a 16-lane sum
// are the slowest part of a short dot product). A vector's sum does not depend on the others.
inline void lane_sums16(const F32x16* p, float* out) {
  F32x16 l[8], m[4], z[2];
  for (int j = 0; j < 8; ++j)  // [lanes k + k+8 of channel 2j | of channel 2j + 1]
    l[j] = __builtin_shufflevector(p[2 * j], p[2 * j + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22,
                                   23) +
           __builtin_shufflevector(p[2 * j], p[2 * j + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28,
                                   29, 30, 31);
  for (int j = 0; j < 4; ++j)  // quarter q: the four sums k + k+4 of channel 4j + q
    m[j] = __builtin_shufflevector(l[2 * j], l[2 * j + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25,
                                   26, 27) +
           __builtin_shufflevector(l[2 * j], l[2 * j + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29,
                                   30, 31);
  for (int j = 0; j < 2; ++j)  // quarter q: sums 0 + 2 and 1 + 3 of channels 8j + q and 8j + 4 + q
    z[j] = __builtin_shufflevector(m[2 * j], m[2 * j + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13,
                                   28, 29) +
           __builtin_shufflevector(m[2 * j], m[2 * j + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15,
                                   30, 31);
  // lane 4q + i: the readout of channel 4i + q
  const F32x16 r =
      __builtin_shufflevector(z[0], z[1], 0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30) +
      __builtin_shufflevector(z[0], z[1], 1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31);
  const F32x16 o = __builtin_shufflevector(r, r, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  std::memcpy(out, &o, sizeof o);
}

}  // namespace braid::ops
