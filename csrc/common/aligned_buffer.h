// A float buffer aligned to a cache line that only grows: get(count) returns at least `count`
// floats, reallocating (contents lost) only when it must grow. The GEMM keeps its packing buffers
// in thread-local ones, so that repeated calls allocate nothing, and the engine its packed weights.
// The alignment is what the AVX2 micro-kernel's aligned loads of packed panels need (32 bytes).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace fastmlp {

class AlignedFloats {
 public:
  static constexpr size_t kAlign = 64;

  float* get(int64_t count) {
    if (count > capacity_) {
      const size_t bytes =
          (static_cast<size_t>(count) * sizeof(float) + kAlign - 1) / kAlign * kAlign;
      float* p = static_cast<float*>(std::aligned_alloc(kAlign, bytes));
      if (p == nullptr) throw std::bad_alloc();
      data_.reset(p);
      capacity_ = static_cast<int64_t>(bytes / sizeof(float));
    }
    return data_.get();
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  int64_t capacity_ = 0;
};

}  // namespace fastmlp
