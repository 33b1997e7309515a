// Pieces shared by the element-mask kernels (element_*.cu): debug asserts, their int
// geometry, the pixel layout of a thread and packed (vector) stores and loads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

#include "../conv_geometry.h"

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

// ConvArgs as int for the element kernels: narrow_conv_args, plus the pixel index
// within one input or output plane (H*W, OH*OW), which these kernels also keep in an int.
inline ConvArgs32 narrow_element_conv_args(const ConvArgs& a) {
  const ConvArgs32 a32 = narrow_conv_args(a);
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(a.h * a.w <= kMaxInt && a.oh * a.ow <= kMaxInt,
              "rskcnn: the CUDA element kernels need H*W and OH*OW below 2^31");
  return a32;
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
