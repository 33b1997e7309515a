#include <torch/library.h>

#include "../op_kernels.h"

TORCH_LIBRARY_IMPL(rskcnn, CUDA, m) {
  m.impl("masked_conv2d", &rskcnn::cuda::masked_conv2d);
  m.impl("masked_conv2d_grad_input", &rskcnn::cuda::masked_conv2d_grad_input);
  m.impl("masked_conv2d_grad_weight", &rskcnn::cuda::masked_conv2d_grad_weight);
  m.impl("plan_tiles", &rskcnn::cuda::plan_tiles);
}
