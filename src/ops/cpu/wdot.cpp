#include "ops/cpu/wdot.hpp"

#include <cpuid.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/quant.hpp"
#include "ops/cpu/wdot_impl.hpp"

namespace braid::ops {

namespace wdot {
namespace {

uint16_t half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

float dot_bf16(const uint8_t* w, const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += bf16_to_f32(half_at(w + 2 * i)) * x[i];
  return s;
}

float dot_f16(const uint8_t* w, const float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += f16_to_f32(half_at(w + 2 * i)) * x[i];
  return s;
}

float dot_q8(const uint8_t* w, const float* x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  const int8_t* q = reinterpret_cast<const int8_t*>(w + 2 * nb);
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b, q += kQuantBlock, x += kQuantBlock) {
    float sb = 0.0f;
    for (int64_t i = 0; i < kQuantBlock; ++i) sb += float(q[i]) * x[i];
    s += f16_to_f32(half_at(w + 2 * b)) * sb;
  }
  return s;
}

float dot_q4(const uint8_t* w, const float* x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  const uint8_t* q = w + 2 * nb;
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b, q += kQuantBlock / 2, x += kQuantBlock) {
    float sb = 0.0f;
    for (int64_t j = 0; j < kQuantBlock / 2; ++j)
      sb += float(int(q[j] & 15) - 8) * x[j] + float(int(q[j] >> 4) - 8) * x[j + 16];
    s += f16_to_f32(half_at(w + 2 * b)) * sb;
  }
  return s;
}

template <DType T>
void dequant(const uint8_t* w, int64_t n, float* out) {
  dequantize_row(T, w, n, out);
}

}  // namespace

Kernels scalar_kernels() {
  return {{dot_bf16, dot_f16, dot_q8, dot_q4},
          {},
          {dequant<DType::BF16>, dequant<DType::F16>, dequant<DType::Q8_0>, dequant<DType::Q4_0>}};
}

}  // namespace wdot

namespace {

int format_index(DType t) {
  switch (t) {
    case DType::BF16:
      return wdot::kBF16;
    case DType::F16:
      return wdot::kF16;
    case DType::Q8_0:
      return wdot::kQ8_0;
    case DType::Q4_0:
      return wdot::kQ4_0;
    default:
      fail("no weight kernel for ", dtype_name(t), " (expected BF16, F16, Q8_0 or Q4_0)");
  }
}

const wdot::Kernels& kernels(Isa isa) {
  static const wdot::Kernels table[] = {wdot::scalar_kernels(), wdot::avx2_kernels(), wdot::avx512_kernels()};
  return table[int(isa)];
}

// F16C (half-precision conversions): CPUID leaf 1, ECX bit 29 (not every compiler's
// __builtin_cpu_supports knows the name).
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

Isa best_isa() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !has_f16c()) return Isa::Scalar;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::Avx512;
  return Isa::Avx2;
}

// The best path, or a lower one named by BRAID_ISA (a name that is not a path, or one the CPU
// cannot run, is reported on stderr and ignored).
Isa initial_isa() {
  const Isa best = best_isa();
  const char* e = std::getenv("BRAID_ISA");
  if (!e || !*e) return best;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (std::string(e) == isa_name(i)) {
      if (int(i) <= int(best)) return i;
      std::fprintf(stderr, "braid: BRAID_ISA=%s, but this CPU runs %s at best; using %s\n", e, isa_name(best),
                   isa_name(best));
      return best;
    }
  std::fprintf(stderr, "braid: BRAID_ISA=%s is not scalar, avx2 or avx512; using %s\n", e, isa_name(best));
  return best;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> a{initial_isa()};
  return a;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) { return int(isa) <= int(best_isa()); }
Isa active_isa() { return active().load(std::memory_order_relaxed); }

void set_active_isa(Isa isa) {
  check(isa_supported(isa), "this CPU cannot run the ", isa_name(isa), " kernels");
  active().store(isa, std::memory_order_relaxed);
}

void matvec_w(Isa isa, DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate,
              float* y) {
  const wdot::Kernels& k = kernels(isa);
  const wdot::DotFn dot = k.dot[format_index(t)];
  const wdot::Dot4Fn dot4 = k.dot4[format_index(t)];
  const size_t rb = row_bytes(t, cols);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  int64_t r = 0;
  float d[4];
  if (dot4)
    for (; r + 4 <= rows; r += 4) {
      dot4(w + size_t(r) * rb, rb, x, cols, d);
      for (int i = 0; i < 4; ++i) y[r + i] = accumulate ? y[r + i] + d[i] : d[i];
    }
  for (; r < rows; ++r) {
    d[0] = dot(w + size_t(r) * rb, x, cols);
    y[r] = accumulate ? y[r] + d[0] : d[0];
  }
}

void matvec_w(DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate, float* y) {
  matvec_w(active_isa(), t, W, x, rows, cols, accumulate, y);
}

void matvec_w_batch(DType t, const void* W, const float* x, int64_t B, int64_t rows, int64_t cols,
                    bool accumulate, float* y, int64_t ldy) {
  const wdot::Kernels& k = kernels(active_isa());
  const wdot::DotFn dot = k.dot[format_index(t)];
  const wdot::Dot4Fn dot4 = k.dot4[format_index(t)];
  const size_t rb = row_bytes(t, cols);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  int64_t r = 0;
  if (dot4)
    for (; r + 4 <= rows; r += 4)  // four rows stay in cache across the B inputs
      for (int64_t b = 0; b < B; ++b) {
        float d[4];
        dot4(w + size_t(r) * rb, rb, x + b * cols, cols, d);
        for (int i = 0; i < 4; ++i) {
          float& o = y[b * ldy + r + i];
          o = accumulate ? o + d[i] : d[i];
        }
      }
  for (; r < rows; ++r) {
    const uint8_t* row = w + size_t(r) * rb;  // stays in cache across the B inputs
    for (int64_t b = 0; b < B; ++b) {
      const float d = dot(row, x + b * cols, cols);
      y[b * ldy + r] = accumulate ? y[b * ldy + r] + d : d;
    }
  }
}

void dequantize_rows(Isa isa, DType t, const void* W, int64_t rows, int64_t cols, float* out) {
  const wdot::DequantFn deq = kernels(isa).dequant[format_index(t)];
  const size_t rb = row_bytes(t, cols);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  for (int64_t r = 0; r < rows; ++r) deq(w + size_t(r) * rb, cols, out + r * cols);
}

void dequantize_rows(DType t, const void* W, int64_t rows, int64_t cols, float* out) {
  dequantize_rows(active_isa(), t, W, rows, cols, out);
}

double dot_w_ref(DType t, const void* row, const float* x, int64_t cols) {
  std::vector<float> w(size_t(cols), 0.0f);
  dequantize_row(t, row, cols, w.data());
  double s = 0.0;
  for (int64_t i = 0; i < cols; ++i) s += double(w[i]) * double(x[i]);
  return s;
}

}  // namespace braid::ops
