// Run-time dispatch for braid's own vector loops: a function marked BRAID_DISPATCH is
// compiled for AVX-512, AVX2 and baseline x86-64, and the loader picks the best the CPU
// supports (one binary). Loops inside are written to vectorise without reassociating a sum
// (independent per-lane accumulators), so each clone gives the same kind of rounding.
#pragma once

#define BRAID_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
