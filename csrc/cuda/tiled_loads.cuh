// Global -> shared tile loads of the tiled kernels: asynchronous 16-byte copies (sm_80
// cp.async) where the host found every row 16-byte aligned, plain element copies otherwise.
#pragma once

#include "tiled_common.cuh"

namespace rskcnn::cuda::tiled {

// Copies 16 bytes from global to shared memory without staging them in registers; only the
// first src_bytes (0..16) are read, the rest of the 16 are zero-filled.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Fills the ROWS x COLS tile at dst (row stride LD elements). Row r is read from row_src(r)
// (a global pointer, or nullptr for a row of zeros: padding, past the last pixel or channel);
// its first `valid` elements are data and the rest are zero, which is how a chunk that ends
// early zeroes its missing K entries.
//
// vec: every non-null row_src(r) and `base` are 16-byte aligned. Then each thread issues
// cp.async copies of 16 bytes (the caller commits and waits); otherwise it stores elements
// synchronously. `base` is any valid address of the tensor, used by the zero-filling copies
// that read nothing.
template <int ROWS, int COLS, int LD, typename T, class RowSrc>
__device__ __forceinline__ void load_tile(T* dst, const RowSrc& row_src, int valid, bool vec,
                                          const T* base) {
  if (vec) {
    constexpr int kVec = 16 / static_cast<int>(sizeof(T));
    constexpr int kVecsPerRow = COLS / kVec;
    static_assert(COLS % kVec == 0 && kThreads % kVecsPerRow == 0, "rows split into 16-byte pieces");
    static_assert(LD % kVec == 0, "rows of the tile stay 16-byte aligned");
    constexpr int kRowsPerPass = kThreads / kVecsPerRow;
    const int col = (threadIdx.x % kVecsPerRow) * kVec;
    const int left = valid - col;
    const int bytes = left <= 0 ? 0 : (left >= kVec ? 16 : left * static_cast<int>(sizeof(T)));
#pragma unroll
    for (int r = threadIdx.x / kVecsPerRow; r < ROWS; r += kRowsPerPass) {
      const T* src = row_src(r);
      const bool any = src != nullptr && bytes > 0;
      cp_async_16(dst + r * LD + col, any ? src + col : base, any ? bytes : 0);
    }
  } else {
#pragma unroll 1
    for (int idx = threadIdx.x; idx < ROWS * COLS; idx += kThreads) {
      const int r = idx / COLS, c = idx % COLS;
      const T* src = c < valid ? row_src(r) : nullptr;
      dst[r * LD + c] = src != nullptr ? src[c] : Elem<T>::zero();
    }
  }
}

}  // namespace rskcnn::cuda::tiled
