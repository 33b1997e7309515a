// grad-input as a sparse product over chunks of input pixels: for each input
// channel, the kept weights that touch it (sparse rows built from the column plan)
// multiply the grad_output values that flowed back through them.
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
void grad_input_kernel(const T* go, const T* w, const BlockLists& plan, const ConvArgs& a, T scale, T* gi) {
  const int64_t cout_g = a.cout / a.groups;
  const int64_t taps = a.kh * a.kw;
  const int64_t column_count = cout_g * taps;
  const int64_t pixels = a.n * a.h * a.w;
  const int64_t chunks = ceil_div(pixels, kProductChunk);
  for (int64_t group = 0; group < a.groups; ++group) {
    const int64_t o_first = group * cout_g;
    const int64_t c_first = group * a.cin_g;
    const SparseRows rows = input_channel_rows(plan, a, group);
    // Weight offset of column k = o * taps + tap at input channel 0, computed once rather
    // than with two divisions per kept weight.
    std::vector<int64_t> column_offset(column_count);
    for (int64_t k = 0; k < column_count; ++k) column_offset[k] = (o_first + k / taps) * a.cin_g * taps + k % taps;
    const std::vector<T> values = gather_kept_values(
        rows, w, scale, [&](int64_t c, int32_t k) { return column_offset[k] + c * taps; });
    const RowPanels<T> panels = make_row_panels(rows, values);
    at::parallel_for(0, chunks, grain_for((rows.num_values + column_count) * kProductChunk),
                     [&](int64_t begin, int64_t end) {
      std::vector<int64_t> offsets;
      std::vector<T> cols(column_count * kProductChunk), out(a.cin_g * kProductChunk);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t q0 = chunk * kProductChunk;
        gather_grad_output_columns<kProductChunk>(go, a, group, q0, cols.data(), offsets);
        multiply_chunk_panels<kProductChunk>(rows, panels, values.data(), cols.data(), out.data());
        scatter_rows<kProductChunk>(out.data(), a.cin, a.h * a.w, pixels, c_first, a.cin_g, q0,
                     static_cast<const T*>(nullptr), gi);
      }
    });
  }
}

}  // namespace

at::Tensor masked_conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const at::Tensor& mask, at::IntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    at::IntArrayRef block, double scale) {
  check_op_tensors(grad_output, "grad_output", weight, "weight", mask);
  const ConvArgs a = make_conv_args(input_size, weight.sizes(), mask, stride, padding, dilation,
                                    groups, block);
  check_grad_output_shape(grad_output, a);

  at::Tensor grad_input;
  if (spans_input_channels(a) && a.n > 0) {
    grad_input = compacted_grad_input(grad_output, weight, mask, a, scale);
  } else {
    grad_input = at::empty(input_size, grad_output.options());
    if (grad_input.numel() > 0) {
      const at::Tensor go = grad_output.contiguous();
      const at::Tensor w = weight.contiguous();
      const BlockLists plan = build_column_plan(mask, a.mask);
      AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "rskcnn_masked_conv2d_grad_input_cpu", [&] {
        grad_input_kernel<scalar_t>(go.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                    plan, a, static_cast<scalar_t>(scale),
                                    grad_input.mutable_data_ptr<scalar_t>());
      });
    }
  }
  return grad_input.contiguous(follow_memory_format(grad_output));
}

}  // namespace rskcnn::cpu
