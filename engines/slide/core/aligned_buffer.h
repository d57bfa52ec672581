#pragma once
// A zero-initialised, 64-byte aligned array for weight matrices and their Adam moments: one
// allocation per matrix (no object per neuron), rows padded to whole cache lines by the caller.
// Large buffers are advised as transparent huge pages: a 670K x 128 matrix spans 343 MB, and
// random row access with 4 KiB pages would spend much of its time in TLB misses.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace slide {

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { resize(n); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }

  // Discards the contents; the new array is all zeros.
  void resize(size_t n) {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    if (n == 0) return;
    const size_t bytes = n * sizeof(T);
    // Huge-page alignment for big matrices so that madvise can back them with 2 MiB pages.
    const size_t align = bytes >= (size_t{8} << 20) ? (size_t{2} << 20) : size_t{64};
    const size_t rounded = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align > 64) madvise(p, rounded, MADV_HUGEPAGE);  // advisory: failure is harmless
#endif
    std::memset(p, 0, rounded);
    data_ = static_cast<T*>(p);
    size_ = n;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Row length rounded up to a whole number of 64-byte lines (16 floats), so every row is aligned.
inline int padded_row(int n) { return (n + 15) / 16 * 16; }

}  // namespace slide
