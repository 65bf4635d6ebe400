#include "ops/cpu/wdot.hpp"

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cmath>
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
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += kQuantBlock) {
    int8_t q[kQuantBlock];
    q8_block_codes(w + 2 * nb, nb, b, q);
    float sb = 0.0f;
    for (int64_t i = 0; i < kQuantBlock; ++i) sb += float(q[i]) * x[i];
    s += f16_to_f32(half_at(w + 2 * b)) * sb;
  }
  return s;
}

float dot_q4(const uint8_t* w, const float* x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b, x += kQuantBlock) {
    uint8_t q[kQuantBlock / 2];
    q4_block_bytes(w + 2 * nb, nb, b, q);
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

// Weight code i of a block gathered by Bytes: Q8_0 codes as signed bytes, Q4_0 bytes' nibbles
// less 8.
inline int code_q8(const uint8_t* c, int i) { return int(int8_t(c[i])); }
inline int code_q4(const uint8_t* c, int i) { return i < 16 ? int(c[i] & 15) - 8 : int(c[i - 16] >> 4) - 8; }

// Block b gathered into tmp, in element order: Q8_0's codes, Q4_0's bytes.
inline void bytes_q8(const uint8_t* codes, int64_t nb, int64_t b, uint8_t* tmp) {
  q8_block_codes(codes, nb, b, reinterpret_cast<int8_t*>(tmp));
}
inline void bytes_q4(const uint8_t* codes, int64_t nb, int64_t b, uint8_t* tmp) {
  q4_block_bytes(codes, nb, b, tmp);
}

// Per block, the exact integer dot of the codes, scaled by d_w * d_x.
template <int (*Code)(const uint8_t*, int), void (*Bytes)(const uint8_t*, int64_t, int64_t, uint8_t*)>
float dotq(const uint8_t* w, const QBlocks& x, int64_t n) {
  const int64_t nb = n / kQuantBlock;
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t c[kQuantBlock];
    Bytes(w + 2 * nb, nb, b, c);
    const int8_t* q = x.q + b * kQuantBlock;
    int32_t isum = 0;
    for (int i = 0; i < kQuantBlock; ++i) isum += Code(c, i) * int32_t(q[i]);
    s += f16_to_f32(half_at(w + 2 * b)) * x.d[b] * float(isum);
  }
  return s;
}

}  // namespace

void quantize_activations_scalar(const float* x, int64_t n, int fmt, int8_t* q, float* d, int32_t* corr) {
  const int32_t k = fmt == kQ8 ? 128 : 8;
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, q += kQuantBlock) {
    float amax = 0.0f;
    bool finite = true;
    for (int i = 0; i < kQuantBlock; ++i)
      finite &= std::isfinite(x[i]), amax = std::max(amax, std::fabs(x[i]));
    float inv;
    activation_scale(amax, finite, &d[b], &inv);
    for (int i = 0; i < kQuantBlock; ++i) q[i] = finite ? int8_t(std::nearbyint(x[i] * inv)) : int8_t(0);
    if (corr) {
      int32_t sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) sum += q[i];
      corr[b] = -k * sum;
    }
  }
}

Kernels scalar_kernels() {
  return {{dot_bf16, dot_f16, dot_q8, dot_q4},
          {},
          {dequant<DType::BF16>, dequant<DType::F16>, dequant<DType::Q8_0>, dequant<DType::Q4_0>},
          quantize_activations_scalar,
          false,
          false,
          {dotq<code_q8, bytes_q8>, dotq<code_q4, bytes_q4>},
          {},
          {}};
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

int64_t stream_prefetch_bytes() {
  static const int64_t bytes = [] {
    __builtin_cpu_init();
    const int64_t fallback = __builtin_cpu_is("intel") ? kIntelStreamPrefetch : 0;
    const char* e = std::getenv("BRAID_STREAM_PREFETCH");
    if (!e || !*e) return fallback;
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end == '\0' && v >= 0 && v <= (1 << 20) && v % 64 == 0) return int64_t(v);
    std::fprintf(stderr,
                 "braid: BRAID_STREAM_PREFETCH=%s is not a multiple of 64 from 0 to 1048576; using %lld\n", e,
                 static_cast<long long>(fallback));
    return fallback;
  }();
  return bytes;
}

namespace {

// The setting: on unless BRAID_INT8_ACTIVATIONS=0.
std::atomic<bool>& int8_setting() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("BRAID_INT8_ACTIVATIONS");
    if (!e || !*e || std::string(e) == "1") return true;
    if (std::string(e) == "0") return false;
    std::fprintf(stderr, "braid: BRAID_INT8_ACTIVATIONS=%s is not 0 or 1; using the default (on)\n", e);
    return true;
  }()};
  return on;
}

// A thread's quantized inputs, one buffer per activation format (grown, never shrunk: no
// allocation per token).
struct QScratch {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> corr;
};

// y[b * ldy + r] (+)= W[r, :] . x[b, :] for rows of a compact W, each row's value exactly as
// it alone would give. One input goes through the rows one at a time, a single stream of
// weights in address order (asked for ahead where the CPU wants it: stream_prefetch_bytes);
// several go four rows at a time where the path can, the rows staying in cache across the B
// inputs. `Dot4(r, b, out)` / `Dot(r, b)` compute row r (of four) against input b.
template <class Dot4, class Dot>
void rows_times_inputs(bool has_dot4, int64_t B, int64_t rows, bool accumulate, float* y, int64_t ldy,
                       const Dot4& dot4, const Dot& dot) {
  int64_t r = 0;
  if (has_dot4 && B > 1)
    for (; r + 4 <= rows; r += 4)
      for (int64_t b = 0; b < B; ++b) {
        float d[4];
        dot4(r, b, d);
        for (int i = 0; i < 4; ++i) {
          float& o = y[b * ldy + r + i];
          o = accumulate ? o + d[i] : d[i];
        }
      }
  for (; r < rows; ++r) {
    for (int64_t b = 0; b < B; ++b) {
      const float d = dot(r, b);
      y[b * ldy + r] = accumulate ? y[b * ldy + r] + d : d;
    }
  }
}

// Input b's quantized blocks.
wdot::QBlocks blocks(const WInputs& in, int64_t b) {
  return {in.q + b * in.stride, in.d + b * in.stride / kQuantBlock,
          in.corr ? in.corr + b * in.stride / kQuantBlock : nullptr};
}

}  // namespace

bool int8_activations_on() { return int8_setting().load(std::memory_order_relaxed); }
void set_int8_activations(bool on) { int8_setting().store(on, std::memory_order_relaxed); }
bool int8_activations(DType t) { return (t == DType::Q8_0 || t == DType::Q4_0) && int8_activations_on(); }

WInputs prepare_inputs(Isa isa, DType t, const float* x, int64_t B, int64_t cols) {
  WInputs in;
  in.isa = isa, in.t = t, in.x = x, in.B = B, in.cols = cols;
  format_index(t);  // throws for a format without kernels
  if (!int8_activations(t)) return in;
  const wdot::Kernels& k = kernels(isa);
  in.fmt = t == DType::Q8_0 ? wdot::kQ8 : wdot::kQ4;
  thread_local QScratch scratch[wdot::kQFormats];
  QScratch& s = scratch[in.fmt];
  in.stride = wdot::activation_codes(cols);
  const size_t n = size_t(B * in.stride);
  if (s.q.size() < n) s.q.resize(n), s.d.resize(n / kQuantBlock), s.corr.resize(n / kQuantBlock);
  for (int64_t b = 0; b < B; ++b)
    k.quantize(x + b * cols, cols, in.fmt, s.q.data() + b * in.stride,
               s.d.data() + b * in.stride / kQuantBlock,
               k.corrections ? s.corr.data() + b * in.stride / kQuantBlock : nullptr);
  in.q = s.q.data(), in.d = s.d.data(), in.corr = k.corrections ? s.corr.data() : nullptr;
  return in;
}

WInputs prepare_inputs(DType t, const float* x, int64_t B, int64_t cols) {
  return prepare_inputs(active_isa(), t, x, B, cols);
}

void matvec_w_rows(const WInputs& in, const void* W, int64_t rows, bool accumulate, float* y, int64_t ldy) {
  const wdot::Kernels& k = kernels(in.isa);
  const int64_t cols = in.cols;
  const size_t rb = row_bytes(in.t, cols);
  const uint8_t* w = static_cast<const uint8_t*>(W);
  // One input: the rows through one kernel call per chunk (one stream of weights).
  auto one_stream = [&](const auto& rows_kernel) {
    float d[64];
    for (int64_t r = 0; r < rows; r += 64) {
      const int64_t n = std::min<int64_t>(64, rows - r);
      rows_kernel(w + size_t(r) * rb, n, d);
      for (int64_t i = 0; i < n; ++i) y[r + i] = accumulate ? y[r + i] + d[i] : d[i];
    }
  };
  if (in.fmt >= 0 && in.B == 1 && k.rowsq[in.fmt]) {
    const wdot::QBlocks x = blocks(in, 0);
    one_stream([&](const uint8_t* p, int64_t n, float* d) { k.rowsq[in.fmt](p, rb, x, cols, n, d); });
    return;
  }
  if (in.fmt >= 0) {
    const int qf = in.fmt;
    rows_times_inputs(
        k.dot4q[qf] != nullptr, in.B, rows, accumulate, y, ldy,
        [&](int64_t r, int64_t b, float* d) { k.dot4q[qf](w + size_t(r) * rb, rb, blocks(in, b), cols, d); },
        [&](int64_t r, int64_t b) { return k.dotq[qf](w + size_t(r) * rb, blocks(in, b), cols); });
    return;
  }
  const int f = format_index(in.t);
  const float* x = in.x;
  if (in.B == 1 && k.rows[f]) {
    one_stream([&](const uint8_t* p, int64_t n, float* d) { k.rows[f](p, rb, x, cols, n, d); });
    return;
  }
  rows_times_inputs(
      k.dot4[f] != nullptr, in.B, rows, accumulate, y, ldy,
      [&](int64_t r, int64_t b, float* d) { k.dot4[f](w + size_t(r) * rb, rb, x + b * cols, cols, d); },
      [&](int64_t r, int64_t b) { return k.dot[f](w + size_t(r) * rb, x + b * cols, cols); });
}

void matvec_w(Isa isa, DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate,
              float* y) {
  matvec_w_rows(prepare_inputs(isa, t, x, 1, cols), W, rows, accumulate, y, rows);
}

void matvec_w(DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate, float* y) {
  matvec_w(active_isa(), t, W, x, rows, cols, accumulate, y);
}

void matvec_w_batch(DType t, const void* W, const float* x, int64_t B, int64_t rows, int64_t cols,
                    bool accumulate, float* y, int64_t ldy) {
  matvec_w_rows(prepare_inputs(t, x, B, cols), W, rows, accumulate, y, ldy);
}

void quantize_activations(Isa isa, const float* x, int64_t cols, int8_t* q, float* d) {
  check(cols % kQuantBlock == 0, "activations are quantized in whole blocks of 32, not ", cols);
  const wdot::Kernels& k = kernels(isa);
  const int64_t n = wdot::activation_codes(cols);
  std::vector<int8_t> codes(static_cast<size_t>(n));
  std::vector<int32_t> corr(size_t(n / kQuantBlock));
  k.quantize(x, cols, wdot::kQ8, codes.data(), d, k.corrections ? corr.data() : nullptr);
  for (int64_t b = 0; b < cols / kQuantBlock; ++b)
    for (int e = 0; e < kQuantBlock; ++e)
      q[b * kQuantBlock + e] = codes[size_t(k.grouped ? wdot::grouped_code_at(b, e) : b * kQuantBlock + e)];
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

double dot_wq_ref(DType t, const void* row, const float* x, int64_t cols) {
  check(t == DType::Q8_0 || t == DType::Q4_0, "int8 activations are for Q8_0 and Q4_0 weights, not ",
        dtype_name(t));
  std::vector<int8_t> q(static_cast<size_t>(cols));
  std::vector<float> d(size_t(cols / kQuantBlock));
  wdot::quantize_activations_scalar(x, cols, wdot::kQ8, q.data(), d.data(), nullptr);
  std::vector<float> w(static_cast<size_t>(cols));
  dequantize_row(t, row, cols, w.data());
  double s = 0.0;
  for (int64_t b = 0; b < cols / kQuantBlock; ++b) {
    // The block's weights are d_w * code exactly, so w / d_w recovers the integer codes.
    uint16_t h;
    std::memcpy(&h, static_cast<const uint8_t*>(row) + 2 * b, 2);
    const double dw = f16_to_f32(h);
    double isum = 0;
    for (int64_t i = b * kQuantBlock; i < (b + 1) * kQuantBlock; ++i)
      isum += (dw != 0 ? std::nearbyint(double(w[size_t(i)]) / dw) : 0.0) * double(q[size_t(i)]);
    s += dw * double(d[size_t(b)]) * isum;
  }
  return s;
}

double dot_w_ref(DType t, const void* row, const float* x, int64_t cols) {
  std::vector<float> w(size_t(cols), 0.0f);
  dequantize_row(t, row, cols, w.data());
  double s = 0.0;
  for (int64_t i = 0; i < cols; ++i) s += double(w[i]) * double(x[i]);
  return s;
}

}  // namespace braid::ops
