// Per-row lists of kept weights for the element-mask kernels, built on the device from
// the keep mask, a warp per row, into the same lists plan_row / plan_column of
// csrc/block_mask.h write: no host sync and no data-dependent allocation (each row has
// room for all of its weights).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../conv_geometry.h"

namespace rskcnn::cuda::element {

struct ElementRows {
  at::Tensor entries;  // (rows, capacity) int32; the first counts[r] of row r, increasing
  at::Tensor counts;   // (rows,) int32
  at::Tensor order;    // (rows,) int32: the rows by count, longest first, ties by index
  int64_t rows = 0;
  int64_t capacity = 0;
};

// One row per output channel o: entry (i * KH + r) * KW + s for each kept w[o, i, r, s],
// which is also that weight's offset within filter o (capacity = Cin_g * KH * KW).
ElementRows plan_filter_rows(const at::Tensor& keep, const ConvArgs& a);

// One row per input channel c = g * Cin_g + i: entry (l * KH + r) * KW + s for each kept
// w[g * Cout_g + l, i, r, s], so only output channels of c's own group appear
// (capacity = Cout_g * KH * KW).
ElementRows plan_input_rows(const at::Tensor& keep, const ConvArgs& a);

}  // namespace rskcnn::cuda::element
