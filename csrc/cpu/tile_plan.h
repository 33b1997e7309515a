// The CPU build of the CUDA kernels' tile plans (csrc/tile_plan.h).
#pragma once

#include "../tile_plan.h"

namespace rskcnn::cpu {

// Fills `plans` (allocated by allocate_tile_plans on the CPU) from mask (MO, MI, MH, MW).
void build_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g, TilePlans& plans);

}  // namespace rskcnn::cpu
