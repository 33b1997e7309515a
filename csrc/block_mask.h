// Mask -> index-list planning shared by every C++/CUDA backend.
//
// A block mask over a weight (Cout, Cin_g, KH, KW) with block (bo, bi, bh, bw) has
// shape (MO, MI, MH, MW) = ceil(weight / block) (BlockMaskGeometry, conv_geometry.h).
// Weight element (o, i, h, w) is kept iff mask[o / bo][i / bi][h / bh][w / bw].
//
// Plans are fixed-capacity lists plus counts, so building them needs no host sync
// and no data-dependent allocation:
//   row plan    for each output block ob: the kept (ib, hb, wb), encoded (ib*MH+hb)*MW+wb
//   column plan for each input block ib:  the kept (ob, hb, wb), encoded (ob*MH+hb)*MW+wb
// Entries are in increasing order. The functions are plain loops over one row or
// column, so a CPU parallel_for and a CUDA thread per row run the same code.
#pragma once

#include <cstdint>

#include "conv_geometry.h"

namespace rskcnn {

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
  // Branch-free: at keep 0.5 a branch on the flag mispredicts half the time. The slot
  // written is at most r < n, so out never needs more than n entries.
  for (int64_t r = 0; r < n; ++r) {
    out[count] = static_cast<int32_t>(r);
    count += row[r] ? 1 : 0;
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
    for (int64_t t = 0; t < taps; ++t) {  // branch-free, as in plan_row
      out[count] = static_cast<int32_t>(ob * taps + t);
      count += cell[t] ? 1 : 0;
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

// ---------------------------------------------------------------------------
// Tile planning for implicit-GEMM kernels (CUDA tensor-core path; exposed on the CPU
// as rskcnn::plan_tiles so the CPU tests run this exact code).
//
// Output channels are visited in a per-group order (`order`, global channel ids):
// channels that keep nothing come last, then channels sorted by the block-taps they
// keep, so a tile of neighbouring channels shares its skipped taps and a tile of
// dropped filters has no work at all.

RSKCNN_HOST_DEVICE inline int64_t mask_index(const BlockMaskGeometry& g, int64_t o, int64_t i,
                                             int64_t h, int64_t w) {
  return ((o / g.bo * g.mi + i / g.bi) * g.mh + h / g.bh) * g.mw + w / g.bw;
}

// Whether output channel o keeps any weight among input channels [i_begin, i_end) at tap (h, w).
RSKCNN_HOST_DEVICE inline bool any_kept_at(const bool* mask, const BlockMaskGeometry& g, int64_t o,
                                           int64_t i_begin, int64_t i_end, int64_t h, int64_t w) {
  for (int64_t ib = i_begin / g.bi; ib * g.bi < i_end; ++ib) {
    if (mask[mask_index(g, o, ib * g.bi, h, w)]) return true;
  }
  return false;
}

// Sort key of output channel o: bit 63 set when it keeps nothing, then one bit per
// block-tap (hb, wb) it keeps, first tap highest (taps past the 63rd do not count).
RSKCNN_HOST_DEVICE inline uint64_t channel_sort_key(const bool* mask, const BlockMaskGeometry& g,
                                                    int64_t o) {
  const int64_t taps = g.mh * g.mw;
  const bool* row = mask + (o / g.bo) * g.taps_per_block_row();
  uint64_t pattern = 0;
  bool any = false;
  for (int64_t t = 0; t < taps; ++t) {
    bool kept = false;
    for (int64_t ib = 0; ib < g.mi && !kept; ++ib) kept = row[ib * taps + t];
    any = any || kept;
    if (kept && t < 63) pattern |= uint64_t{1} << (62 - t);
  }
  return (any ? uint64_t{0} : uint64_t{1} << 63) | pattern;
}

// Rank of channel o among channels [begin, begin + count) by (key, channel id): the
// position order[begin + rank] = o. Quadratic in the group size, which is fine for
// channel counts (one thread per channel on the GPU).
RSKCNN_HOST_DEVICE inline int64_t channel_rank(const uint64_t* keys, int64_t begin, int64_t count,
                                               int64_t o) {
  int64_t rank = 0;
  for (int64_t j = begin; j < begin + count; ++j) {
    rank += keys[j] < keys[o] || (keys[j] == keys[o] && j < o);
  }
  return rank;
}

// Forward (and grad-weight) tiles are `out_tile` positions of the channel order that
// reduce over chunks of `in_chunk` input channels; grad-input tiles are `in_tile` input
// channels that reduce over chunks of `out_chunk` positions of the order (TileShape,
// tile_steps.h). A step is (tap, chunk), encoded tap * chunks + chunk with tap = h * KW + w.

// Positions [begin, end) of the channel order covered by forward tile t, whose group
// has `cout_g` channels split into `tiles` tiles of `out_tile`.
RSKCNN_HOST_DEVICE inline IndexRange output_tile_positions(int64_t t, int64_t tiles, int64_t cout_g,
                                                           int64_t out_tile) {
  const int64_t group = t / tiles, begin = group * cout_g + (t % tiles) * out_tile;
  return IndexRange{begin, min_i64(begin + out_tile, (group + 1) * cout_g)};
}

// Input channels [begin, end), within its group, of grad-input tile t.
RSKCNN_HOST_DEVICE inline IndexRange input_tile_channels(int64_t t, int64_t tiles, int64_t cin_g,
                                                         int64_t in_tile) {
  const int64_t begin = (t % tiles) * in_tile;
  return IndexRange{begin, min_i64(begin + in_tile, cin_g)};
}

// Writes the kept steps of forward tile [pos_begin, pos_end) of `order` (one group)
// in increasing order; returns how many.
RSKCNN_HOST_DEVICE inline int32_t plan_output_tile(const bool* mask, const BlockMaskGeometry& g,
                                                   const int32_t* order, int64_t pos_begin,
                                                   int64_t pos_end, int64_t in_chunk, int32_t* out) {
  const int64_t chunks = ceil_div(g.cin_g, in_chunk);
  int32_t count = 0;
  for (int64_t tap = 0; tap < g.kh * g.kw; ++tap) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t i_end = min_i64((c + 1) * in_chunk, g.cin_g);
      for (int64_t p = pos_begin; p < pos_end; ++p) {
        if (any_kept_at(mask, g, order[p], c * in_chunk, i_end, tap / g.kw, tap % g.kw)) {
          out[count++] = static_cast<int32_t>(tap * chunks + c);
          break;
        }
      }
    }
  }
  return count;
}

// Writes the kept steps of grad-input tile [i_begin, i_end) (input channels within a
// group whose channel order starts at order + group_begin and has cout_g entries).
RSKCNN_HOST_DEVICE inline int32_t plan_input_tile(const bool* mask, const BlockMaskGeometry& g,
                                                  const int32_t* order, int64_t group_begin,
                                                  int64_t cout_g, int64_t i_begin, int64_t i_end,
                                                  int64_t out_chunk, int32_t* out) {
  const int64_t chunks = ceil_div(cout_g, out_chunk);
  int32_t count = 0;
  for (int64_t tap = 0; tap < g.kh * g.kw; ++tap) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t p_end = min_i64((c + 1) * out_chunk, cout_g);
      for (int64_t p = c * out_chunk; p < p_end; ++p) {
        if (any_kept_at(mask, g, order[group_begin + p], i_begin, i_end, tap / g.kw, tap % g.kw)) {
          out[count++] = static_cast<int32_t>(tap * chunks + c);
          break;
        }
      }
    }
  }
  return count;
}

}  // namespace rskcnn
