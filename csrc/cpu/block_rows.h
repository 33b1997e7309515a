// Grad-weight of block masks with wide block rows (bo >= 8), groups == 1: the bo output
// channels of a block row share one list of kept columns, so per chunk of pixels their
// gradient is one dense BLAS GEMM, grad_output rows times the kept rows of the chunk's
// im2col. Masked entries are never computed and stay exactly 0.
#pragma once

#include <ATen/ATen.h>

#include "../conv_args.h"

namespace rskcnn::cpu {

bool block_rows_fit(const ConvArgs& a);

at::Tensor block_rows_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& mask, const ConvArgs& a, double scale);

}  // namespace rskcnn::cpu
