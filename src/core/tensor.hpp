// Tensor: a typed, row-major, contiguous n-d array that may view memory it does not
// own (a mapped checkpoint) while keeping that memory alive.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.hpp"

namespace braid {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // New zero-filled tensor that owns its (aligned) memory.
  static Tensor zeros(DType dt, Shape shape);
  // A view of memory owned by `owner` (kept alive as long as the view lives).
  static Tensor view(DType dt, Shape shape, const void* data, std::shared_ptr<const void> owner);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  // Bytes of the data (rows x row_bytes for the block-quantized formats, by the last dimension).
  size_t nbytes() const;
  bool defined() const { return data_ != nullptr || (owner_ && numel() == 0); }

  const void* raw() const { return data_; }
  void* raw_mut() { return const_cast<void*>(data_); }
  template <class T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  template <class T>
  T* data_mut() {
    return static_cast<T*>(const_cast<void*>(data_));
  }
  const float* f32() const;  // throws unless dtype is F32
  float* f32_mut();

  // Same memory, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the first dimension, as a view.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A converted F32 copy (or this tensor when already F32); block formats are dequantized.
  Tensor to_f32() const;

 private:
  DType dtype_ = DType::F32;
  Shape shape_;
  const void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace braid
