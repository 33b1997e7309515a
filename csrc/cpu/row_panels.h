// Row panels: 32 rows that share one list of kept columns (the output channels of a
// 32-wide block row, or the input channels of a 32-wide block column), multiplied with
// the rows in the vector lanes. Per kept column the panel loads 32 packed weights as
// vectors and broadcasts PX pixels of the column, so a loaded column value feeds 32
// rows (the 4-row groups of row_groups.h feed 4) and the column chunk is read once
// per panel instead of once per 4 rows.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "row_groups.h"
#include "sparse_rows.h"
#include "vec.h"

namespace rskcnn::cpu {

constexpr int kPanelRows = 32;

struct RowPanel {
  int64_t first_slot;     // rows are slots [first_slot, first_slot + kPanelRows)
  int64_t list_offset;    // into SparseRows::columns
  int64_t nnz;
  int64_t packed_offset;  // packed[packed_offset + e * kPanelRows + r]
};

template <typename T>
struct RowPanels {
  std::vector<RowPanel> panels;
  std::vector<RowGroup> rest;  // rows outside every panel, as groups of up to kMaxGroupRows
  std::vector<T> packed;
};

// Cuts each run of slots that share a list into panels of kPanelRows; the leftover rows
// of a run keep the row-group kernel. values as from gather_kept_values.
template <typename T>
RowPanels<T> make_row_panels(const SparseRows& rows, const std::vector<T>& values) {
  RowPanels<T> out;
  const auto& groups = rows.groups;
  for (size_t g = 0; g < groups.size();) {
    size_t end = g + 1;
    // Same offset and length: the same list (an empty list shares its offset with the next).
    while (end < groups.size() && groups[end].list_offset == groups[g].list_offset &&
           groups[end].nnz == groups[g].nnz)
      ++end;
    const int64_t first = groups[g].first_slot;
    const int64_t count = groups[end - 1].first_slot + groups[end - 1].num_rows - first;
    const int64_t nnz = groups[g].nnz;
    const int64_t in_panels = nnz > 0 ? count / kPanelRows * kPanelRows : 0;
    for (int64_t s = first; s < first + in_panels; s += kPanelRows) {
      const auto offset = static_cast<int64_t>(out.packed.size());
      out.panels.push_back(RowPanel{s, groups[g].list_offset, nnz, offset});
      out.packed.resize(offset + nnz * kPanelRows);
      T* panel = out.packed.data() + offset;
      const T* row[kPanelRows];
      for (int r = 0; r < kPanelRows; ++r) row[r] = values.data() + rows.value_offset[s + r];
      for (int64_t e = 0; e < nnz; ++e)
        for (int r = 0; r < kPanelRows; ++r) panel[e * kPanelRows + r] = row[r][e];
    }
    for (int64_t s = first + in_panels; s < first + count; s += kMaxGroupRows) {
      const auto n = static_cast<int32_t>(std::min<int64_t>(kMaxGroupRows, first + count - s));
      out.rest.push_back(RowGroup{s, n, groups[g].list_offset, nnz});
    }
    g = end;
  }
  return out;
}

// Vectors of rows per panel, and the register tiles: panel_tile keeps RV * PX accumulators
// plus RV weight vectors and 4 spare registers (PX = 12 in fp32 with AVX-512, 1-3% faster
// than 8 on the bench layers, 1 thread); panel_dots keeps RV * KT, half the registers.
template <typename T>
constexpr int panel_vectors() {
  return kPanelRows / Vec<T>::lanes;
}
template <typename T>
constexpr int panel_pixels() {
  constexpr int rv = panel_vectors<T>();
  constexpr int half = kVectorRegisters / 2 / rv, most = (kVectorRegisters - 2 * rv - 4) / rv;
  return std::max({most, half, 1});
}
template <typename T>
constexpr int panel_dot_columns() {
  return std::max(kVectorRegisters / 2 / panel_vectors<T>(), 1);
}

// tile[p * kPanelRows + r] += sum_e panel[e][r] * cols[index[e]][p0 + p], p < PX, e in [e0, e1)
template <int Chunk, int PX, typename T>
void panel_tile(const int32_t* index, int64_t e0, int64_t e1, const T* panel, const T* cols, int p0,
                T* tile) {
  constexpr int L = Vec<T>::lanes;
  constexpr int RV = panel_vectors<T>();
  vec_t<T> acc[PX][RV];
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < RV; ++v) acc[p][v] = vload(tile + p * kPanelRows + v * L);
#pragma GCC unroll 4  // 7% faster than GCC's choice on VGG-16 conv5_3 (1 thread)
  for (int64_t e = e0; e < e1; ++e) {
    vec_t<T> w[RV];
    for (int v = 0; v < RV; ++v) w[v] = vload(panel + e * kPanelRows + v * L);
    const T* x = cols + static_cast<int64_t>(index[e]) * Chunk + p0;
    for (int p = 0; p < PX; ++p) {
      const vec_t<T> xb = vbroadcast(x[p]);
      for (int v = 0; v < RV; ++v) acc[p][v] += xb * w[v];
    }
  }
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < RV; ++v) vstore(tile + p * kPanelRows + v * L, acc[p][v]);
}

// The grad-weight twin of panel_tile, pixels being the reduction: for KT kept columns,
// ct[k * kPanelRows + r] += sum_p gt[p * kPanelRows + r] * rows[k][p], p < len. gt holds a
// panel's grad_output rows transposed (pixel-major, rows in the lanes).
template <int KT, typename T>
void panel_dots(const T* gt, int64_t len, const T* const* rows, T* ct) {
  constexpr int L = Vec<T>::lanes;
  constexpr int RV = panel_vectors<T>();
  vec_t<T> acc[KT][RV];
  for (int k = 0; k < KT; ++k)
    for (int v = 0; v < RV; ++v) acc[k][v] = vec_t<T>{};
  for (int64_t p = 0; p < len; ++p) {
    vec_t<T> g[RV];
    for (int v = 0; v < RV; ++v) g[v] = vload(gt + p * kPanelRows + v * L);
    for (int k = 0; k < KT; ++k) {
      const vec_t<T> xb = vbroadcast(rows[k][p]);
      for (int v = 0; v < RV; ++v) acc[k][v] += xb * g[v];
    }
  }
  for (int k = 0; k < KT; ++k)
    for (int v = 0; v < RV; ++v) {
      T* out = ct + k * kPanelRows + v * L;
      vstore(out, vload(out) + acc[k][v]);
    }
}

// panel_dots over every kept column: columns[k] is row columns[k] of `tile` (stride ld).
template <typename T>
void panel_dots_all(const T* gt, int64_t len, const int32_t* columns, int64_t kept, const T* tile,
                    int64_t ld, T* ct) {
  constexpr int KT = panel_dot_columns<T>();
  const T* rows[KT];
  int64_t k = 0;
  for (; k + KT <= kept; k += KT) {
    for (int j = 0; j < KT; ++j) rows[j] = tile + static_cast<int64_t>(columns[k + j]) * ld;
    panel_dots<KT>(gt, len, rows, ct + k * kPanelRows);
  }
  for (; k < kept; ++k) {
    rows[0] = tile + static_cast<int64_t>(columns[k]) * ld;
    panel_dots<1>(gt, len, rows, ct + k * kPanelRows);
  }
}

// Kept columns per pass over the chunk: their weights (8 KB in fp32) and chunk rows (16 KB
// at 64 pixels) stay in L1 while every pixel tile is accumulated. 64 measured 13% faster
// than 128 and 3% faster than 32 on VGG-16 conv5_3 (block 32x32, keep 0.5, 1 thread).
constexpr int64_t kPanelStep = 64;

// The panels' rows of the chunk result into out_rows (+ row * Chunk), then the rest.
template <int Chunk, typename T>
void multiply_chunk_panels(const SparseRows& rows, const RowPanels<T>& panels, const T* values,
                           const T* cols, T* out_rows) {
  constexpr int PX = panel_pixels<T>();
  constexpr int TAIL = Chunk % PX;
  alignas(64) T tile[Chunk * kPanelRows];
  for (const RowPanel& panel : panels.panels) {
    const int32_t* list = rows.columns.data() + panel.list_offset;
    const T* packed = panels.packed.data() + panel.packed_offset;
    std::fill(tile, tile + Chunk * kPanelRows, T(0));
    for (int64_t e0 = 0; e0 < panel.nnz; e0 += kPanelStep) {
      const int64_t e1 = std::min(panel.nnz, e0 + kPanelStep);
      int p0 = 0;
      for (; p0 + PX <= Chunk; p0 += PX) panel_tile<Chunk, PX>(list, e0, e1, packed, cols, p0, tile + p0 * kPanelRows);
      if constexpr (TAIL > 0) panel_tile<Chunk, TAIL>(list, e0, e1, packed, cols, p0, tile + p0 * kPanelRows);
    }
    for (int r = 0; r < kPanelRows; ++r) {
      T* out = out_rows + rows.row_ids[panel.first_slot + r] * Chunk;
      for (int p = 0; p < Chunk; ++p) out[p] = tile[p * kPanelRows + r];
    }
  }
  for (const RowGroup& g : panels.rest) multiply_group<Chunk>(rows, g, values, cols, out_rows);
}

}  // namespace rskcnn::cpu
