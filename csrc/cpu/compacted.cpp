#include "compacted.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../block_mask.h"

namespace rskcnn::cpu {
namespace {

// One cell of the mask's (hb, wb) grid: a window of taps and the filters that keep it.
struct Cell {
  IndexRange rows, cols;  // taps kh in rows, kw in cols
  at::Tensor kept;        // int64 indices of the kept filters
  bool whole_kernel;
};

std::vector<Cell> kept_cells(const at::Tensor& mask, const ConvArgs& a) {
  const BlockMaskGeometry& g = a.mask;
  const at::Tensor m = mask.contiguous();
  const bool* bits = m.const_data_ptr<bool>();
  std::vector<Cell> cells;
  for (int64_t hb = 0; hb < g.mh; ++hb) {
    for (int64_t wb = 0; wb < g.mw; ++wb) {
      std::vector<int64_t> kept;
      for (int64_t o = 0; o < a.cout; ++o) {
        if (bits[((o / g.bo) * g.mi) * g.mh * g.mw + hb * g.mw + wb]) kept.push_back(o);
      }
      if (kept.empty()) continue;
      const IndexRange rows = block_range(hb, g.bh, a.kh), cols = block_range(wb, g.bw, a.kw);
      cells.push_back(Cell{rows, cols, at::tensor(kept, mask.options().dtype(at::kLong)),
                           rows.end - rows.begin == a.kh && cols.end - cols.begin == a.kw});
    }
  }
  return cells;
}

// Kept filters of a cell, restricted to its taps and scaled: (kept, Cin, rows, cols).
// Sliced before the gather, so that a one-tap cell copies 1/(KH*KW) of each filter.
at::Tensor cell_weight(const at::Tensor& weight, const Cell& c, double scale) {
  at::Tensor w = weight.slice(2, c.rows.begin, c.rows.end)
                     .slice(3, c.cols.begin, c.cols.end)
                     .index_select(0, c.kept);
  return scale == 1.0 ? w.contiguous() : w.mul(scale);
}

// Extent of the padded-input window a cell's taps read, and where it starts.
int64_t window_extent(int64_t out, int64_t stride, int64_t taps, int64_t dilation) {
  return (out - 1) * stride + dilation * (taps - 1) + 1;
}

at::Tensor cell_window(const at::Tensor& padded, const Cell& c, const ConvArgs& a) {
  return padded
      .slice(2, c.rows.begin * a.dh,
             c.rows.begin * a.dh + window_extent(a.oh, a.sh, c.rows.end - c.rows.begin, a.dh))
      .slice(3, c.cols.begin * a.dw,
             c.cols.begin * a.dw + window_extent(a.ow, a.sw, c.cols.end - c.cols.begin, a.dw));
}

// out (N, Cout, P) from y (N, kept, P), the planes of the kept filters: one pass that
// writes every element, scale * y's plane + bias for a kept filter, the bias (or 0) otherwise.
template <typename T>
void scatter_kept_planes(const T* y, const int64_t* kept, int64_t num_kept, const T* bias, T scale,
                         int64_t n, int64_t cout, int64_t plane, T* out) {
  std::vector<int64_t> rank(cout, -1);
  for (int64_t r = 0; r < num_kept; ++r) rank[kept[r]] = r;
  at::parallel_for(0, n * cout, std::max<int64_t>(1, 32768 / std::max<int64_t>(plane, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t image = q / cout, o = q % cout;
      const T b = bias == nullptr ? T(0) : bias[o];
      T* dst = out + q * plane;
      if (rank[o] < 0) {
        std::fill(dst, dst + plane, b);
        continue;
      }
      const T* src = y + (image * num_kept + rank[o]) * plane;
      for (int64_t i = 0; i < plane; ++i) dst[i] = scale * src[i] + b;
    }
  });
}

// y (N, kept, ...) scattered to `shape` (N, Cout, ...) along dim 1, as scatter_kept_planes.
at::Tensor scatter_kept_filters(const at::Tensor& y, const at::Tensor& kept, const at::Tensor& bias,
                                double scale, at::IntArrayRef shape) {
  at::Tensor out = at::empty(shape, y.options());
  const at::Tensor yc = y.contiguous();
  const int64_t plane = out.numel() / std::max<int64_t>(shape[0] * shape[1], 1);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "rskcnn_scatter_kept_filters", [&] {
    scatter_kept_planes<scalar_t>(yc.const_data_ptr<scalar_t>(), kept.const_data_ptr<int64_t>(),
                                  kept.size(0), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                                  static_cast<scalar_t>(scale), shape[0], shape[1], plane,
                                  out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

// The rows and columns at the end of the input that no output reads: a transposed
// convolution needs them as output_padding to give back the input's size.
std::vector<int64_t> unread_tail(const ConvArgs& a) {
  auto tail = [](int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
    return in - ((out - 1) * s - 2 * p + d * (k - 1) + 1);
  };
  return {tail(a.h, a.oh, a.kh, a.sh, a.ph, a.dh), tail(a.w, a.ow, a.kw, a.sw, a.pw, a.dw)};
}

std::vector<int64_t> stride_of(const ConvArgs& a) { return {a.sh, a.sw}; }
std::vector<int64_t> padding_of(const ConvArgs& a) { return {a.ph, a.pw}; }
std::vector<int64_t> dilation_of(const ConvArgs& a) { return {a.dh, a.dw}; }

}  // namespace

bool spans_input_channels(const ConvArgs& a) { return a.groups == 1 && a.mask.bi >= a.cin_g; }

at::Tensor compacted_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                             const std::optional<at::Tensor>& bias, const ConvArgs& a, double scale) {
  const std::vector<Cell> cells = kept_cells(mask, a);
  const at::Tensor x = input.contiguous();
  if (cells.size() == 1 && cells[0].whole_kernel) {
    const at::Tensor y = at::convolution(x, cell_weight(weight, cells[0], scale), std::nullopt,
                                         stride_of(a), padding_of(a), dilation_of(a), false, {0, 0}, 1);
    return scatter_kept_filters(y, cells[0].kept, bias.has_value() ? bias->contiguous() : at::Tensor(),
                                1.0, {a.n, a.cout, a.oh, a.ow});
  }
  at::Tensor out = at::zeros({a.n, a.cout, a.oh, a.ow}, input.options());
  if (bias.has_value()) out.add_(bias->view({1, a.cout, 1, 1}));
  if (cells.empty()) return out;
  const at::Tensor padded = at::constant_pad_nd(x, {a.pw, a.pw, a.ph, a.ph});
  for (const Cell& c : cells) {
    const at::Tensor y = at::convolution(cell_window(padded, c, a), cell_weight(weight, c, scale),
                                         std::nullopt, stride_of(a), {0, 0}, dilation_of(a), false,
                                         {0, 0}, 1);
    out.index_add_(1, c.kept, y);
  }
  return out;
}

at::Tensor compacted_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                const at::Tensor& mask, const ConvArgs& a, double scale) {
  const std::vector<Cell> cells = kept_cells(mask, a);
  const at::Tensor go = grad_output.contiguous();
  if (cells.size() == 1 && cells[0].whole_kernel) {
    return at::convolution(go.index_select(1, cells[0].kept), cell_weight(weight, cells[0], scale),
                           std::nullopt, stride_of(a), padding_of(a), dilation_of(a), true,
                           unread_tail(a), 1);
  }
  // Rows of the padded input that no output reads get no gradient (output_padding).
  const int64_t hp = a.h + 2 * a.ph, wp = a.w + 2 * a.pw;
  at::Tensor padded = at::zeros({a.n, a.cin, hp, wp}, grad_output.options());
  for (const Cell& c : cells) {
    at::Tensor window = cell_window(padded, c, a);
    const at::Tensor g = at::convolution(go.index_select(1, c.kept), cell_weight(weight, c, scale),
                                         std::nullopt, stride_of(a), {0, 0}, dilation_of(a), true,
                                         {0, 0}, 1);
    window.add_(g);
  }
  return padded.slice(2, a.ph, a.ph + a.h).slice(3, a.pw, a.pw + a.w).contiguous();
}

at::Tensor compacted_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& mask, const ConvArgs& a, double scale) {
  const std::vector<Cell> cells = kept_cells(mask, a);
  const at::Tensor go = grad_output.contiguous();
  const at::Tensor x = input.contiguous();
  if (cells.size() == 1 && cells[0].whole_kernel) {
    const Cell& c = cells[0];
    const at::Tensor shape_only = at::empty({c.kept.size(0), a.cin, a.kh, a.kw}, x.options());
    const at::Tensor gw = std::get<1>(at::convolution_backward(
        go.index_select(1, c.kept), x, shape_only, std::nullopt, stride_of(a), padding_of(a),
        dilation_of(a), false, {0, 0}, 1, {false, true, false}));
    return scatter_kept_filters(gw.unsqueeze(0), c.kept, at::Tensor(), scale, {1, a.cout, a.cin_g, a.kh, a.kw})
        .squeeze(0);
  }
  at::Tensor grad_weight = at::zeros({a.cout, a.cin_g, a.kh, a.kw}, grad_output.options());
  if (cells.empty()) return grad_weight;
  const at::Tensor padded = at::constant_pad_nd(x, {a.pw, a.pw, a.ph, a.ph});
  for (const Cell& c : cells) {
    const int64_t taps_h = c.rows.end - c.rows.begin, taps_w = c.cols.end - c.cols.begin;
    const at::Tensor shape_only = at::empty({c.kept.size(0), a.cin, taps_h, taps_w}, x.options());
    const at::Tensor gw = std::get<1>(at::convolution_backward(
        go.index_select(1, c.kept), cell_window(padded, c, a), shape_only, std::nullopt,
        stride_of(a), {0, 0}, dilation_of(a), false, {0, 0}, 1, {false, true, false}));
    grad_weight.slice(2, c.rows.begin, c.rows.end)
        .slice(3, c.cols.begin, c.cols.end)
        .index_copy_(0, c.kept, scale == 1.0 ? gw : gw.mul(scale));
  }
  return grad_weight;
}

}  // namespace rskcnn::cpu
