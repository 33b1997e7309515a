// Tile plans of the implicit-GEMM kernels: the per-group channel order and, for each
// tile, the (tap, chunk) steps it must visit. Built by the same host/device functions
// of block_mask.h on the CPU (csrc/cpu/tile_steps.cpp, for tests) and on the GPU
// (csrc/cuda/tile_steps.cu, with no host sync).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <utility>

#include "block_mask.h"
#include "conv_args.h"

namespace rskcnn {

// The shape of a tiled pass: forward (and grad-weight) tiles are `out_tile` positions of
// the channel order that reduce over chunks of `in_chunk` input channels; grad-input
// tiles are `in_tile` input channels that reduce over chunks of `out_chunk` positions
// of the order.
struct TileShape {
  int64_t out_tile, in_chunk, in_tile, out_chunk;
};

// How many tiles a pass has per group and how many steps a tile's list holds.
struct TileCounts {
  int64_t out_tiles;     // forward tiles per group = ceil(Cout/groups / out_tile)
  int64_t in_tiles;      // grad-input tiles per group = ceil(Cin/groups / in_tile)
  int64_t out_capacity;  // KH * KW * ceil(Cin/groups / in_chunk)
  int64_t in_capacity;   // KH * KW * ceil(Cout/groups / out_chunk)
};

inline TileCounts count_tiles(const BlockMaskGeometry& g, int64_t groups, const TileShape& shape) {
  const int64_t cout_g = g.cout / groups;
  return TileCounts{ceil_div(cout_g, shape.out_tile), ceil_div(g.cin_g, shape.in_tile),
                    g.kh * g.kw * ceil_div(g.cin_g, shape.in_chunk),
                    g.kh * g.kw * ceil_div(cout_g, shape.out_chunk)};
}

// The plans of one mask: its tile counts (count_tiles) and the lists.
struct TilePlans : TileCounts {
  TileShape shape;
  bool reorder;            // false: order is the identity
  int64_t groups;
  at::Tensor order;        // (Cout,) int32, global channel ids, each group's in its range
  at::Tensor out_entries;  // (groups * out_tiles, out_capacity) int32, first out_counts[t] valid
  at::Tensor out_counts;   // (groups * out_tiles,) int32
  at::Tensor in_entries;   // (groups * in_tiles, in_capacity) int32
  at::Tensor in_counts;    // (groups * in_tiles,) int32

  // What rskcnn::plan_tiles returns.
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tensors() const {
    return {order, out_entries, out_counts, in_entries, in_counts};
  }
};

// Allocates plans on mask's device (counts and order uninitialised).
inline TilePlans allocate_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g,
                                     int64_t groups, const TileShape& shape, bool reorder) {
  TORCH_CHECK(shape.out_tile > 0 && shape.in_chunk > 0 && shape.in_tile > 0 && shape.out_chunk > 0,
              "rskcnn: tile shape entries must be positive, got (", shape.out_tile, ", ",
              shape.in_chunk, ", ", shape.in_tile, ", ", shape.out_chunk, ")");
  TORCH_CHECK(groups > 0 && g.cout % groups == 0, "rskcnn: groups = ", groups,
              " must divide Cout = ", g.cout);
  TilePlans p{};
  static_cast<TileCounts&>(p) = count_tiles(g, groups, shape);
  p.shape = shape;
  p.reorder = reorder;
  p.groups = groups;
  TORCH_CHECK(p.out_capacity < INT32_MAX && p.in_capacity < INT32_MAX,
              "rskcnn: a tile plan of ", std::max(p.out_capacity, p.in_capacity),
              " steps overflows its int32 entries");
  const auto opts = mask.options().dtype(at::kInt);
  p.order = at::empty({g.cout}, opts);
  // Unused slots hold -1, so plans compare equal across runs and devices.
  p.out_entries = at::full({groups * p.out_tiles, p.out_capacity}, -1, opts);
  p.out_counts = at::empty({groups * p.out_tiles}, opts);
  p.in_entries = at::full({groups * p.in_tiles, p.in_capacity}, -1, opts);
  p.in_counts = at::empty({groups * p.in_tiles}, opts);
  return p;
}

// The arguments of rskcnn::plan_tiles, checked, as the mask's geometry and plans allocated
// on the mask's device for the backend's build_tile_plans.
inline std::pair<BlockMaskGeometry, TilePlans> allocate_plan_tiles_call(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder) {
  const BlockMaskGeometry g = make_mask_geometry(weight_size, mask, block);
  TORCH_CHECK(g.cin_g > 0 && g.kh > 0 && g.kw > 0,
              "rskcnn: weight must have Cin/groups, KH and KW all >= 1, got weight shape ", weight_size);
  TORCH_CHECK(tile_shape.size() == 4, "rskcnn: tile_shape must have 4 elements, got ", tile_shape.size());
  const TileShape shape{tile_shape[0], tile_shape[1], tile_shape[2], tile_shape[3]};
  return {g, allocate_tile_plans(mask, g, groups, shape, reorder)};
}

// The tile shape and channel order used for a convolution's mask (csrc/cuda/conv.cpp):
// tiles of up to 64 channels that follow bo and bi where those are 32 or 64, and a
// sorted channel order unless whole blocks of output channels already fill a tile.
inline std::pair<TileShape, bool> choose_tile_shape(const BlockMaskGeometry& g) {
  int64_t out_tile = 32;  // tap patterns and small blocks share fewer skipped steps in wide tiles
  if (g.bo >= 64 || (g.bo < 32 && g.bi >= g.cin_g && g.mh * g.mw == 1)) {
    out_tile = 64;  // whole blocks of 64, or whole filters that drop together
  }
  const int64_t in_tile = g.bi >= 64 || g.bi >= g.cin_g ? 64 : 32;
  const bool reorder = g.bo < out_tile;
  return {TileShape{out_tile, 32, in_tile, 32}, reorder};
}

}  // namespace rskcnn
