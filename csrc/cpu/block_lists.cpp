#include "block_lists.h"

#include <limits>

namespace rskcnn::cpu {
namespace {

template <typename PlanOne>
BlockLists build_plan(const at::Tensor& mask, int64_t rows, int64_t capacity, PlanOne plan_one) {
  TORCH_CHECK(capacity < std::numeric_limits<int32_t>::max(),
              "rskcnn: a mask row of ", capacity, " blocks overflows the int32 plan entries");
  const at::Tensor mask_c = mask.contiguous();
  BlockLists plan{at::empty({rows, capacity}, mask.options().dtype(at::kInt)),
            at::empty({rows}, mask.options().dtype(at::kInt)), capacity};
  const bool* m = mask_c.const_data_ptr<bool>();
  int32_t* entries = plan.entries.mutable_data_ptr<int32_t>();
  int32_t* counts = plan.counts.mutable_data_ptr<int32_t>();
  at::parallel_for(0, rows, 1 + at::internal::GRAIN_SIZE / (capacity + 1),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) {
                       counts[r] = plan_one(m, r, entries + r * capacity);
                     }
                   });
  return plan;
}

}  // namespace

BlockLists build_row_plan(const at::Tensor& mask, const BlockMaskGeometry& g) {
  return build_plan(mask, g.mo, g.taps_per_block_row(),
                    [&g](const bool* m, int64_t r, int32_t* out) { return plan_row(m, g, r, out); });
}

BlockLists build_column_plan(const at::Tensor& mask, const BlockMaskGeometry& g) {
  return build_plan(mask, g.mi, g.taps_per_block_column(), [&g](const bool* m, int64_t r, int32_t* out) {
    return plan_column(m, g, r, out);
  });
}

}  // namespace rskcnn::cpu
