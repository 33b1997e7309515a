// Runs the micro-kernels over every row group of a SparseRows for one chunk.
#pragma once

#include <cstdint>

#include "microkernels.h"
#include "sparse_rows.h"

namespace rskcnn::cpu {

// out_rows + row * Chunk receives row `row` (group-local) of group g's chunk result.
template <int Chunk, typename T>
void multiply_group(const SparseRows& rows, const RowGroup& g, const T* values, const T* cols, T* out_rows) {
  const int32_t* list = rows.columns.data() + g.list_offset;
  const T* vals[kMaxGroupRows];
  T* outs[kMaxGroupRows];
  for (int32_t r = 0; r < g.num_rows; ++r) {
    vals[r] = values + rows.value_offset[g.first_slot + r];
    outs[r] = out_rows + rows.row_ids[g.first_slot + r] * Chunk;
  }
  switch (g.num_rows) {
    case 1: sparse_rows_times_columns<Chunk, T, 1>(list, g.nnz, vals, cols, outs); break;
    case 2: sparse_rows_times_columns<Chunk, T, 2>(list, g.nnz, vals, cols, outs); break;
    case 3: sparse_rows_times_columns<Chunk, T, 3>(list, g.nnz, vals, cols, outs); break;
    default: sparse_rows_times_columns<Chunk, T, 4>(list, g.nnz, vals, cols, outs); break;
  }
}

// dots + value_offset[slot] accumulates, for each kept column of the slot's row,
// the dot product of row `row` of in_rows with that column over the chunk.
template <int Chunk, typename T>
void correlate_chunk(const SparseRows& rows, const T* in_rows, const T* cols, T* dots) {
  for (const RowGroup& g : rows.groups) {
    const int32_t* list = rows.columns.data() + g.list_offset;
    const T* ins[kMaxGroupRows];
    T* outs[kMaxGroupRows];
    for (int32_t r = 0; r < g.num_rows; ++r) {
      ins[r] = in_rows + rows.row_ids[g.first_slot + r] * Chunk;
      outs[r] = dots + rows.value_offset[g.first_slot + r];
    }
    switch (g.num_rows) {
      case 1: sampled_row_column_dots<Chunk, T, 1>(list, g.nnz, ins, cols, outs); break;
      case 2: sampled_row_column_dots<Chunk, T, 2>(list, g.nnz, ins, cols, outs); break;
      case 3: sampled_row_column_dots<Chunk, T, 3>(list, g.nnz, ins, cols, outs); break;
      default: sampled_row_column_dots<Chunk, T, 4>(list, g.nnz, ins, cols, outs); break;
    }
  }
}

}  // namespace rskcnn::cpu
