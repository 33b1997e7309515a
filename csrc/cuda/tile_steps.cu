// Tile plans on the GPU: one thread per channel for the order (keys and ranks from the
// host/device functions of csrc/block_mask.h), then one CTA per tile for its step list,
// a warp per step voting with any_kept_at. The lists equal those of plan_output_tile /
// plan_input_tile, which the CPU build of rskcnn::plan_tiles runs; the CUDA tests
// compare the two. Three launches, no host sync. (A thread per tile running those
// serial loops took 5-15 ms per call on an H200 for 512x512x3x3: the planner cost 20x
// the convolution.)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

#include "../op_kernels.h"
#include "../tile_steps.h"
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

// order[group begin + rank] = channel; each CTA ranks kThreads channels of one group
// against the group's keys, staged in shared memory when they fit.
__global__ void channel_order_kernel(const uint64_t* keys, int64_t cout_g, int64_t blocks_per_group,
                                     bool staged, int32_t* order) {
  extern __shared__ uint64_t group_keys[];
  const int64_t begin = blockIdx.x / blocks_per_group * cout_g;
  const uint64_t* k = keys + begin;
  if (staged) {
    for (int64_t j = threadIdx.x; j < cout_g; j += kThreads) group_keys[j] = k[j];
    __syncthreads();
    k = group_keys;
  }
  const int64_t o = blockIdx.x % blocks_per_group * int64_t{kThreads} + threadIdx.x;
  if (o < cout_g) order[begin + channel_rank(k, 0, cout_g, o)] = static_cast<int32_t>(begin + o);
}

// The steps (tap, chunk) of one tile: a forward tile covers order positions
// [pos_begin, pos_end) and reduces over chunks of input channels; a grad-input tile covers
// input channels [i_begin, i_end) and reduces over chunks of order positions.
struct TileSteps {
  int64_t pos_begin, pos_end;  // forward: the tile's positions; grad-input: the group's
  int64_t i_begin, i_end;      // forward: the group's channels (0, Cin_g); grad-input: the tile's
  int64_t chunk, chunks;       // chunk width and count, along Cin_g (forward) or the order (grad-input)
  bool forward;
};

// Whether step s keeps anything: lanes split the step's order positions, then vote.
__device__ bool step_kept(const bool* mask, const BlockMaskGeometry& g, const int32_t* order,
                          const TileSteps& t, int64_t s, int lane) {
  const int64_t tap = s / t.chunks, c = s % t.chunks, h = tap / g.kw, w = tap % g.kw;
  int64_t p_begin = t.pos_begin, p_end = t.pos_end, i_begin = t.i_begin, i_end = t.i_end;
  if (t.forward) {
    i_begin = c * t.chunk;
    i_end = min_i64(i_begin + t.chunk, t.i_end);
  } else {
    p_begin = t.pos_begin + c * t.chunk;
    p_end = min_i64(p_begin + t.chunk, t.pos_end);
  }
  bool kept = false;
  for (int64_t p = p_begin + lane; p < p_end && !kept; p += 32) {
    kept = any_kept_at(mask, g, order[p], i_begin, i_end, h, w);
  }
  return __any_sync(0xffffffffu, kept);
}

constexpr int kPlanThreads = 256;
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr int64_t kSegment = 2048;  // steps whose flags sit in shared memory at once

// One CTA per tile (forward tiles first, then grad-input tiles). Warps evaluate a
// segment of steps into shared flags, then the CTA compacts them in order with warp
// ballots; the same lists as plan_output_tile / plan_input_tile, in parallel.
__global__ void tile_steps_kernel(const bool* mask, BlockMaskGeometry g, TileShape shape,
                                  int64_t groups, const int32_t* order, int64_t out_tiles,
                                  int64_t out_capacity, int32_t* out_entries, int32_t* out_counts,
                                  int64_t in_tiles, int64_t in_capacity, int32_t* in_entries,
                                  int32_t* in_counts) {
  __shared__ bool kept[kSegment];
  __shared__ int32_t warp_counts[kPlanWarps];
  const int64_t cout_g = g.cout / groups;
  const int64_t r = blockIdx.x;
  const bool forward = r < groups * out_tiles;
  TileSteps t;
  int64_t capacity;
  int32_t *entries, *count;
  if (forward) {
    const IndexRange pos = output_tile_positions(r, out_tiles, cout_g, shape.out_tile);
    t = TileSteps{pos.begin, pos.end, 0, g.cin_g, shape.in_chunk, ceil_div(g.cin_g, shape.in_chunk), true};
    capacity = out_capacity;
    entries = out_entries + r * out_capacity;
    count = out_counts + r;
  } else {
    const int64_t tile = r - groups * out_tiles;
    const IndexRange in = input_tile_channels(tile, in_tiles, g.cin_g, shape.in_tile);
    const int64_t group_begin = tile / in_tiles * cout_g;
    t = TileSteps{group_begin, group_begin + cout_g, in.begin, in.end, shape.out_chunk,
                  ceil_div(cout_g, shape.out_chunk), false};
    capacity = in_capacity;
    entries = in_entries + tile * in_capacity;
    count = in_counts + tile;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int32_t written = 0;  // the same in every thread
  for (int64_t seg = 0; seg < capacity; seg += kSegment) {
    const int64_t seg_len = min_i64(kSegment, capacity - seg);
    for (int64_t s = warp; s < seg_len; s += kPlanWarps) {
      const bool k = step_kept(mask, g, order, t, seg + s, lane);
      if (lane == 0) kept[s] = k;
    }
    __syncthreads();
    for (int64_t base = 0; base < seg_len; base += kPlanThreads) {
      const int64_t s = base + threadIdx.x;
      const bool k = s < seg_len && kept[s];
      const unsigned votes = __ballot_sync(0xffffffffu, k);
      if (lane == 0) warp_counts[warp] = __popc(votes);
      __syncthreads();
      int32_t before = written;
      for (int w = 0; w < warp; ++w) before += warp_counts[w];
      if (k) entries[before + __popc(votes & ((1u << lane) - 1u))] = static_cast<int32_t>(seg + s);
      for (int w = 0; w < kPlanWarps; ++w) written += warp_counts[w];
      __syncthreads();  // warp_counts is rewritten next round
    }
  }
  if (threadIdx.x == 0) *count = written;
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
  const int64_t cout_g = g.cout / p.groups, blocks_per_group = blocks_for(cout_g);
  const size_t key_bytes = cout_g * sizeof(uint64_t);
  const bool staged = key_bytes <= 32 * 1024;
  channel_order_kernel<<<p.groups * blocks_per_group, kThreads, staged ? key_bytes : 0, stream>>>(
      keys_ptr, cout_g, blocks_per_group, staged, p.order.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t tiles = p.groups * (p.out_tiles + p.in_tiles);
  TORCH_CHECK(tiles <= INT32_MAX, "rskcnn: ", tiles, " tiles exceed one launch");
  tile_steps_kernel<<<static_cast<unsigned>(tiles), kPlanThreads, 0, stream>>>(
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
  auto [g, p] = allocate_plan_tiles_call(mask, weight_size, groups, block, tile_shape, reorder);
  build_tile_plans(mask, g, p);
  return p.tensors();
}

}  // namespace rskcnn::cuda

