// The signatures of the op kernels (the schemas are in csrc/rskcnn.cpp), written once.
// Each backend declares its kernels with these function types at the bottom of this
// file, defines them with the same parameter lists, and registers them in its
// register.cpp; a definition whose signature drifted is an overload, and taking its
// address there no longer compiles.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace rskcnn {

// input (N, Cin, H, W), weight (Cout, Cin/groups, KH, KW) -> (N, Cout, OH, OW)
using MaskedConv2dFn = at::Tensor(const at::Tensor& input, const at::Tensor& weight,
                                  const at::Tensor& mask, const std::optional<at::Tensor>& bias,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t groups, at::IntArrayRef block,
                                  double scale);

// grad_output (N, Cout, OH, OW) -> grad_input of shape input_size
using MaskedConv2dGradInputFn = at::Tensor(const at::Tensor& grad_output, const at::Tensor& weight,
                                           const at::Tensor& mask, at::IntArrayRef input_size,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           at::IntArrayRef dilation, int64_t groups,
                                           at::IntArrayRef block, double scale);

// grad_output (N, Cout, OH, OW), input (N, Cin, H, W) -> grad_weight of shape weight_size
using MaskedConv2dGradWeightFn = at::Tensor(const at::Tensor& grad_output, const at::Tensor& input,
                                            const at::Tensor& mask, at::IntArrayRef weight_size,
                                            at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, int64_t groups,
                                            at::IntArrayRef block, double scale);

// The CUDA kernels' tile plans (csrc/tile_steps.h) for a mask on the backend's device:
// (order, out_entries, out_counts, in_entries, in_counts).
using PlanTilesFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder);

// `MaskedConv2dFn masked_conv2d;` declares a function of that type.
namespace cpu {  // csrc/cpu: forward.cpp, grad_input.cpp, grad_weight.cpp, tile_steps.cpp
MaskedConv2dFn masked_conv2d;
MaskedConv2dGradInputFn masked_conv2d_grad_input;
MaskedConv2dGradWeightFn masked_conv2d_grad_weight;
PlanTilesFn plan_tiles;
}  // namespace cpu

namespace cuda {  // csrc/cuda: conv.cpp, tile_steps.cu (compiled only in a CUDA build)
MaskedConv2dFn masked_conv2d;
MaskedConv2dGradInputFn masked_conv2d_grad_input;
MaskedConv2dGradWeightFn masked_conv2d_grad_weight;
PlanTilesFn plan_tiles;
}  // namespace cuda

}  // namespace rskcnn
