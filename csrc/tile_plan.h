// Tile plans of the implicit-GEMM kernels: the per-group channel order and, for each
// tile, the (tap, chunk) steps it must visit. Built by the same host/device functions
// of block_mask.h on the CPU (csrc/cpu/tile_plan.cpp, for tests) and on the GPU
// (csrc/cuda/tile_plan.cu, with no host sync).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "block_mask.h"

namespace rskcnn {

struct TilePlans {
  TileShape shape;
  bool reorder;            // false: order is the identity
  int64_t groups;
  int64_t out_tiles;       // forward tiles per group = ceil(Cout/groups / out_tile)
  int64_t in_tiles;        // grad-input tiles per group = ceil(Cin/groups / in_tile)
  int64_t out_capacity;    // KH * KW * ceil(Cin/groups / in_chunk)
  int64_t in_capacity;     // KH * KW * ceil(Cout/groups / out_chunk)
  at::Tensor order;        // (Cout,) int32, global channel ids, each group's in its range
  at::Tensor out_entries;  // (groups * out_tiles, out_capacity) int32, first out_counts[t] valid
  at::Tensor out_counts;   // (groups * out_tiles,) int32
  at::Tensor in_entries;   // (groups * in_tiles, in_capacity) int32
  at::Tensor in_counts;    // (groups * in_tiles,) int32
};

// Allocates plans on mask's device (counts and order uninitialised).
inline TilePlans allocate_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g,
                                     int64_t groups, const TileShape& shape, bool reorder) {
  TORCH_CHECK(shape.out_tile > 0 && shape.in_chunk > 0 && shape.in_tile > 0 && shape.out_chunk > 0,
              "rskcnn: tile shape entries must be positive, got (", shape.out_tile, ", ",
              shape.in_chunk, ", ", shape.in_tile, ", ", shape.out_chunk, ")");
  TORCH_CHECK(groups > 0 && g.cout % groups == 0, "rskcnn: groups = ", groups,
              " must divide Cout = ", g.cout);
  const int64_t cout_g = g.cout / groups;
  TilePlans p{};
  p.shape = shape;
  p.reorder = reorder;
  p.groups = groups;
  p.out_tiles = ceil_div(cout_g, shape.out_tile);
  p.in_tiles = ceil_div(g.cin_g, shape.in_tile);
  p.out_capacity = g.kh * g.kw * ceil_div(g.cin_g, shape.in_chunk);
  p.in_capacity = g.kh * g.kw * ceil_div(cout_g, shape.out_chunk);
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
