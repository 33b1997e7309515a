// grad_weight[o, i, kh, kw] = scale * sum over (n, oh, ow) of grad_output[n, o, oh, ow]
// times the input value that weight met. Only kept entries are computed; the rest
// stay exactly zero. A task owns one filter o, so its grad_output plane stays in
// cache while every kept weight of the filter reduces against it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv_args.h"
#include "checks.h"
#include "kernels.h"
#include "plan.h"

namespace rskcnn::cpu {
namespace {

// sum over rows x cols of go[oh * ow_extent + ow] * x[x_base(oh) + ow * sw]
template <typename scalar_t>
scalar_t correlate(const scalar_t* go_plane, const scalar_t* x_plane, const ConvArgs& a,
                   int64_t row_offset, int64_t col_offset, IndexRange rows, IndexRange cols) {
  constexpr int kLanes = 8;  // independent partial sums let the compiler vectorise
  scalar_t lanes[kLanes] = {};
  scalar_t tail = 0;
  const int64_t width = cols.end - cols.begin;
  for (int64_t oh = rows.begin; oh < rows.end; ++oh) {
    const scalar_t* gor = go_plane + oh * a.ow + cols.begin;
    const int64_t x_base = (oh * a.sh + row_offset) * a.w + col_offset + cols.begin * a.sw;
    int64_t j = 0;
    if (a.sw == 1) {
      const scalar_t* xr = x_plane + x_base;
      for (; j + kLanes <= width; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) lanes[l] += gor[j + l] * xr[j + l];
      }
    }
    for (; j < width; ++j) tail += gor[j] * x_plane[x_base + j * a.sw];
  }
  for (int l = 0; l < kLanes; ++l) tail += lanes[l];
  return tail;
}

template <typename scalar_t>
void grad_weight_kernel(const scalar_t* go, const scalar_t* x, const Plan& plan,
                        const ConvArgs& a, scalar_t scale, scalar_t* gw) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t in_plane = a.h * a.w;
  const int64_t out_plane = a.oh * a.ow;
  const int64_t filter_size = a.cin_g * a.kh * a.kw;
  const int64_t work = a.n * filter_size * out_plane;

  at::parallel_for(0, a.cout, grain_for(work), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> acc;
    std::vector<int64_t> kept_offsets;  // (i * KH + kh) * KW + kw of each kept weight
    for (int64_t o = begin; o < end; ++o) {
      const int64_t ob = o / g.bo;
      const int32_t* kept = plan.row(ob);
      const int32_t count = plan.count(ob);
      kept_offsets.clear();
      for (int32_t t = 0; t < count; ++t) {
        const BlockCoord c = decode_entry(kept[t], g);
        const IndexRange ir = block_range(c.outer, g.bi, a.cin_g);
        const IndexRange hr = block_range(c.hb, g.bh, a.kh);
        const IndexRange wr = block_range(c.wb, g.bw, a.kw);
        for (int64_t i = ir.begin; i < ir.end; ++i)
          for (int64_t kh = hr.begin; kh < hr.end; ++kh)
            for (int64_t kw = wr.begin; kw < wr.end; ++kw)
              kept_offsets.push_back((i * a.kh + kh) * a.kw + kw);
      }
      acc.assign(kept_offsets.size(), scalar_t(0));

      const int64_t group = o / cout_g;
      for (int64_t n = 0; n < a.n; ++n) {
        const scalar_t* go_plane = go + (n * a.cout + o) * out_plane;
        const scalar_t* x_group = x + (n * a.cin + group * a.cin_g) * in_plane;
        for (size_t e = 0; e < kept_offsets.size(); ++e) {
          const int64_t off = kept_offsets[e];
          const int64_t i = off / (a.kh * a.kw);
          const int64_t kh = (off / a.kw) % a.kh;
          const int64_t kw = off % a.kw;
          const int64_t row_offset = kh * a.dh - a.ph;
          const int64_t col_offset = kw * a.dw - a.pw;
          acc[e] += correlate(go_plane, x_group + i * in_plane, a, row_offset, col_offset,
                              valid_outputs(row_offset, a.sh, a.h, a.oh),
                              valid_outputs(col_offset, a.sw, a.w, a.ow));
        }
      }
      scalar_t* gw_filter = gw + o * filter_size;
      for (size_t e = 0; e < kept_offsets.size(); ++e) gw_filter[kept_offsets[e]] = acc[e] * scale;
    }
  });
}

}  // namespace

at::Tensor masked_conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mask, at::IntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     at::IntArrayRef block, double scale) {
  check_cpu_float_tensor(grad_output, "grad_output");
  check_same_device_dtype(grad_output, input, "input", "grad_output");
  check_cpu_mask(mask);
  const ConvArgs a = make_conv_args(input.sizes(), weight_size, mask, stride, padding, dilation,
                                    groups, block);
  const std::vector<int64_t> expected{a.n, a.cout, a.oh, a.ow};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), "rskcnn: grad_output must have shape ",
              at::IntArrayRef(expected), ", got ", grad_output.sizes());

  at::Tensor grad_weight = at::zeros(weight_size, grad_output.options());
  if (grad_weight.numel() > 0 && a.n > 0) {
    const at::Tensor go = grad_output.contiguous();
    const at::Tensor x = input.contiguous();
    const Plan plan = build_row_plan(mask, a.mask);
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "rskcnn_masked_conv2d_grad_weight_cpu", [&] {
      grad_weight_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                   plan, a, static_cast<scalar_t>(scale),
                                   grad_weight.mutable_data_ptr<scalar_t>());
    });
  }
  return grad_weight;
}

}  // namespace rskcnn::cpu
