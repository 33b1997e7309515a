// Direct sparse convolution (after Park et al., ICLR 2017): each kept weight adds
// a scaled, shifted input plane to one output plane.
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
void forward_kernel(const scalar_t* x, const scalar_t* w, const scalar_t* bias,
                    const Plan& plan, const ConvArgs& a, scalar_t scale, scalar_t* y) {
  const BlockMaskGeometry& g = a.mask;
  const int64_t cout_g = a.cout / a.groups;
  const int64_t in_plane = a.h * a.w;
  const int64_t out_plane = a.oh * a.ow;
  const int64_t work = a.cin_g * a.kh * a.kw * out_plane;

  at::parallel_for(0, a.n * a.cout, grain_for(work), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> acc(out_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / a.cout;
      const int64_t o = task % a.cout;
      const scalar_t* x_group = x + (n * a.cin + (o / cout_g) * a.cin_g) * in_plane;
      const scalar_t* w_filter = w + o * a.cin_g * a.kh * a.kw;
      std::fill(acc.begin(), acc.end(), bias ? bias[o] : scalar_t(0));

      const int64_t ob = o / g.bo;
      const int32_t* kept = plan.row(ob);
      for (int32_t t = 0, count = plan.count(ob); t < count; ++t) {
        const BlockCoord c = decode_entry(kept[t], g);
        const IndexRange ir = block_range(c.outer, g.bi, a.cin_g);
        const IndexRange hr = block_range(c.hb, g.bh, a.kh);
        const IndexRange wr = block_range(c.wb, g.bw, a.kw);
        for (int64_t i = ir.begin; i < ir.end; ++i) {
          const scalar_t* x_plane = x_group + i * in_plane;
          for (int64_t kh = hr.begin; kh < hr.end; ++kh) {
            const int64_t row_offset = kh * a.dh - a.ph;
            const IndexRange rows = valid_outputs(row_offset, a.sh, a.h, a.oh);
            for (int64_t kw = wr.begin; kw < wr.end; ++kw) {
              const scalar_t wv = w_filter[(i * a.kh + kh) * a.kw + kw] * scale;
              const int64_t col_offset = kw * a.dw - a.pw;
              const IndexRange cols = valid_outputs(col_offset, a.sw, a.w, a.ow);
              for (int64_t oh = rows.begin; oh < rows.end; ++oh) {
                // x index of output column ow is x_base + ow * sw (in range for cols)
                const int64_t x_base = (oh * a.sh + row_offset) * a.w + col_offset;
                scalar_t* yr = acc.data() + oh * a.ow;
                if (a.sw == 1) {
                  for (int64_t ow = cols.begin; ow < cols.end; ++ow) yr[ow] += wv * x_plane[x_base + ow];
                } else {
                  for (int64_t ow = cols.begin; ow < cols.end; ++ow)
                    yr[ow] += wv * x_plane[x_base + ow * a.sw];
                }
              }
            }
          }
        }
      }
      std::copy(acc.begin(), acc.end(), y + task * out_plane);
    }
  });
}

}  // namespace

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         at::IntArrayRef block, double scale) {
  check_cpu_float_tensor(input, "input");
  check_same_device_dtype(input, weight, "weight", "input");
  check_cpu_mask(mask);
  const ConvArgs a = make_conv_args(input.sizes(), weight.sizes(), mask, stride, padding,
                                    dilation, groups, block);
  at::Tensor bias_c;
  if (bias.has_value()) {
    check_same_device_dtype(input, *bias, "bias", "input");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == a.cout, "rskcnn: bias must have shape (",
                a.cout, ",), got ", bias->sizes());
    bias_c = bias->contiguous();
  }

  at::Tensor output = at::empty({a.n, a.cout, a.oh, a.ow}, input.options());
  if (output.numel() > 0) {
    const at::Tensor x = input.contiguous();
    const at::Tensor w = weight.contiguous();
    const Plan plan = build_row_plan(mask, a.mask);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rskcnn_masked_conv2d_cpu", [&] {
      forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                               bias_c.defined() ? bias_c.const_data_ptr<scalar_t>() : nullptr,
                               plan, a, static_cast<scalar_t>(scale),
                               output.mutable_data_ptr<scalar_t>());
    });
  }
  return output.contiguous(follow_memory_format(input));
}

}  // namespace rskcnn::cpu
