// Masks whose blocks span all input channels of a filter (tap, filter, and block
// with bi >= Cin): each block-cell of taps keeps a set of whole filters, so the
// kept filters can be compacted and handed to dense oneDNN convolutions. Dropped
// filters are never gathered, so never loaded or multiplied.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../conv_args.h"

namespace rskcnn::cpu {

bool spans_input_channels(const ConvArgs& a);

at::Tensor compacted_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                             const std::optional<at::Tensor>& bias, const ConvArgs& a, double scale);

at::Tensor compacted_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                const at::Tensor& mask, const ConvArgs& a, double scale);

at::Tensor compacted_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& mask, const ConvArgs& a, double scale);

}  // namespace rskcnn::cpu
