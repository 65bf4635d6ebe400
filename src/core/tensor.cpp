#include "core/tensor.hpp"

#include "core/buffer.hpp"
#include "core/error.hpp"
#include "core/quant.hpp"

namespace braid {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::zeros(DType dt, Shape shape) {
  for (int64_t d : shape) check(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  auto mem = aligned_alloc_shared(t.nbytes());
  t.data_ = mem.get();
  t.owner_ = std::move(mem);
  return t;
}

Tensor Tensor::view(DType dt, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

size_t Tensor::nbytes() const {
  if (!is_block_quantized(dtype_)) return size_t(numel()) * dtype_size(dtype_);
  if (shape_.empty()) return 0;
  const int64_t cols = shape_.back();
  return size_t(cols ? numel() / cols : 0) * row_bytes(dtype_, cols);
}

const float* Tensor::f32() const {
  check(dtype_ == DType::F32, "tensor is ", dtype_name(dtype_), ", expected F32");
  return static_cast<const float*>(data_);
}

float* Tensor::f32_mut() { return const_cast<float*>(f32()); }

Tensor Tensor::reshape(Shape shape) const {
  check(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  return view(dtype_, std::move(shape), data_, owner_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  check(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "row slice [", begin, ", ", end,
        ") out of range for ", shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  const size_t row = shape_[0] ? nbytes() / size_t(shape_[0]) : 0;
  const char* p = static_cast<const char*>(data_) + size_t(begin) * row;
  return view(dtype_, s, p, owner_);
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::F32) return *this;
  Tensor out = zeros(DType::F32, shape_);
  float* o = out.f32_mut();
  int64_t n = numel();
  switch (dtype_) {
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) o[i] = float(data<int32_t>()[i]);
      break;
    case DType::I64:
      for (int64_t i = 0; i < n; ++i) o[i] = float(data<int64_t>()[i]);
      break;
    case DType::U8:
      for (int64_t i = 0; i < n; ++i) o[i] = float(data<uint8_t>()[i]);
      break;
    case DType::Q8_0:
    case DType::Q4_0: {
      const int64_t cols = shape_.back(), rows = cols ? n / cols : 0;
      const size_t rb = row_bytes(dtype_, cols);
      for (int64_t r = 0; r < rows; ++r)
        dequantize_row(dtype_, static_cast<const uint8_t*>(data_) + size_t(r) * rb, cols, o + r * cols);
      break;
    }
    case DType::F32:
      break;
  }
  return out;
}

}  // namespace braid
