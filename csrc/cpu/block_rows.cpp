#include "block_rows.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "compacted.h"
#include "plan.h"

namespace rskcnn::cpu {
namespace {

// Below this many channels per block row the GEMMs are too thin to beat the sparse rows.
constexpr int64_t kMinBlockRows = 8;
// Bytes of a chunk's im2col tile: a thread's tile, gathered operand and output stay in L2.
constexpr int64_t kTileBytes = int64_t{1} << 20;

int64_t chunk_pixels(int64_t tile_rows, int64_t elem_size) {
  const int64_t p = kTileBytes / (std::max<int64_t>(1, tile_rows) * elem_size) / 16 * 16;
  return std::clamp<int64_t>(p, 64, 2048);
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Blocks of channels (output channels for forward / grad-weight, input channels for
// grad-input) and, per block, the sorted kept rows of the matching im2col tile, tap-major:
// (kh * KW + kw) * Cin + i over input channels i, or (kh * KW + kw) * Cout + o over outputs o,
// so that a kept block of channels is a run of consecutive tile rows.
struct BlockRows {
  std::vector<int64_t> first, count;  // channels [first, first + count)
  std::vector<int64_t> list_begin;    // block b keeps columns[list_begin[b], list_begin[b + 1])
  std::vector<int32_t> columns;
  std::vector<int64_t> weight_offset;  // of block b's (count x kept) compacted weights
  int64_t weight_size = 0, max_kept = 0, max_count = 0;

  int64_t blocks() const { return static_cast<int64_t>(first.size()); }
  int64_t kept(int64_t b) const { return list_begin[b + 1] - list_begin[b]; }
  const int32_t* list(int64_t b) const { return columns.data() + list_begin[b]; }
};

// `plan` lists per block its kept (outer, hb, wb), outer a block of `outer_block` channels
// out of `outer_extent`.
BlockRows make_block_rows(const Plan& plan, int64_t blocks, int64_t block, int64_t extent,
                          int64_t outer_block, int64_t outer_extent, const ConvArgs& a) {
  const BlockMaskGeometry& g = a.mask;
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

// wc[offset_b + r * kept_b + j] = weight[index(first_b + r, list_b[j])] * scale
template <typename T, typename WeightIndex>
at::Tensor compact_weights(const BlockRows& r, const T* w, T scale, WeightIndex index,
                           const at::TensorOptions& options) {
  at::Tensor out = at::empty({std::max<int64_t>(1, r.weight_size)}, options);
  T* wc = out.mutable_data_ptr<T>();
  at::parallel_for(0, r.blocks(), 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> offset;
    for (int64_t b = begin; b < end; ++b) {
      const int32_t* list = r.list(b);
      const int64_t kept = r.kept(b), first = r.first[b];
      if (kept == 0) continue;
      // index(row, k) is affine in row, with a step that does not depend on k.
      offset.resize(kept);
      for (int64_t j = 0; j < kept; ++j) offset[j] = index(first, list[j]);
      const int64_t row_step = r.count[b] > 1 ? index(first + 1, list[0]) - offset[0] : 0;
      for (int64_t row = 0; row < r.count[b]; ++row) {
        T* dst = wc + r.weight_offset[b] + row * kept;
        const T* src = w + row * row_step;
        for (int64_t j = 0; j < kept; ++j) dst[j] = src[offset[j]] * scale;
      }
    }
  });
  return out;
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

// grad_output "im2col" of a chunk of input pixels: tile[(kh * KW + kw) * Cout + o][j] is the
// grad_output value that reached the pixel through tap (kh, kw) of output channel o.
template <typename T>
void grad_output_tile(const T* go, const ConvArgs& a, const std::vector<Segment>& segs, int64_t ld,
                      T* tile) {
  for (int64_t o = 0; o < a.cout; ++o) {
    for (int64_t kh = 0; kh < a.kh; ++kh) {
      for (int64_t kw = 0; kw < a.kw; ++kw) {
        T* row = tile + ((kh * a.kw + kw) * a.cout + o) * ld;
        for (const Segment& s : segs) {
          T* dst = row + s.j;
          const int64_t h_off = s.row + a.ph - kh * a.dh;
          if (h_off < 0 || h_off % a.sh != 0 || h_off / a.sh >= a.oh) {
            std::fill(dst, dst + s.len, T(0));
            continue;
          }
          const T* src = go + ((s.n * a.cout + o) * a.oh + h_off / a.sh) * a.ow;
          const int64_t shift = a.pw - kw * a.dw;
          if (a.sw == 1) {
            copy_run(dst, src, s, 1, shift, a.ow);
          } else {
            for (int64_t c = 0; c < s.len; ++c) {
              const int64_t w_off = s.col0 + c + shift;
              dst[c] = w_off >= 0 && w_off % a.sw == 0 && w_off / a.sw < a.ow ? src[w_off / a.sw] : T(0);
            }
          }
        }
      }
    }
  }
}

// rows[r][j] (stride ld) <-> t[n, first + r, pixel] over the chunk's segments of an
// (N, channels, rows*cols) tensor; the store adds bias[first + r] when given.
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
void store_rows(const T* rows, int64_t channels, int64_t plane, int64_t cols,
                const std::vector<Segment>& segs, int64_t first, int64_t count, int64_t ld,
                const T* bias, T* t) {
  for (const Segment& s : segs) {
    const int64_t pix = s.row * cols + s.col0;
    for (int64_t r = 0; r < count; ++r) {
      const T* src = rows + r * ld + s.j;
      T* dst = t + (s.n * channels + first + r) * plane + pix;
      const T b = bias ? bias[first + r] : T(0);
      for (int64_t c = 0; c < s.len; ++c) dst[c] = src[c] + b;
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

// out[n, first_b + r, pixel] = (wc_b @ kept rows of the chunk's tile)[r][pixel] (+ bias),
// over chunks of `pixels` pixels (images of rows x cols) in parallel.
template <typename T, typename BuildTile>
void compacted_product(const BlockRows& r, const T* wc, int64_t tile_rows, int64_t pixels, int64_t rows,
                       int64_t cols, int64_t channels, const T* bias, BuildTile build_tile,
                       const at::TensorOptions& options, T* out) {
  const int64_t P = chunk_pixels(tile_rows, sizeof(T));
  const int64_t chunks = ceil_div(pixels, P);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor tile_t = at::empty({tile_rows * P}, options);
    at::Tensor gathered_t = at::empty({std::max<int64_t>(1, r.max_kept * P)}, options);
    at::Tensor result_t = at::empty({std::max<int64_t>(1, r.max_count * P)}, options);
    T* tile = tile_t.mutable_data_ptr<T>();
    T* gathered = gathered_t.mutable_data_ptr<T>();
    std::vector<Segment> segs;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t q0 = chunk * P, len = std::min(P, pixels - q0);
      chunk_segments(q0, len, rows, cols, segs);
      build_tile(segs, P, tile);
      for (int64_t b = 0; b < r.blocks(); ++b) {
        const int64_t kept = r.kept(b), count = r.count[b];
        at::Tensor result = matrix(result_t.mutable_data_ptr<T>(), count, len, P, options);
        if (kept == 0) {
          result.zero_();
        } else {
          const T* operand = kept_rows(r, b, tile, P, gathered);
          at::cpu::mm_out(result, matrix(wc + r.weight_offset[b], count, kept, kept, options),
                          matrix(operand, kept, len, P, options));
        }
        store_rows(result_t.const_data_ptr<T>(), channels, rows * cols, cols, segs, r.first[b], count, P,
                   bias, out);
      }
    }
  });
}

template <typename T>
void forward_kernel(const T* x, const T* w, const T* bias, const BlockRows& r, const ConvArgs& a, T scale,
                    const at::TensorOptions& options, T* y) {
  const int64_t taps = a.kh * a.kw, filter_size = a.cin_g * taps;
  const at::Tensor wc = compact_weights(
      r, w, scale, [&](int64_t o, int32_t k) { return o * filter_size + (k % a.cin_g) * taps + k / a.cin_g; },
      options);
  compacted_product(
      r, wc.const_data_ptr<T>(), filter_size, a.n * a.oh * a.ow, a.oh, a.ow, a.cout, bias,
      [&](const std::vector<Segment>& segs, int64_t ld, T* tile) {
        input_tile(x, a, segs, 0, a.cin, ld, tile);
      },
      options, y);
}

template <typename T>
void grad_input_kernel(const T* go, const T* w, const BlockRows& r, const ConvArgs& a, T scale,
                       const at::TensorOptions& options, T* gi) {
  const int64_t taps = a.kh * a.kw;
  const at::Tensor wc = compact_weights(
      r, w, scale, [&](int64_t c, int32_t k) { return ((k % a.cout) * a.cin_g + c) * taps + k / a.cout; },
      options);
  compacted_product(
      r, wc.const_data_ptr<T>(), a.cout * taps, a.n * a.h * a.w, a.h, a.w, a.cin,
      static_cast<const T*>(nullptr),
      [&](const std::vector<Segment>& segs, int64_t ld, T* tile) { grad_output_tile(go, a, segs, ld, tile); },
      options, gi);
}

// dW_b (count x kept) += grad_output_b (count x P) @ kept_rows^T, chunk by chunk in pixel
// order; each block belongs to one task, so the sums do not depend on the thread count.
template <typename T>
void grad_weight_kernel(const T* go, const T* x, const BlockRows& r, const ConvArgs& a, T scale,
                        const at::TensorOptions& options, T* gw) {
  const int64_t taps = a.kh * a.kw, filter_size = a.cin_g * taps;
  const int64_t pixels = a.n * a.oh * a.ow, plane = a.oh * a.ow;
  const int64_t P = chunk_pixels(filter_size, sizeof(T));
  const int64_t chunks = ceil_div(pixels, P);
  at::Tensor dw_t = at::zeros({std::max<int64_t>(1, r.weight_size)}, options);
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
      if (!gathered[tid].defined()) {
        gathered[tid] = at::empty({std::max<int64_t>(1, r.max_kept * P)}, options);
        go_rows[tid] = at::empty({std::max<int64_t>(1, r.max_count * P)}, options);
      }
      T* buffer = gathered[tid].mutable_data_ptr<T>();
      T* g = go_rows[tid].mutable_data_ptr<T>();
      for (int64_t b = begin; b < end; ++b) {
        const int64_t kept = r.kept(b), count = r.count[b];
        if (kept == 0) continue;
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
        const T* src = dw + r.weight_offset[b] + row * kept;
        T* filter = gw + (r.first[b] + row) * filter_size;
        for (int64_t j = 0; j < kept; ++j) filter[(list[j] % a.cin_g) * taps + list[j] / a.cin_g] = src[j] * scale;
      }
    }
  });
}

}  // namespace

bool block_rows_fit_output(const ConvArgs& a) {
  return a.groups == 1 && !spans_input_channels(a) && a.mask.bo >= kMinBlockRows;
}

bool block_rows_fit_input(const ConvArgs& a) {
  return a.groups == 1 && !spans_input_channels(a) && a.mask.bi >= kMinBlockRows;
}

at::Tensor block_rows_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                              const at::Tensor& bias, const ConvArgs& a, double scale) {
  at::Tensor y = at::empty({a.n, a.cout, a.oh, a.ow}, x.options());
  if (y.numel() == 0) return y;
  const at::Tensor w = weight.contiguous();
  const BlockRows r = make_block_rows(build_row_plan(mask, a.mask), a.mask.mo, a.mask.bo, a.cout,
                                      a.mask.bi, a.cin_g, a);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rskcnn_block_rows_forward", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, r, a,
                             static_cast<scalar_t>(scale), x.options(), y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

at::Tensor block_rows_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 const at::Tensor& mask, const ConvArgs& a, double scale) {
  at::Tensor gi = at::empty({a.n, a.cin, a.h, a.w}, grad_output.options());
  if (gi.numel() == 0) return gi;
  const at::Tensor go = grad_output.contiguous();
  const at::Tensor w = weight.contiguous();
  const BlockRows r = make_block_rows(build_column_plan(mask, a.mask), a.mask.mi, a.mask.bi, a.cin_g,
                                      a.mask.bo, a.cout, a);
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "rskcnn_block_rows_grad_input", [&] {
    grad_input_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), r, a,
                                static_cast<scalar_t>(scale), go.options(), gi.mutable_data_ptr<scalar_t>());
  });
  return gi;
}

at::Tensor block_rows_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& mask, const ConvArgs& a, double scale) {
  at::Tensor gw = at::zeros({a.cout, a.cin_g, a.kh, a.kw}, grad_output.options());
  if (gw.numel() == 0 || a.n == 0) return gw;
  const at::Tensor go = grad_output.contiguous();
  const at::Tensor x = input.contiguous();
  const BlockRows r = make_block_rows(build_row_plan(mask, a.mask), a.mask.mo, a.mask.bo, a.cout,
                                      a.mask.bi, a.cin_g, a);
  AT_DISPATCH_FLOATING_TYPES(go.scalar_type(), "rskcnn_block_rows_grad_weight", [&] {
    grad_weight_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), r, a,
                                 static_cast<scalar_t>(scale), go.options(), gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

}  // namespace rskcnn::cpu
