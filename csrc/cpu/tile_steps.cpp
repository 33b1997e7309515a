// rskcnn::plan_tiles on the CPU: the tile plans of csrc/block_mask.h built by plain
// loops, so the tests check the very functions the CUDA plan kernels call.
#include <tuple>
#include <vector>

#include "../op_kernels.h"
#include "../tile_steps.h"
#include "checks.h"

namespace rskcnn::cpu {
namespace {

// Fills `p` (allocated by allocate_tile_plans on the CPU) from mask (MO, MI, MH, MW).
void build_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g, TilePlans& p) {
  const at::Tensor mask_c = mask.contiguous();
  const bool* m = mask_c.const_data_ptr<bool>();
  const int64_t cout_g = g.cout / p.groups;

  std::vector<uint64_t> keys(g.cout, 0);
  if (p.reorder) {
    for (int64_t o = 0; o < g.cout; ++o) keys[o] = channel_sort_key(m, g, o);
  }
  int32_t* order = p.order.mutable_data_ptr<int32_t>();
  for (int64_t o = 0; o < g.cout; ++o) {
    const int64_t begin = o / cout_g * cout_g;
    order[begin + channel_rank(keys.data(), begin, cout_g, o)] = static_cast<int32_t>(o);
  }

  int32_t* out_entries = p.out_entries.mutable_data_ptr<int32_t>();
  int32_t* out_counts = p.out_counts.mutable_data_ptr<int32_t>();
  for (int64_t t = 0; t < p.groups * p.out_tiles; ++t) {
    const IndexRange pos = output_tile_positions(t, p.out_tiles, cout_g, p.shape.out_tile);
    out_counts[t] = plan_output_tile(m, g, order, pos.begin, pos.end, p.shape.in_chunk,
                                     out_entries + t * p.out_capacity);
  }
  int32_t* in_entries = p.in_entries.mutable_data_ptr<int32_t>();
  int32_t* in_counts = p.in_counts.mutable_data_ptr<int32_t>();
  for (int64_t t = 0; t < p.groups * p.in_tiles; ++t) {
    const IndexRange in = input_tile_channels(t, p.in_tiles, g.cin_g, p.shape.in_tile);
    in_counts[t] = plan_input_tile(m, g, order, t / p.in_tiles * cout_g, cout_g, in.begin, in.end,
                                   p.shape.out_chunk, in_entries + t * p.in_capacity);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> plan_tiles(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder) {
  check_cpu_mask(mask);
  auto [g, p] = allocate_plan_tiles_call(mask, weight_size, groups, block, tile_shape, reorder);
  build_tile_plans(mask, g, p);
  return p.tensors();
}

}  // namespace rskcnn::cpu
