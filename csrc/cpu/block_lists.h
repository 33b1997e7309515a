// The row and column plans of csrc/block_mask.h for a CPU mask: per row (output block)
// or column (input block), the list of its kept blocks. The sparse-row path
// (sparse_rows.h, block_rows.h) starts from these lists.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../block_mask.h"

namespace rskcnn::cpu {

// A row plan or a column plan.
struct BlockLists {
  at::Tensor entries;  // (rows, capacity) int32, the first counts[r] of row r are valid
  at::Tensor counts;   // (rows,) int32
  int64_t capacity;

  const int32_t* row(int64_t r) const { return entries.const_data_ptr<int32_t>() + r * capacity; }
  int32_t count(int64_t r) const { return counts.const_data_ptr<int32_t>()[r]; }
};

// Kept blocks of each output-block row (forward, grad-weight).
BlockLists build_row_plan(const at::Tensor& mask, const BlockMaskGeometry& g);
// Kept blocks of each input-block column (grad-input).
BlockLists build_column_plan(const at::Tensor& mask, const BlockMaskGeometry& g);

}  // namespace rskcnn::cpu
