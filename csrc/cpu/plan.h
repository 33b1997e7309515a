// Builds the row and column plans of csrc/block_mask.h for a CPU mask.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../block_mask.h"

namespace rskcnn::cpu {

struct Plan {
  at::Tensor entries;  // (rows, capacity) int32, the first counts[r] of row r are valid
  at::Tensor counts;   // (rows,) int32
  int64_t capacity;

  const int32_t* row(int64_t r) const { return entries.const_data_ptr<int32_t>() + r * capacity; }
  int32_t count(int64_t r) const { return counts.const_data_ptr<int32_t>()[r]; }
};

// Kept blocks of each output-block row (forward, grad-weight).
Plan build_row_plan(const at::Tensor& mask, const BlockMaskGeometry& g);
// Kept blocks of each input-block column (grad-input).
Plan build_column_plan(const at::Tensor& mask, const BlockMaskGeometry& g);

}  // namespace rskcnn::cpu
