// Tile plans on the GPU: one thread per channel for the order, one per tile for the
// step lists, each calling the host/device planners of csrc/block_mask.h, which the
// CPU build of rskcnn::plan_tiles runs in the tests. Three launches, no host sync.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

#include "../conv_args.h"
#include "conv.h"
#include "kernels.h"

namespace rskcnn::cuda {
namespace {

constexpr int kThreads = 128;

int64_t blocks_for(int64_t n) { return ceil_div(n, kThreads); }

__global__ void channel_keys_kernel(const bool* mask, BlockMaskGeometry g, bool reorder,
                                    uint64_t* keys) {
  const int64_t o = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (o < g.cout) keys[o] = reorder ? channel_sort_key(mask, g, o) : 0;
}

__global__ void channel_order_kernel(const uint64_t* keys, int64_t cout, int64_t cout_g,
                                     int32_t* order) {
  const int64_t o = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (o >= cout) return;
  const int64_t begin = o / cout_g * cout_g;
  order[begin + channel_rank(keys, begin, cout_g, o)] = static_cast<int32_t>(o);
}

// Threads [0, out_rows) plan forward tiles, the rest grad-input tiles.
__global__ void tile_steps_kernel(const bool* mask, BlockMaskGeometry g, TileShape shape,
                                  int64_t groups, const int32_t* order, int64_t out_tiles,
                                  int64_t out_capacity, int32_t* out_entries, int32_t* out_counts,
                                  int64_t in_tiles, int64_t in_capacity, int32_t* in_entries,
                                  int32_t* in_counts) {
  const int64_t cout_g = g.cout / groups;
  const int64_t out_rows = groups * out_tiles;
  const int64_t r = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (r < out_rows) {
    const IndexRange pos = output_tile_positions(r, out_tiles, cout_g, shape.out_tile);
    out_counts[r] = plan_output_tile(mask, g, order, pos.begin, pos.end, shape.in_chunk,
                                     out_entries + r * out_capacity);
  } else if (r < out_rows + groups * in_tiles) {
    const int64_t t = r - out_rows;
    const IndexRange in = input_tile_channels(t, in_tiles, g.cin_g, shape.in_tile);
    in_counts[t] = plan_input_tile(mask, g, order, t / in_tiles * cout_g, cout_g, in.begin, in.end,
                                   shape.out_chunk, in_entries + t * in_capacity);
  }
}

}  // namespace

void build_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g, TilePlans& p) {
  if (g.cout == 0) return;
  const at::Tensor mask_c = mask.contiguous();
  const bool* m = mask_c.const_data_ptr<bool>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor keys = at::empty({g.cout}, mask.options().dtype(at::kLong));
  auto* keys_ptr = reinterpret_cast<uint64_t*>(keys.mutable_data_ptr<int64_t>());

  channel_keys_kernel<<<blocks_for(g.cout), kThreads, 0, stream>>>(m, g, p.reorder, keys_ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  channel_order_kernel<<<blocks_for(g.cout), kThreads, 0, stream>>>(
      keys_ptr, g.cout, g.cout / p.groups, p.order.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t rows = p.groups * (p.out_tiles + p.in_tiles);
  tile_steps_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(
      m, g, p.shape, p.groups, p.order.const_data_ptr<int32_t>(), p.out_tiles, p.out_capacity,
      p.out_entries.mutable_data_ptr<int32_t>(), p.out_counts.mutable_data_ptr<int32_t>(),
      p.in_tiles, p.in_capacity, p.in_entries.mutable_data_ptr<int32_t>(),
      p.in_counts.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> plan_tiles(
    const at::Tensor& mask, at::IntArrayRef weight_size, int64_t groups, at::IntArrayRef block,
    at::IntArrayRef tile_shape, bool reorder) {
  TORCH_CHECK(mask.is_cuda(), "rskcnn cuda backend: mask must be a CUDA tensor, got ", mask.device());
  const c10::cuda::CUDAGuard guard(mask.device());
  const BlockMaskGeometry g = make_mask_geometry(weight_size, mask, block);
  TORCH_CHECK(g.cin_g > 0 && g.kh > 0 && g.kw > 0,
              "rskcnn: weight must have Cin/groups, KH and KW all >= 1, got weight shape ", weight_size);
  TORCH_CHECK(tile_shape.size() == 4, "rskcnn: tile_shape must have 4 elements, got ", tile_shape.size());
  TilePlans p = allocate_tile_plans(
      mask, g, groups, TileShape{tile_shape[0], tile_shape[1], tile_shape[2], tile_shape[3]}, reorder);
  build_tile_plans(mask, g, p);
  return {p.order, p.out_entries, p.out_counts, p.in_entries, p.in_counts};
}

}  // namespace rskcnn::cuda

