// Kernels for weights stored in a compact format (BF16, F16, Q8_0, Q4_0; core/quant.hpp)
// multiplied by f32 activations, accumulating in f32. Each has a scalar version and AVX2 /
// AVX-512 versions in the same binary; the best one the CPU runs is chosen at start-up
// (BRAID_ISA=scalar|avx2|avx512 lowers the choice), and tests run every path the CPU has
// against a double-precision reference.
#pragma once
#include <cstdint>

#include "core/dtype.hpp"

namespace braid::ops {

enum class Isa : uint8_t { Scalar, Avx2, Avx512 };
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);  // whether this CPU can run the path
Isa active_isa();
void set_active_isa(Isa isa);  // throws when the CPU cannot run it

// y[r] (+)= W[r, :] . x for `rows` rows of `cols` values stored as t (row stride
// row_bytes(t, cols)), with the active path unless one is named.
void matvec_w(DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate, float* y);
void matvec_w(Isa isa, DType t, const void* W, const float* x, int64_t rows, int64_t cols, bool accumulate,
              float* y);
// For B inputs x[B, cols]: y[b * ldy + r] (+)= W[r, :] . x[b, :], each value exactly as
// matvec_w gives it; every row of W is read from memory once for all B inputs.
void matvec_w_batch(DType t, const void* W, const float* x, int64_t B, int64_t rows, int64_t cols,
                    bool accumulate, float* y, int64_t ldy);

// Rows ahead whose lines the generic f32 GEMV loop (gemm.cpp, CPUs without AVX-512) asks for
// while multiplying the current row (about 5% faster decode there). The AVX-512 f32 GEMV and
// every compact-format kernel read one input's rows as one stream in address order; the
// AVX-512 compact kernels' groups of four rows ask for the next group.
inline constexpr int64_t kGemvPrefetchRows = 2;

// How far ahead of the stream of one input's rows the AVX-512 f32 GEMV and compact-format
// kernels ask for lines (one prefetcht2 per 64 bytes they read), in bytes; 0: none. Chosen
// per CPU at start-up: kIntelStreamPrefetch on Intel, where from memory the compact kernels
// read 18-20 GB/s with the hardware prefetcher alone and 22.5-26 with this distance (the f32
// GEMV 26 and 29); none elsewhere, as on AMD Zen 4, where every software prefetch ahead of
// the stream made it slower (docs/benchmarks.md, 2026-12-04 and 2026-12-07).
// BRAID_STREAM_PREFETCH=BYTES (a multiple of 64, at most 1 MiB; 0 for none) sets it.
inline constexpr int64_t kIntelStreamPrefetch = 8192;
int64_t stream_prefetch_bytes();
// The stream's request: the line `ahead` bytes past p (prefetcht2), nothing when ahead is 0.
inline void prefetch_stream(const void* p, int64_t ahead) {
  if (ahead > 0) __builtin_prefetch(static_cast<const char*>(p) + ahead, 0, 1);
}

// B inputs x[B, cols] made ready once for products with weights of format t, so that any
// thread can then multiply any rows by them: quantized to 8-bit blocks when int8 activations
// apply to t (into the preparing thread's scratch for that format, valid until the thread
// prepares inputs for the same format again), otherwise x as it is.
struct WInputs {
  Isa isa = Isa::Scalar;
  DType t = DType::F32;
  const float* x = nullptr;
  int64_t B = 0, cols = 0;
  int fmt = -1;  // the activation format when quantized, else -1
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int32_t* corr = nullptr;
  int64_t stride = 0;  // codes per input
};
WInputs prepare_inputs(DType t, const float* x, int64_t B, int64_t cols);
WInputs prepare_inputs(Isa isa, DType t, const float* x, int64_t B, int64_t cols);
// y[b * ldy + r] (+)= W[r, :] . input b for rows [0, rows) of W, stored in the inputs' format;
// each value exactly as matvec_w gives it.
void matvec_w_rows(const WInputs& in, const void* W, int64_t rows, bool accumulate, float* y, int64_t ldy);
// Int8 activations: a Q8_0 or Q4_0 matrix-vector product quantizes its input to 8-bit
// blocks, per 32 values an f32 scale d = max|x| / 127 and codes round(x / d) (nearest, ties to
// even), so each block's dot product is an exact integer (VNNI byte dot products where the
// CPU has them), scaled by d_w * d_x and summed in f32. On by default: it makes Q8_0 and Q4_0
// decode faster for a small quality cost (docs/benchmarks.md); BRAID_INT8_ACTIVATIONS=0
// multiplies the codes by the f32 activations instead. Prefill (panels converted to f32 for
// SGEMM) is not affected.
bool int8_activations_on();
void set_int8_activations(bool on);
bool int8_activations(DType t);  // whether products with weights of format t use it now

// Sets the setting for a scope, restoring it after.
class Int8Activations {
 public:
  explicit Int8Activations(bool on) : prev_(int8_activations_on()) { set_int8_activations(on); }
  ~Int8Activations() { set_int8_activations(prev_); }
  Int8Activations(const Int8Activations&) = delete;
  Int8Activations& operator=(const Int8Activations&) = delete;

 private:
  bool prev_;
};
// x[cols] (cols a multiple of 32) quantized as `isa`'s kernels quantize it: q[cols], d[cols / 32].
void quantize_activations(Isa isa, const float* x, int64_t cols, int8_t* q, float* d);

// Rows [0, rows) of W as f32 (out[r * cols + c]), values exactly those dequantize_row gives.
void dequantize_rows(DType t, const void* W, int64_t rows, int64_t cols, float* out);
void dequantize_rows(Isa isa, DType t, const void* W, int64_t rows, int64_t cols, float* out);

// Reference: W[r, :] . x in double precision from the dequantized values.
double dot_w_ref(DType t, const void* row, const float* x, int64_t cols);
// Reference with int8 activations (Q8_0 / Q4_0): x quantized as above, each block's integer
// dot scaled by d_w * d_x, in double precision.
double dot_wq_ref(DType t, const void* row, const float* x, int64_t cols);

}  // namespace braid::ops
