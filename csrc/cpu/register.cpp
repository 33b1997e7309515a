#include <torch/library.h>

#include "../op_kernels.h"

TORCH_LIBRARY_IMPL(rskcnn, CPU, m) {
  m.impl("masked_conv2d", &rskcnn::cpu::masked_conv2d);
  m.impl("masked_conv2d_grad_input", &rskcnn::cpu::masked_conv2d_grad_input);
  m.impl("masked_conv2d_grad_weight", &rskcnn::cpu::masked_conv2d_grad_weight);
  m.impl("plan_tiles", &rskcnn::cpu::plan_tiles);
}
