// Pieces shared by the element-mask kernels (element_*.cu): debug asserts, 32-bit
// spatial sizes, the pixel layout of a thread and packed (vector) stores and loads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

#include "../conv_args.h"

// Invariant checks compiled in only with -DRSKCNN_CUDA_DEBUG. The release form keeps
// the condition unevaluated so its operands still count as used.
#ifdef RSKCNN_CUDA_DEBUG
#define RSKCNN_DEVICE_ASSERT(cond) \
  do {                             \
    CUDA_KERNEL_ASSERT(cond)       \
  } while (false)
#else
#define RSKCNN_DEVICE_ASSERT(cond) \
  do {                             \
    (void)sizeof(cond);            \
  } while (false)
#endif

namespace rskcnn::cuda::element {

// The spatial part of ConvArgs as int, so that the per-tap arithmetic of the inner
// loops stays 32-bit. Every sum the kernels form (oh*sh - ph + r*dh, ih + ph - r*dh,
// a pixel index inside one plane) stays below 2^31 given the checks of spatial_of.
struct Spatial {
  int h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw;
};

inline Spatial spatial_of(const ConvArgs& a) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  TORCH_CHECK(a.h + 2 * a.ph < kLimit && a.w + 2 * a.pw < kLimit && a.oh * a.sh < kLimit &&
                  a.ow * a.sw < kLimit && (a.kh - 1) * a.dh < kLimit && (a.kw - 1) * a.dw < kLimit,
              "rskcnn: the CUDA element kernels need padded extents, strides and dilated "
              "kernels below 2^30");
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(a.h * a.w <= kMaxInt && a.oh * a.ow <= kMaxInt,
              "rskcnn: the CUDA element kernels need H*W and OH*OW below 2^31");
  auto i32 = [](int64_t v) { return static_cast<int>(v); };
  return Spatial{i32(a.h),  i32(a.w),  i32(a.oh), i32(a.ow), i32(a.kh), i32(a.kw),
                 i32(a.sh), i32(a.sw), i32(a.ph), i32(a.pw), i32(a.dh), i32(a.dw)};
}

// A thread's items are groups of V consecutive pixels; group k of every thread lies
// threads*V pixels after group k-1, so a warp's accesses to a group are contiguous.
template <int kThreads, int V>
__device__ __forceinline__ int64_t item_pixel(int64_t tile_begin, int item) {
  return tile_begin + int64_t{item / V} * (kThreads * V) + int64_t{threadIdx.x} * V + item % V;
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Whether V consecutive pixels starting at a multiple of V always lie in one plane of
// `plane` pixels at an address aligned for Pack<T, V>.
template <int V, typename T>
bool can_pack(const T* data, int64_t plane) {
  return plane % V == 0 && reinterpret_cast<uintptr_t>(data) % (sizeof(T) * V) == 0;
}

inline void check_grid(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "rskcnn: ", what, " needs ",
              blocks, " CTAs, more than a grid holds");
}

}  // namespace rskcnn::cuda::element
