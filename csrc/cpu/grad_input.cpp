// grad_input[n, c] = sum over kept weights w[o, c, kh, kw] of w * (grad_output[n, o]
// scattered back to the input positions it read). Tasks own an input plane, so
// the scatter needs no atomics; the column plan lists what reaches it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv_args.h"
#include "checks.h"
#include "kernels.h"
#include "plan.h"

namespace rskcnn::cpu {
namespace {

template <typename scalar_t>
void grad_input_kernel(const scalar_t* go, const scalar_t* w, const Plan& plan,
                       const ConvArgs& a, scalar_t scale, scalar_t* gi) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t in_plane = a.h * a.w;
  const int64_t out_plane = a.oh * a.ow;
  const int64_t work = cout_g * a.kh * a.kw * out_plane;

  at::parallel_for(0, a.n * a.cin, grain_for(work), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> acc(in_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / a.cin;
      const int64_t c = task % a.cin;
      const int64_t group = c / a.cin_g;
      const int64_t i = c % a.cin_g;
      const int64_t o_first = group * cout_g;
      const int64_t o_last = o_first + cout_g;
      std::fill(acc.begin(), acc.end(), scalar_t(0));

      const int64_t ib = i / g.bi;
      const int32_t* kept = plan.row(ib);
      for (int32_t t = 0, count = plan.count(ib); t < count; ++t) {
        const BlockCoord cell = decode_entry(kept[t], g);
        const IndexRange orange = block_range(cell.outer, g.bo, a.cout);
        if (orange.end <= o_first) continue;
        if (orange.begin >= o_last) break;  // entries are ordered by output block
        const IndexRange hr = block_range(cell.hb, g.bh, a.kh);
        const IndexRange wr = block_range(cell.wb, g.bw, a.kw);
        for (int64_t o = std::max(orange.begin, o_first); o < std::min(orange.end, o_last); ++o) {
          const scalar_t* go_plane = go + (n * a.cout + o) * out_plane;
          const scalar_t* w_row = w + (o * a.cin_g + i) * a.kh * a.kw;
          for (int64_t kh = hr.begin; kh < hr.end; ++kh) {
            const int64_t row_offset = kh * a.dh - a.ph;
            const IndexRange rows = valid_outputs(row_offset, a.sh, a.h, a.oh);
            for (int64_t kw = wr.begin; kw < wr.end; ++kw) {
              const scalar_t wv = w_row[kh * a.kw + kw] * scale;
              const int64_t col_offset = kw * a.dw - a.pw;
              const IndexRange cols = valid_outputs(col_offset, a.sw, a.w, a.ow);
              for (int64_t oh = rows.begin; oh < rows.end; ++oh) {
                const int64_t gi_base = (oh * a.sh + row_offset) * a.w + col_offset;
                const scalar_t* gor = go_plane + oh * a.ow;
                scalar_t* gi_plane = acc.data();
                if (a.sw == 1) {
                  for (int64_t ow = cols.begin; ow < cols.end; ++ow) gi_plane[gi_base + ow] += wv * gor[ow];
                } else {
                  for (int64_t ow = cols.begin; ow < cols.end; ++ow)
                    gi_plane[gi_base + ow * a.sw] += wv * gor[ow];
                }
              }
            }
          }
        }
      }
      std::copy(acc.begin(), acc.end(), gi + task * in_plane);
    }
  });
}

}  // namespace

at::Tensor masked_conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const at::Tensor& mask, at::IntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    at::IntArrayRef block, double scale) {
  check_cpu_float_tensor(grad_output, "grad_output");
  check_same_device_dtype(grad_output, weight, "weight", "grad_output");
  check_cpu_mask(mask);
  const ConvArgs a = make_conv_args(input_size, weight.sizes(), mask, stride, padding, dilation,
                                    groups, block);
  const std::vector<int64_t> expected{a.n, a.cout, a.oh, a.ow};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), "rskcnn: grad_output must have shape ",
              at::IntArrayRef(expected), ", got ", grad_output.sizes());

  at::Tensor grad_input = at::empty(input_size, grad_output.options());
  if (grad_input.numel() > 0) {
    const at::Tensor go = grad_output.contiguous();
    const at::Tensor w = weight.contiguous();
    const Plan plan = build_column_plan(mask, a.mask);
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "rskcnn_masked_conv2d_grad_input_cpu", [&] {
      grad_input_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  plan, a, static_cast<scalar_t>(scale),
                                  grad_input.mutable_data_ptr<scalar_t>());
    });
  }
  return grad_input.contiguous(follow_memory_format(grad_output));
}

}  // namespace rskcnn::cpu
