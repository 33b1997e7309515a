// Tensor checks shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>

#include "../conv_args.h"

namespace rskcnn::cpu {

inline void check_cpu_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "rskcnn cpu backend: ", name, " must be on the CPU, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "rskcnn cpu backend: ", name, " must be float32 or float64, got ", t.scalar_type());
}

inline void check_cpu_mask(const at::Tensor& mask) {
  TORCH_CHECK(mask.device().is_cpu(), "rskcnn cpu backend: mask must be on the CPU, got ",
              mask.device());
}

// The checks every op makes first, in this order: `data` (input or grad_output) is a CPU
// float tensor, `other` (weight or input) has its device and dtype, and the mask is on the
// CPU.
inline void check_op_tensors(const at::Tensor& data, const char* data_name, const at::Tensor& other,
                             const char* other_name, const at::Tensor& mask) {
  check_cpu_float_tensor(data, data_name);
  check_same_device_dtype(data, other, other_name, data_name);
  check_cpu_mask(mask);
}

// Work per task (in multiply-adds) -> a grain that gives each thread enough to do.
inline int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_task));
}

}  // namespace rskcnn::cpu
