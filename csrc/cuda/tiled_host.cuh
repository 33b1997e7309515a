// Host side shared by the tiled launchers: argument checks, the 16-byte eligibility test of
// the cp.async loads and the compile-time dispatch of tile width and math.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>

#include <climits>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../conv_args.h"
#include "../tile_steps.h"
#include "tiled_common.cuh"

namespace rskcnn::cuda::tiled {

// c10's 16-bit types share their layout with CUDA's.
template <typename S>
struct CudaType {
  using type = S;
};
template <>
struct CudaType<c10::Half> {
  using type = __half;
};
template <>
struct CudaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

inline void check_plans(const TilePlans& p, const ConvArgs& a) {
  TORCH_CHECK((p.shape.out_tile == 32 || p.shape.out_tile == 64) &&
                  (p.shape.in_tile == 32 || p.shape.in_tile == 64) && p.shape.in_chunk == kChunk &&
                  p.shape.out_chunk == kChunk,
              "rskcnn: tiled CUDA kernels support out_tile and in_tile of 32 or 64 and "
              "in_chunk = out_chunk = 32, got (out_tile, in_chunk, in_tile, out_chunk) = (",
              p.shape.out_tile, ", ", p.shape.in_chunk, ", ", p.shape.in_tile, ", ",
              p.shape.out_chunk, ")");
  const TileCounts counts = count_tiles(a.mask, a.groups, p.shape);
  TORCH_CHECK(p.groups == a.groups && p.out_tiles == counts.out_tiles &&
                  p.in_tiles == counts.in_tiles && p.out_capacity == counts.out_capacity &&
                  p.in_capacity == counts.in_capacity,
              "rskcnn: tile plans were built for another convolution");
  const auto check_int = [](const at::Tensor& t, std::vector<int64_t> sizes, const char* name) {
    TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kInt && t.is_contiguous() &&
                    t.sizes() == at::IntArrayRef(sizes),
                "rskcnn: plan tensor ", name, " must be a contiguous CUDA int32 tensor of shape ",
                at::IntArrayRef(sizes), ", got ", t.sizes());
  };
  check_int(p.order, {a.cout}, "order");
  check_int(p.out_entries, {p.groups * p.out_tiles, p.out_capacity}, "out_entries");
  check_int(p.out_counts, {p.groups * p.out_tiles}, "out_counts");
  check_int(p.in_entries, {p.groups * p.in_tiles, p.in_capacity}, "in_entries");
  check_int(p.in_counts, {p.groups * p.in_tiles}, "in_counts");
}

// A contiguous (N, H, W, C) tensor, or the same memory as a channels-last (N, C, H, W) one.
inline void check_nhwc(const at::Tensor& t, const at::Tensor& ref, int64_t n, int64_t h, int64_t w,
                       int64_t c, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device() && t.scalar_type() == ref.scalar_type(),
              "rskcnn: ", name, " must be a CUDA tensor on ", ref.device(), " with dtype ",
              ref.scalar_type(), ", got ", t.device(), " ", t.scalar_type());
  const bool nhwc = t.sizes() == at::IntArrayRef({n, h, w, c}) && t.is_contiguous();
  const bool cl = t.sizes() == at::IntArrayRef({n, c, h, w}) &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(nhwc || cl, "rskcnn: ", name, " must be contiguous channels-last data of (N, H, W, C) = (",
              n, ", ", h, ", ", w, ", ", c, "), got sizes ", t.sizes(), " strides ", t.strides());
}

inline void check_dense(const at::Tensor& t, const at::Tensor& ref, at::IntArrayRef sizes,
                        at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device() && t.scalar_type() == dtype &&
                  t.sizes() == sizes && t.is_contiguous(),
              "rskcnn: ", name, " must be a contiguous ", dtype, " tensor of shape ", sizes, " on ",
              ref.device(), ", got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// y / dx: any strides, but the shape of an (N, C, H, W) output.
inline void check_output(const at::Tensor& t, const at::Tensor& ref, at::IntArrayRef sizes,
                         const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == ref.device() && t.scalar_type() == ref.scalar_type() &&
                  t.sizes() == sizes,
              "rskcnn: ", name, " must be a ", ref.scalar_type(), " tensor of shape ", sizes,
              " on ", ref.device(), ", got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// Whether a row of `channels` elements starting at a multiple of `channels` is 16-byte aligned
// in t: the condition of the cp.async path.
inline bool rows_16b_aligned(const at::Tensor& t, int64_t channels) {
  return channels * t.element_size() % 16 == 0 &&
         reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

// blockIdx.x takes the dimension that can be large (pixel tiles, plan steps).
inline dim3 make_grid(int64_t x, int64_t y, int64_t z = 1) {
  TORCH_CHECK(x > 0 && x <= INT32_MAX && y > 0 && y <= 65535 && z > 0 && z <= 65535,
              "rskcnn: tiled CUDA grid (", x, ", ", y, ", ", z,
              ") is out of range (too many pixels, tiles or splits)");
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y), static_cast<unsigned>(z));
}

// Calls f(std::integral_constant<int, tile>{}, std::bool_constant<tensor cores>{}) for
// tile in {32, 64}: tensor cores for 16-bit types always, for float when use_tf32, never
// for double.
template <typename T, class F>
void dispatch_tile(int64_t tile, bool use_tf32, const F& f) {
  const auto with_math = [&](auto width) {
    if constexpr (std::is_same_v<T, float>) {
      if (use_tf32) {
        f(width, std::true_type{});
      } else {
        f(width, std::false_type{});
      }
    } else {
      f(width, std::bool_constant<!std::is_same_v<T, double>>{});
    }
  };
  if (tile == 32) {
    with_math(std::integral_constant<int, 32>{});
  } else {
    with_math(std::integral_constant<int, 64>{});
  }
}

}  // namespace rskcnn::cuda::tiled
