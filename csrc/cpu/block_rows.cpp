#include "block_rows.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "block_lists.h"
#include "compacted.h"
#include "row_panels.h"

namespace rskcnn::cpu {
namespace {

// Below this many channels per block row the GEMMs are too thin to beat the sparse rows.
constexpr int64_t kMinBlockRows = 8;
// Bytes of a chunk's im2col tile: on VGG-16's 512x512x3x3 layer 1 MB (64 pixels) ran as fast
// as 2 MB and faster than 4.7 MB.
constexpr int64_t kTileBytes = int64_t{1} << 20;

int64_t chunk_pixels(int64_t tile_rows, int64_t elem_size) {
  const int64_t p = kTileBytes / (std::max<int64_t>(1, tile_rows) * elem_size) / 16 * 16;
  return std::clamp<int64_t>(p, 64, 2048);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Blocks of bo output channels and, per block, the sorted kept rows of the input im2col
// tile, tap-major: (kh * KW + kw) * Cin + i, so that a kept block of input channels is a
// run of consecutive tile rows.
struct BlockRows {
  std::vector<int64_t> first, count;  // channels [first, first + count)
  std::vector<int64_t> list_begin;    // block b keeps columns[list_begin[b], list_begin[b + 1])
  std::vector<int32_t> columns;
  std::vector<int64_t> weight_offset;  // of block b's (count x kept) compacted weight gradient
  int64_t weight_size = 0, max_kept = 0, max_count = 0;

  int64_t blocks() const { return static_cast<int64_t>(first.size()); }
  int64_t kept(int64_t b) const { return list_begin[b + 1] - list_begin[b]; }
  const int32_t* list(int64_t b) const { return columns.data() + list_begin[b]; }
};

BlockRows make_block_rows(const BlockLists& plan, const ConvArgs& a) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t blocks = g.mo, block = g.bo, extent = a.cout, outer_block = g.bi, outer_extent = a.cin_g;
  BlockRows r;
  r.list_begin.push_back(0);
  for (int64_t b = 0; b < blocks; ++b) {
    r.first.push_back(b * block);
    r.count.push_back(std::min(block, extent - b * block));
    const size_t start = r.columns.size();
    const int32_t* kept = plan.row(b);
    for (int32_t t = 0; t < plan.count(b); ++t) {
      const BlockCoord c = decode_entry(kept[t], g);
      const IndexRange orange = block_range(c.outer, outer_block, outer_extent);
      const IndexRange hr = block_range(c.hb, g.bh, a.kh);
      const IndexRange wr = block_range(c.wb, g.bw, a.kw);
      for (int64_t i = orange.begin; i < orange.end; ++i)
        for (int64_t kh = hr.begin; kh < hr.end; ++kh)
          for (int64_t kw = wr.begin; kw < wr.end; ++kw)
            r.columns.push_back(static_cast<int32_t>((kh * a.kw + kw) * outer_extent + i));
    }
    std::sort(r.columns.begin() + start, r.columns.end());
    r.list_begin.push_back(static_cast<int64_t>(r.columns.size()));
    r.weight_offset.push_back(r.weight_size);
    const int64_t k = r.kept(b);
    r.weight_size += round_up(r.count[b] * k, 16);  // 64-byte aligned operands
    r.max_kept = std::max(r.max_kept, k);
    r.max_count = std::max(r.max_count, r.count[b]);
  }
  return r;
}

// A run of chunk pixels on one image row: pixels (n, row, col0 .. col0 + len) are chunk
// columns j .. j + len.
struct Segment {
  int64_t n, row, col0, len, j;
};

void chunk_segments(int64_t q0, int64_t len, int64_t rows, int64_t cols, std::vector<Segment>& segs) {
  segs.clear();
  for (int64_t j = 0; j < len;) {
    const int64_t q = q0 + j;
    const int64_t n = q / (rows * cols), pix = q % (rows * cols);
    const int64_t col0 = pix % cols, run = std::min(cols - col0, len - j);
    segs.push_back(Segment{n, pix / cols, col0, run, j});
    j += run;
  }
}

// dst[col - s.col0] = src[col * step + offset] for col in the segment, 0 where that index
// is outside [0, limit).
template <typename T>
void copy_run(T* dst, const T* src, const Segment& s, int64_t step, int64_t offset, int64_t limit) {
  const int64_t lo = offset >= 0 ? 0 : ceil_div(-offset, step);
  const int64_t hi = limit - 1 - offset >= 0 ? (limit - 1 - offset) / step + 1 : 0;
  const int64_t end = s.col0 + s.len;
  const int64_t b = std::clamp(lo, s.col0, end), e = std::clamp(hi, b, end);
  std::fill(dst, dst + (b - s.col0), T(0));
  if (step == 1) {
    std::memcpy(dst + (b - s.col0), src + b + offset, (e - b) * sizeof(T));
  } else {
    for (int64_t c = b; c < e; ++c) dst[c - s.col0] = src[c * step + offset];
  }
  std::fill(dst + (e - s.col0), dst + s.len, T(0));
}

// Input im2col of a chunk of output pixels, channels [c_begin, c_end):
// tile[(kh * KW + kw) * Cin + c][j] (row stride ld).
template <typename T>
void input_tile(const T* x, const ConvArgs& a, const std::vector<Segment>& segs, int64_t c_begin,
                int64_t c_end, int64_t ld, T* tile) {
  for (int64_t c = c_begin; c < c_end; ++c) {
    for (int64_t kh = 0; kh < a.kh; ++kh) {
      for (int64_t kw = 0; kw < a.kw; ++kw) {
        T* row = tile + ((kh * a.kw + kw) * a.cin + c) * ld;
        for (const Segment& s : segs) {
          const int64_t ih = s.row * a.sh - a.ph + kh * a.dh;
          if (ih < 0 || ih >= a.h) {
            std::fill(row + s.j, row + s.j + s.len, T(0));
            continue;
          }
          copy_run(row + s.j, x + ((s.n * a.cin + c) * a.h + ih) * a.w, s, a.sw, kw * a.dw - a.pw, a.w);
        }
      }
    }
  }
}

// rows[r][j] (stride ld) = t[n, first + r, pixel] over the chunk's segments of an
// (N, channels, rows*cols) tensor.
template <typename T>
void load_rows(const T* t, int64_t channels, int64_t plane, int64_t cols, const std::vector<Segment>& segs,
               int64_t first, int64_t count, int64_t ld, T* rows) {
  for (const Segment& s : segs) {
    const int64_t pix = s.row * cols + s.col0;
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(rows + r * ld + s.j, t + (s.n * channels + first + r) * plane + pix, s.len * sizeof(T));
    }
  }
}

template <typename T>
at::Tensor matrix(const T* p, int64_t rows, int64_t cols, int64_t ld, const at::TensorOptions& options) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {std::max<int64_t>(1, ld), 1}, options);
}

// The kept rows of block b in `tile` (stride ld) as a contiguous-row operand: the tile
// itself when they are consecutive, else gathered into `buffer`, one copy per run.
template <typename T>
const T* kept_rows(const BlockRows& r, int64_t b, const T* tile, int64_t ld, T* buffer) {
  const int32_t* list = r.list(b);
  const int64_t kept = r.kept(b);
  if (list[kept - 1] - list[0] == kept - 1) return tile + list[0] * ld;
  for (int64_t j = 0; j < kept;) {
    int64_t end = j + 1;
    while (end < kept && list[end] == list[end - 1] + 1) ++end;
    std::memcpy(buffer + j * ld, tile + list[j] * ld, (end - j) * ld * sizeof(T));
    j = end;
  }
  return buffer;
}

// gt[j * kPanelRows + r] = grad_output row first + r at chunk pixel j, r < count (0 beyond).
template <typename T>
void load_rows_transposed(const T* t, int64_t channels, int64_t plane, int64_t cols,
                          const std::vector<Segment>& segs, int64_t first, int64_t count, int64_t len,
                          T* gt) {
  if (count < kPanelRows) std::fill(gt, gt + len * kPanelRows, T(0));
  for (const Segment& s : segs) {
    const int64_t pix = s.row * cols + s.col0;
    for (int64_t r = 0; r < count; ++r) {
      const T* src = t + (s.n * channels + first + r) * plane + pix;
      for (int64_t j = 0; j < s.len; ++j) gt[(s.j + j) * kPanelRows + r] = src[j];
    }
  }
}

// Each block's weight gradient accumulates chunk by chunk in pixel order; each block belongs
// to one task, so the sums do not depend on the thread count. The chunk's tile is built
// once, by all threads, and shared by the blocks. Blocks of a multiple of kPanelRows
// channels take panel_dots: per 32-row panel, dW^T (kept x 32) += the kept tile rows times
// grad_output^T, read in place. Others take one BLAS GEMM per block,
// dW_b (count x kept) += grad_output_b (count x P) @ kept_rows^T, on gathered rows.
template <typename T>
void grad_weight_kernel(const T* go, const T* x, const BlockRows& r, const ConvArgs& a, T scale,
                        const at::TensorOptions& options, T* gw) {
  const int64_t taps = a.kh * a.kw, filter_size = a.cin_g * taps;
  const int64_t pixels = a.n * a.oh * a.ow, plane = a.oh * a.ow;
  const int64_t P = chunk_pixels(filter_size, sizeof(T));
  const int64_t chunks = ceil_div(pixels, P);
  const bool panels = a.mask.bo % kPanelRows == 0;
  // Block b's gradient: (count x kept) at weight_offset[b], or its panels' (kept x 32) at
  // panel_offset[b] + panel * kept * 32.
  std::vector<int64_t> panel_offset(r.blocks() + 1, 0);
  for (int64_t b = 0; b < r.blocks(); ++b)
    panel_offset[b + 1] = panel_offset[b] + ceil_div(r.count[b], kPanelRows) * r.kept(b) * kPanelRows;
  at::Tensor dw_t = at::zeros({std::max<int64_t>(1, panels ? panel_offset.back() : r.weight_size)}, options);
  T* dw = dw_t.mutable_data_ptr<T>();
  at::Tensor tile_t = at::empty({filter_size * P}, options);
  T* tile = tile_t.mutable_data_ptr<T>();
  const int64_t threads = at::get_num_threads();
  std::vector<at::Tensor> gathered(threads), go_rows(threads);
  std::vector<Segment> segs;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t q0 = chunk * P, len = std::min(P, pixels - q0);
    chunk_segments(q0, len, a.oh, a.ow, segs);
    at::parallel_for(0, a.cin, 1 + 4096 / (a.kh * a.kw * len), [&](int64_t begin, int64_t end) {
      input_tile(x, a, segs, begin, end, P, tile);
    });
    at::parallel_for(0, r.blocks(), 1, [&](int64_t begin, int64_t end) {
      const int64_t tid = at::get_thread_num();
      if (!go_rows[tid].defined()) {
        gathered[tid] = at::empty({std::max<int64_t>(1, panels ? 1 : r.max_kept * P)}, options);
        go_rows[tid] = at::empty({std::max<int64_t>(1, (panels ? kPanelRows : r.max_count) * P)}, options);
      }
      T* buffer = gathered[tid].mutable_data_ptr<T>();
      T* g = go_rows[tid].mutable_data_ptr<T>();
      for (int64_t b = begin; b < end; ++b) {
        const int64_t kept = r.kept(b), count = r.count[b];
        if (kept == 0) continue;
        if (panels) {
          for (int64_t i = 0; i * kPanelRows < count; ++i) {
            const int64_t rows = std::min<int64_t>(kPanelRows, count - i * kPanelRows);
            load_rows_transposed(go, a.cout, plane, a.ow, segs, r.first[b] + i * kPanelRows, rows, len, g);
            panel_dots_all(g, len, r.list(b), kept, tile, P, dw + panel_offset[b] + i * kept * kPanelRows);
          }
          continue;
        }
        load_rows(go, a.cout, plane, a.ow, segs, r.first[b], count, P, g);
        const T* operand = kept_rows(r, b, tile, P, buffer);
        at::Tensor acc = matrix(dw + r.weight_offset[b], count, kept, kept, options);
        at::cpu::addmm_(acc, matrix(g, count, len, P, options), matrix(operand, kept, len, P, options).t());
      }
    });
  }
  at::parallel_for(0, r.blocks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int32_t* list = r.list(b);
      const int64_t kept = r.kept(b);
      for (int64_t row = 0; row < r.count[b]; ++row) {
        // Entry j of the row: (row, j) of a GEMM block, (j, row % 32) of a panel.
        const T* src = panels ? dw + panel_offset[b] + row / kPanelRows * kept * kPanelRows + row % kPanelRows
                              : dw + r.weight_offset[b] + row * kept;
        const int64_t step = panels ? kPanelRows : 1;
        T* filter = gw + (r.first[b] + row) * filter_size;
        for (int64_t j = 0; j < kept; ++j)
          filter[(list[j] % a.cin_g) * taps + list[j] / a.cin_g] = src[j * step] * scale;
      }
    }
  });
}

}  // namespace

bool block_rows_fit(const ConvArgs& a) {
  return a.groups == 1 && !spans_input_channels(a) && a.mask.bo >= kMinBlockRows;
}

at::Tensor block_rows_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& mask, const ConvArgs& a, double scale) {
  at::Tensor gw = at::zeros({a.cout, a.cin_g, a.kh, a.kw}, grad_output.options());
  if (gw.numel() == 0 || a.n == 0) return gw;
  const at::Tensor go = grad_output.contiguous();
  const at::Tensor x = input.contiguous();
  const BlockRows r = make_block_rows(build_row_plan(mask, a.mask), a);
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "rskcnn_block_rows_grad_weight", [&] {
    grad_weight_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), r, a,
                                 static_cast<scalar_t>(scale), go.options(), gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

}  // namespace rskcnn::cpu
