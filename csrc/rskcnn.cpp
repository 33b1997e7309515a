// The op contract. Every backend registers kernels for these schemas in its own
// file (csrc/cpu, csrc/cuda); fake kernels and autograd live in rskcnn/ops.py.
#include <Python.h>
#include <torch/library.h>

// An empty Python module: importing rskcnn._C runs the static registrations below.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "rskcnn's registered torch ops", -1,
      nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(rskcnn, m) {
  // y = conv2d(input, weight * expand(mask, block) * scale, bias)
  m.def(
      "masked_conv2d(Tensor input, Tensor weight, Tensor mask, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, int[4] block, "
      "float scale) -> Tensor");
  // d(loss)/d(input); entries of weight outside the mask are never read.
  m.def(
      "masked_conv2d_grad_input(Tensor grad_output, Tensor weight, Tensor mask, "
      "SymInt[4] input_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups, int[4] block, float scale) -> Tensor");
  // d(loss)/d(weight); entries outside the mask are exactly zero and never computed.
  m.def(
      "masked_conv2d_grad_weight(Tensor grad_output, Tensor input, Tensor mask, "
      "int[4] weight_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups, int[4] block, float scale) -> Tensor");
  // The CUDA kernels' tile plans (csrc/tile_plan.h), exposed so that tests can check
  // them on any device: (order, out_entries, out_counts, in_entries, in_counts).
  m.def(
      "plan_tiles(Tensor mask, int[4] weight_size, int groups, int[4] block, "
      "int[4] tile_shape, bool reorder) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
