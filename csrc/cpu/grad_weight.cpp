// grad-weight as a sampled dense-dense product (SDDMM): only the kept entries of
// grad_output x input_columns^T are computed. The output pixels are cut into a fixed
// number of slices, each with its own partial sums, reduced in slice order at the end:
// the result is the same for any thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../conv_args.h"
#include "../op_kernels.h"
#include "block_lists.h"
#include "block_rows.h"
#include "checks.h"
#include "columns.h"
#include "compacted.h"
#include "row_groups.h"
#include "sparse_rows.h"

namespace rskcnn::cpu {
namespace {

// Slices of the pixel reduction: the parallelism of this pass, and the number of partial
// copies of the kept weights it holds. Fixed, not the thread count, so results never
// depend on torch.set_num_threads.
constexpr int64_t kSlices = 4;

template <int Chunk, typename T>
void grad_weight_kernel(const T* go, const T* x, const BlockLists& plan, const ConvArgs& a, T scale, T* gw) {
  const int64_t cout_g = a.cout / a.groups;
  const int64_t filter_size = a.cin_g * a.kh * a.kw;
  const int64_t pixels = a.n * a.oh * a.ow;
  const int64_t chunks = ceil_div(pixels, Chunk);
  const int64_t slices = std::min(kSlices, chunks);
  for (int64_t group = 0; group < a.groups; ++group) {
    const int64_t o_first = group * cout_g;
    const SparseRows rows = output_channel_rows(plan, a, group);
    std::vector<T> partial(slices * rows.num_values, T(0));
    at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> offsets;
      std::vector<T> cols(filter_size * Chunk), go_rows(cout_g * Chunk);
      for (int64_t slice = begin; slice < end; ++slice) {
        T* dots = partial.data() + slice * rows.num_values;
        for (int64_t chunk = slice * chunks / slices; chunk < (slice + 1) * chunks / slices; ++chunk) {
          const int64_t q0 = chunk * Chunk;
          gather_input_columns<Chunk>(x, a, group, q0, cols.data(), offsets);
          gather_rows<Chunk>(go, a.cout, a.oh * a.ow, pixels, o_first, cout_g, q0, go_rows.data());
          correlate_chunk<Chunk>(rows, go_rows.data(), cols.data(), dots);
        }
      }
    });
    for (const RowGroup& g : rows.groups) {
      const int32_t* list = rows.columns.data() + g.list_offset;
      for (int32_t r = 0; r < g.num_rows; ++r) {
        const int64_t slot = g.first_slot + r;
        T* filter = gw + (o_first + rows.row_ids[slot]) * filter_size;
        for (int64_t e = 0; e < g.nnz; ++e) {
          T sum = 0;
          for (int64_t t = 0; t < slices; ++t) sum += partial[t * rows.num_values + rows.value_offset[slot] + e];
          filter[list[e]] = sum * scale;
        }
      }
    }
  }
}

}  // namespace

at::Tensor masked_conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mask, at::IntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     at::IntArrayRef block, double scale) {
  check_op_tensors(grad_output, "grad_output", input, "input", mask);
  const ConvArgs a = make_conv_args(input.sizes(), weight_size, mask, stride, padding, dilation,
                                    groups, block);
  check_grad_output_shape(grad_output, a);

  if (spans_input_channels(a) && a.n > 0) {
    return compacted_grad_weight(grad_output, input, mask, a, scale);
  }
  if (block_rows_fit(a)) {
    return block_rows_grad_weight(grad_output, input, mask, a, scale);
  }
  at::Tensor grad_weight = at::zeros(weight_size, grad_output.options());
  if (grad_weight.numel() > 0 && a.n > 0) {
    const at::Tensor go = grad_output.contiguous();
    const at::Tensor x = input.contiguous();
    const BlockLists plan = build_row_plan(mask, a.mask);
    const int64_t column_bytes = a.cin_g * a.kh * a.kw * grad_output.element_size();
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "rskcnn_masked_conv2d_grad_weight_cpu", [&] {
      const auto run = [&](auto chunk) {
        grad_weight_kernel<decltype(chunk)::value, scalar_t>(
            go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), plan, a,
            static_cast<scalar_t>(scale), grad_weight.mutable_data_ptr<scalar_t>());
      };
      if (column_bytes * 256 <= kDotChunkBytes) {
        run(std::integral_constant<int, 256>{});
      } else if (column_bytes * 128 <= kDotChunkBytes) {
        run(std::integral_constant<int, 128>{});
      } else {
        run(std::integral_constant<int, 64>{});
      }
    });
  }
  return grad_weight;
}

}  // namespace rskcnn::cpu
