// Block masks with wide blocks (bo or bi >= kMinBlockRows), groups == 1: the channels of
// one block row share one list of kept columns, so each pass is one dense BLAS GEMM per
// block row and chunk of pixels, on the kept weights (compacted once per call) and the
// kept rows of the chunk's im2col (gathered). Masked weights are never read.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../conv_args.h"

namespace rskcnn::cpu {

// Whether forward / grad-weight (block rows of bo output channels) and grad-input (block
// columns of bi input channels) take this path.
bool block_rows_fit_output(const ConvArgs& a);
bool block_rows_fit_input(const ConvArgs& a);

// x contiguous, bias contiguous or undefined; a.n > 0.
at::Tensor block_rows_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                              const at::Tensor& bias, const ConvArgs& a, double scale);

at::Tensor block_rows_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 const at::Tensor& mask, const ConvArgs& a, double scale);

at::Tensor block_rows_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& mask, const ConvArgs& a, double scale);

}  // namespace rskcnn::cpu
