// CUDA implementations of the op contract (csrc/rskcnn.cpp), registered in register.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace rskcnn::cuda {

// input (N, Cin, H, W), weight (Cout, Cin/groups, KH, KW) -> (N, Cout, OH, OW)
at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         at::IntArrayRef block, double scale);

// grad_output (N, Cout, OH, OW) -> grad_input of shape input_size
at::Tensor masked_conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const at::Tensor& mask, at::IntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    at::IntArrayRef block, double scale);

// grad_output (N, Cout, OH, OW), input (N, Cin, H, W) -> grad_weight of shape weight_size
at::Tensor masked_conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mask, at::IntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     at::IntArrayRef block, double scale);

// The tile plans of csrc/tile_plan.h for a CUDA mask: (order, out_entries, out_counts,
// in_entries, in_counts).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> plan_tiles(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder);

}  // namespace rskcnn::cuda
