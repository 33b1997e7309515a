// Forward as a sparse product: for each chunk of output pixels, the kept weights
// of each filter (sparse rows) multiply the input columns they read (an im2col of
// the chunk only). Weights outside the mask are not in the rows, so they are never
// loaded or multiplied.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../conv_args.h"
#include "../op_kernels.h"
#include "block_lists.h"
#include "checks.h"
#include "columns.h"
#include "compacted.h"
#include "row_panels.h"
#include "sparse_rows.h"

namespace rskcnn::cpu {
namespace {

template <typename T>
void forward_kernel(const T* x, const T* w, const T* bias, const BlockLists& plan, const ConvArgs& a,
                    T scale, T* y) {
  const int64_t cout_g = a.cout / a.groups;
  const int64_t filter_size = a.cin_g * a.kh * a.kw;
  const int64_t pixels = a.n * a.oh * a.ow;
  const int64_t chunks = ceil_div(pixels, kProductChunk);
  for (int64_t group = 0; group < a.groups; ++group) {
    const int64_t o_first = group * cout_g;
    const SparseRows rows = output_channel_rows(plan, a, group);
    const std::vector<T> values = gather_kept_values(
        rows, w, scale, [&](int64_t o, int32_t k) { return (o_first + o) * filter_size + k; });
    const RowPanels<T> panels = make_row_panels(rows, values);
    at::parallel_for(0, chunks, grain_for((rows.num_values + filter_size) * kProductChunk),
                     [&](int64_t begin, int64_t end) {
      std::vector<int64_t> offsets;
      std::vector<T> cols(filter_size * kProductChunk), out(cout_g * kProductChunk);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t q0 = chunk * kProductChunk;
        gather_input_columns<kProductChunk>(x, a, group, q0, cols.data(), offsets);
        multiply_chunk_panels<kProductChunk>(rows, panels, values.data(), cols.data(), out.data());
        scatter_rows<kProductChunk>(out.data(), a.cout, a.oh * a.ow, pixels, o_first, cout_g, q0, bias, y);
      }
    });
  }
}

}  // namespace

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         at::IntArrayRef block, double scale) {
  check_op_tensors(input, "input", weight, "weight", mask);
  const ConvArgs a = make_conv_args(input.sizes(), weight.sizes(), mask, stride, padding,
                                    dilation, groups, block);
  const at::Tensor bias_c = checked_bias(bias, input, a.cout);

  at::Tensor output;
  if (spans_input_channels(a) && a.n > 0) {
    output = compacted_forward(input, weight, mask, bias, a, scale);
  } else {
    output = at::empty({a.n, a.cout, a.oh, a.ow}, input.options());
    if (output.numel() > 0) {
      const at::Tensor x = input.contiguous();
      const at::Tensor w = weight.contiguous();
      const BlockLists plan = build_row_plan(mask, a.mask);
      AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rskcnn_masked_conv2d_cpu", [&] {
        forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                 bias_c.defined() ? bias_c.const_data_ptr<scalar_t>() : nullptr,
                                 plan, a, static_cast<scalar_t>(scale),
                                 output.mutable_data_ptr<scalar_t>());
      });
    }
  }
  return output.contiguous(follow_memory_format(input));
}

}  // namespace rskcnn::cpu
