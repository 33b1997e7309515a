// CPU kernels of the rskcnn ops. Each walks a plan of kept blocks, so weights
// outside the mask are never loaded or multiplied.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace rskcnn::cpu {

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

// The CUDA kernels' tile plans (csrc/tile_plan.h) built on the CPU: (order, out_entries,
// out_counts, in_entries, in_counts).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> plan_tiles(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder);

}  // namespace rskcnn::cpu
