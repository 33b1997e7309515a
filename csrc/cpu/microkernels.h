// The two inner loops of the CPU backend, over one chunk of Chunk pixels.
// A row group is up to 4 rows that share one list of kept column indices, so a
// loaded column is reused by every row of the group.
#pragma once

#include <cstdint>

#include "vec.h"

namespace rskcnn::cpu {

// Vectors per pixel tile for R rows: R * V accumulators fill at most half the
// registers, leaving the rest for the loaded columns and broadcast weights.
template <typename T, int R, int Chunk>
constexpr int tile_vectors() {
  constexpr int fit = kVectorRegisters / 2 / R;
  constexpr int chunk = Chunk / Vec<T>::lanes;
  constexpr int v = fit >= 8 ? 8 : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
  return v < chunk ? v : chunk;
}

// out[r][j] = sum_e values[r][e] * cols[index[e]][j], j < Chunk
template <int Chunk, typename T, int R>
void sparse_rows_times_columns(const int32_t* index, int64_t nnz, const T* const* values,
                               const T* cols, T* const* out) {
  constexpr int L = Vec<T>::lanes;
  constexpr int V = tile_vectors<T, R, Chunk>();
  static_assert(Chunk % (V * L) == 0, "chunk must hold whole tiles");
  for (int tile = 0; tile < Chunk; tile += V * L) {
    vec_t<T> acc[R][V];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = vec_t<T>{};
    for (int64_t e = 0; e < nnz; ++e) {
      const T* col = cols + static_cast<int64_t>(index[e]) * Chunk + tile;
      vec_t<T> x[V];
      for (int v = 0; v < V; ++v) x[v] = vload(col + v * L);
      for (int r = 0; r < R; ++r) {
        const vec_t<T> w = vbroadcast(values[r][e]);
        for (int v = 0; v < V; ++v) acc[r][v] += w * x[v];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) vstore(out[r] + tile + v * L, acc[r][v]);
  }
}

// Kept columns per step of the dot-product kernel: R * E accumulators.
template <int R>
constexpr int dot_columns() {
  constexpr int fit = kVectorRegisters / 2 / R;
  return fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
}

// dots[r][e] += sum_j rows[r][j] * cols[index[e]][j], j < Chunk. E columns at a time
// share each loaded row vector; one horizontal sum per (r, e) per chunk.
template <int Chunk, typename T, int R>
void sampled_row_column_dots(const int32_t* index, int64_t nnz, const T* const* rows,
                             const T* cols, T* const* dots) {
  constexpr int L = Vec<T>::lanes;
  constexpr int E = dot_columns<R>();
  int64_t e = 0;
  for (; e + E <= nnz; e += E) {
    const T* col[E];
    for (int c = 0; c < E; ++c) col[c] = cols + static_cast<int64_t>(index[e + c]) * Chunk;
    vec_t<T> acc[R][E];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < E; ++c) acc[r][c] = vec_t<T>{};
    for (int j = 0; j < Chunk; j += L) {
      vec_t<T> x[E];
      for (int c = 0; c < E; ++c) x[c] = vload(col[c] + j);
      for (int r = 0; r < R; ++r) {
        const vec_t<T> g = vload(rows[r] + j);
        for (int c = 0; c < E; ++c) acc[r][c] += g * x[c];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < E; ++c) dots[r][e + c] += vsum<T>(acc[r][c]);
  }
  for (; e < nnz; ++e) {
    const T* col = cols + static_cast<int64_t>(index[e]) * Chunk;
    vec_t<T> acc[R];
    for (int r = 0; r < R; ++r) acc[r] = vec_t<T>{};
    for (int j = 0; j < Chunk; j += L) {
      const vec_t<T> x = vload(col + j);
      for (int r = 0; r < R; ++r) acc[r] += vload(rows[r] + j) * x;
    }
    for (int r = 0; r < R; ++r) dots[r][e] += vsum<T>(acc[r]);
  }
}

}  // namespace rskcnn::cpu
