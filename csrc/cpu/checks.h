// Tensor checks shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>

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

// Work per task (in multiply-adds) -> a grain that gives each thread enough to do.
inline int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, work_per_task));
}

}  // namespace rskcnn::cpu
