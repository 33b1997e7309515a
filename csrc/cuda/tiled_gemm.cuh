// The K loop shared by the tiled kernels: two shared-memory stages, the copies of stage
// it + 1 in flight while stage it is multiplied.
#pragma once

#include "tiled_loads.cuh"
#include "tiled_mma.cuh"

namespace rskcnn::cuda::tiled {

// Runs `iters` stages through `core`. load_stage(stage, it) fills L::a(smem, stage) and
// L::b(smem, stage) with the operands of iteration `it` (cp.async or plain stores).
// On return every copy has landed and the operand buffers may be reused (for C).
template <class L, class Core, class LoadStage>
__device__ __forceinline__ void gemm_mainloop(Core& core, unsigned char* smem, int iters,
                                              const LoadStage& load_stage) {
  if (iters > 0) load_stage(0, 0);
  cp_async_commit();
  for (int it = 0; it < iters; ++it) {
    if (it + 1 < iters) load_stage((it + 1) & 1, it + 1);
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning stage it
    cp_async_wait<1>();
    __syncthreads();  // stage it is complete for every thread, not just this one
    core.compute(L::a(smem, it & 1), L::b(smem, it & 1));
    __syncthreads();  // iteration it + 1 loads into this stage
  }
  cp_async_wait<0>();
}

}  // namespace rskcnn::cuda::tiled
