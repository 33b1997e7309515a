// The Python module rskcnn._C. Importing it runs the static kernel registrations of
// csrc/cpu/register.cpp and csrc/cuda/register.cpp (TORCH_LIBRARY_IMPL). The schemas those
// kernels implement are defined in Python, in rskcnn/ops/schemas.py (the op contract's one
// home), by rskcnn/ops/cpp.py right after this module loads; the dispatcher then checks each
// kernel's C++ signature (csrc/op_kernels.h) against its schema.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "rskcnn's kernels for the torch ops of rskcnn/ops", -1,
      nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}
