#include "core/quant.hpp"

#include <cmath>
#include <cstring>

#include "core/error.hpp"

namespace braid {

namespace {

// The scale of a block as stored (f16) and as used (its f32 value).
uint16_t block_scale(const float* x, float divisor, bool signed_max, float* used) {
  float amax = 0.0f, extreme = 0.0f;
  for (int64_t i = 0; i < kQuantBlock; ++i) {
    check(std::isfinite(x[i]), "cannot quantize a non-finite weight (", x[i], ")");
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), extreme = x[i];
  }
  const float d = (signed_max ? extreme : amax) / divisor;
  const uint16_t h = f32_to_f16(d);
  *used = f16_to_f32(h);
  check(std::isfinite(*used), "cannot quantize a weight of magnitude ", amax,
        ": its block scale overflows f16");
  return h;
}

}  // namespace

bool storable_as(DType t, int64_t cols) {
  switch (t) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      return true;
    case DType::Q8_0:
    case DType::Q4_0:
      return cols % kQuantBlock == 0;
    default:
      return false;
  }
}

void q4_row_from_blocks_in_order(const uint8_t* in, int64_t n, uint8_t* out) {
  const int64_t nb = n / kQuantBlock;
  std::memcpy(out, in, size_t(2 * nb));
  for (int64_t b = 0; b < nb; ++b)
    for (int k = 0; k < 4; ++k)
      std::memcpy(out + 2 * nb + q4_word_at(nb, b, k), in + 2 * nb + 16 * b + 4 * k, 4);
}

void q8_row_from_blocks_in_order(const uint8_t* in, int64_t n, uint8_t* out) {
  const int64_t nb = n / kQuantBlock;
  std::memcpy(out, in, size_t(2 * nb));
  for (int64_t b = 0; b < nb; ++b)
    for (int k = 0; k < 8; ++k) {
      const uint8_t* from = in + 2 * nb + 32 * b + 4 * k;
      uint8_t* to = out + 2 * nb + block_word_at(nb, 32, b, q8_word_of(k));
      for (int i = 0; i < 4; ++i) to[i] = uint8_t(from[i] ^ 0x80);  // q as a signed byte -> q + 128
    }
}

void quantize_row(DType t, const float* x, int64_t n, void* out) {
  check(storable_as(t, n), "cannot store a row of ", n, " values as ", dtype_name(t));
  uint8_t* o = static_cast<uint8_t*>(out);
  const int64_t nb = n / kQuantBlock;
  switch (t) {
    case DType::F32:
      std::memcpy(out, x, size_t(n) * 4);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(x[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kQuantBlock;
        float d;
        const uint16_t h = block_scale(xb, 127.0f, false, &d);
        std::memcpy(o + 2 * b, &h, 2);
        for (int k = 0; k < 8; ++k) {
          uint8_t* w = o + 2 * nb + block_word_at(nb, 32, b, q8_word_of(k));
          for (int i = 0; i < 4; ++i) {
            const float v = d == 0.0f ? 0.0f : std::nearbyint(xb[4 * k + i] / d);
            w[i] = uint8_t(int(std::fmax(-127.0f, std::fmin(127.0f, v))) + 128);
          }
        }
      }
      return;
    case DType::Q4_0:
      // The scale maps the block's largest-magnitude value to -8 exactly, so all 16 codes
      // are used; the opposite extreme saturates at 7.
      for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kQuantBlock;
        float d;
        const uint16_t h = block_scale(xb, -8.0f, true, &d);
        std::memcpy(o + 2 * b, &h, 2);
        auto code = [&](float v) {
          const float c = d == 0.0f ? 0.0f : std::nearbyint(v / d);
          return uint8_t(int(std::fmax(-8.0f, std::fmin(7.0f, c))) + 8);
        };
        uint8_t q[kQuantBlock / 2];
        for (int64_t j = 0; j < kQuantBlock / 2; ++j) q[j] = uint8_t(code(xb[j]) | code(xb[j + 16]) << 4);
        for (int k = 0; k < 4; ++k) std::memcpy(o + 2 * nb + q4_word_at(nb, b, k), q + 4 * k, 4);
      }
      return;
    default:
      fail("cannot store weights as ", dtype_name(t));
  }
}

void dequantize_row(DType t, const void* row, int64_t n, float* out) {
  check(storable_as(t, n), "cannot read a row of ", n, " values as ", dtype_name(t));
  const uint8_t* r = static_cast<const uint8_t*>(row);
  const int64_t nb = n / kQuantBlock;
  uint16_t h;
  switch (t) {
    case DType::F32:
      std::memcpy(out, row, size_t(n) * 4);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) std::memcpy(&h, r + 2 * i, 2), out[i] = bf16_to_f32(h);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) std::memcpy(&h, r + 2 * i, 2), out[i] = f16_to_f32(h);
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < nb; ++b) {
        std::memcpy(&h, r + 2 * b, 2);
        const float d = f16_to_f32(h);
        int8_t q[kQuantBlock];
        q8_block_codes(r + 2 * nb, nb, b, q);
        for (int64_t i = 0; i < kQuantBlock; ++i) out[b * kQuantBlock + i] = d * float(q[i]);
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < nb; ++b) {
        std::memcpy(&h, r + 2 * b, 2);
        const float d = f16_to_f32(h);
        uint8_t q[kQuantBlock / 2];
        q4_block_bytes(r + 2 * nb, nb, b, q);
        for (int64_t j = 0; j < kQuantBlock / 2; ++j) {
          out[b * kQuantBlock + j] = d * float(int(q[j] & 15) - 8);
          out[b * kQuantBlock + j + 16] = d * float(int(q[j] >> 4) - 8);
        }
      }
      return;
    default:
      fail("cannot read weights stored as ", dtype_name(t));
  }
}

}  // namespace braid
