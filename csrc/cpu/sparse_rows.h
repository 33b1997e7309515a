// The kept weights of one convolution group as sparse rows, built from a plan.
//
// Forward and grad-weight: a row is an output channel o and its columns are
// k = (c * KH + kh) * KW + kw over the group's input channels c.
// Grad-input: a row is an input channel c and its columns are
// k = (o * KH + kh) * KW + kw over the group's output channels o.
// Rows with the same column list are gathered into groups of up to kMaxGroupRows.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../conv_args.h"
#include "block_lists.h"

namespace rskcnn::cpu {

constexpr int kMaxGroupRows = 4;

struct RowGroup {
  int64_t first_slot;  // rows are slots [first_slot, first_slot + num_rows) of SparseRows::row_ids
  int32_t num_rows;
  int64_t list_offset;  // into SparseRows::columns
  int64_t nnz;
};

struct SparseRows {
  std::vector<int64_t> row_ids;       // group-local row of each slot
  std::vector<int64_t> value_offset;  // per slot, into a values array aligned with its list
  std::vector<RowGroup> groups;
  std::vector<int32_t> columns;
  int64_t num_values = 0;
};

// Output channels of conv group `group` as rows (forward, grad-weight).
SparseRows output_channel_rows(const BlockLists& row_plan, const ConvArgs& a, int64_t group);
// Input channels of conv group `group` as rows (grad-input).
SparseRows input_channel_rows(const BlockLists& column_plan, const ConvArgs& a, int64_t group);

// values[value_offset[s] + e] = weight[weight_index(row_ids[s], columns[list + e])] * scale
template <typename T, typename WeightIndex>
std::vector<T> gather_kept_values(const SparseRows& rows, const T* weight, T scale,
                                  WeightIndex weight_index) {
  std::vector<T> values(rows.num_values);
  for (const RowGroup& g : rows.groups) {
    const int32_t* list = rows.columns.data() + g.list_offset;
    for (int32_t r = 0; r < g.num_rows; ++r) {
      const int64_t slot = g.first_slot + r;
      T* out = values.data() + rows.value_offset[slot];
      for (int64_t e = 0; e < g.nnz; ++e) out[e] = weight[weight_index(rows.row_ids[slot], list[e])] * scale;
    }
  }
  return values;
}

}  // namespace rskcnn::cpu
