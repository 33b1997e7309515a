// Mask -> index-list planning shared by every C++/CUDA backend.
//
// A block mask over a weight (Cout, Cin_g, KH, KW) with block (bo, bi, bh, bw) has
// shape (MO, MI, MH, MW) = ceil(weight / block). Weight element (o, i, h, w) is kept
// iff mask[o / bo][i / bi][h / bh][w / bw].
//
// Plans are fixed-capacity lists plus counts, so building them needs no host sync
// and no data-dependent allocation:
//   row plan    for each output block ob: the kept (ib, hb, wb), encoded (ib*MH+hb)*MW+wb
//   column plan for each input block ib:  the kept (ob, hb, wb), encoded (ob*MH+hb)*MW+wb
// Entries are in increasing order. The functions are plain loops over one row or
// column, so a CPU parallel_for and a CUDA thread per row run the same code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RSKCNN_HOST_DEVICE __host__ __device__
#else
#define RSKCNN_HOST_DEVICE
#endif

namespace rskcnn {

struct BlockMaskGeometry {
  int64_t cout, cin_g, kh, kw;  // weight shape
  int64_t bo, bi, bh, bw;       // block shape
  int64_t mo, mi, mh, mw;       // mask shape

  RSKCNN_HOST_DEVICE int64_t taps_per_block_row() const { return mi * mh * mw; }
  RSKCNN_HOST_DEVICE int64_t taps_per_block_column() const { return mo * mh * mw; }
};

RSKCNN_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

RSKCNN_HOST_DEVICE inline int64_t min_i64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

RSKCNN_HOST_DEVICE inline BlockMaskGeometry make_geometry(
    int64_t cout, int64_t cin_g, int64_t kh, int64_t kw,
    int64_t bo, int64_t bi, int64_t bh, int64_t bw) {
  return BlockMaskGeometry{cout, cin_g, kh, kw, bo, bi, bh, bw,
                           ceil_div(cout, bo), ceil_div(cin_g, bi),
                           ceil_div(kh, bh), ceil_div(kw, bw)};
}

// Half-open range [begin, end) of weight indices covered by block b.
struct IndexRange {
  int64_t begin, end;
};

RSKCNN_HOST_DEVICE inline IndexRange block_range(int64_t b, int64_t block, int64_t extent) {
  return IndexRange{b * block, min_i64((b + 1) * block, extent)};
}

// Writes the kept blocks of output-block row `ob` to `out`; returns how many.
RSKCNN_HOST_DEVICE inline int32_t plan_row(
    const bool* mask, const BlockMaskGeometry& g, int64_t ob, int32_t* out) {
  const int64_t n = g.taps_per_block_row();
  const bool* row = mask + ob * n;
  int32_t count = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (row[r]) out[count++] = static_cast<int32_t>(r);
  }
  return count;
}

// Writes the kept blocks of input-block column `ib` to `out`; returns how many.
RSKCNN_HOST_DEVICE inline int32_t plan_column(
    const bool* mask, const BlockMaskGeometry& g, int64_t ib, int32_t* out) {
  const int64_t taps = g.mh * g.mw;
  int32_t count = 0;
  for (int64_t ob = 0; ob < g.mo; ++ob) {
    const bool* cell = mask + (ob * g.mi + ib) * taps;
    for (int64_t t = 0; t < taps; ++t) {
      if (cell[t]) out[count++] = static_cast<int32_t>(ob * taps + t);
    }
  }
  return count;
}

// Decodes a plan entry into its three block coordinates (the first is ib for a row
// plan and ob for a column plan).
struct BlockCoord {
  int64_t outer, hb, wb;
};

RSKCNN_HOST_DEVICE inline BlockCoord decode_entry(int32_t entry, const BlockMaskGeometry& g) {
  const int64_t e = entry;
  return BlockCoord{e / (g.mh * g.mw), (e / g.mw) % g.mh, e % g.mw};
}

}  // namespace rskcnn
