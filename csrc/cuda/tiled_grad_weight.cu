// Weight gradient of the tiled implicit GEMM, per pixel split: for each kept step of each
// forward tile, dw_partial[split, order[pos], r, s, i] = sum over the split's output pixels q
// of dy[q, pos] * x[input pixel of q under tap (r, s), i].
// A CTA owns one (split, tile, step) box, out_tile positions x 32 input channels, and runs its
// K loop over the split's pixels: A = dy^T (rows of dy land as columns), B = gathered x.
// Every box is written by exactly one CTA, so the result needs no atomics and is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "kernels.h"
#include "tiled_gemm.cuh"
#include "tiled_host.cuh"

namespace rskcnn::cuda {
namespace {

using namespace tiled;

template <typename T>
struct GradWeightParams {
  const T* dy;  // (N, OH, OW, Cout), slot pos = channel order[pos]
  const T* x;   // (N, H, W, Cin)
  Acc<T>* dw;   // (splits, Cout, KH, KW, Cin_g)
  const int32_t* order;
  const int32_t* entries;
  const int32_t* counts;
  ConvArgs32 g;
  int64_t pixels;  // N * OH * OW
  int out_tiles, out_capacity, chunks;
  bool vec_dy, vec_x;
};

// grid = (step slot, forward tile, split).
template <typename T, int BM, bool kTensor>
__global__ void __launch_bounds__(kThreads) tiled_grad_weight_kernel(const GradWeightParams<T> p) {
  using L = GemmLayout<T, BM, kChunk, /*A_ROW=*/false, /*B_ROW=*/true, /*C_COL=*/false>;
  constexpr int BN = L::BN, BK = L::BK;
  __shared__ __align__(128) unsigned char smem[L::kBytes];

  const ConvArgs32& g = p.g;
  TILED_CHECK(blockDim.x == kThreads);
  const int tile = blockIdx.y;
  const int slot = blockIdx.x;
  const int count = p.counts[tile];
  TILED_CHECK(count >= 0 && count <= p.out_capacity);
  if (slot >= count) return;

  const int gi = tile / p.out_tiles;
  const int tile_begin = (tile % p.out_tiles) * BM;  // first position within the group
  const int pos0 = gi * g.cout_g + tile_begin;
  const int rows = min(BM, g.cout_g - tile_begin);
  const int e = p.entries[int64_t(tile) * p.out_capacity + slot];
  TILED_CHECK(rows > 0 && e >= 0 && e < p.out_capacity);
  const int tap = e / p.chunks;
  const int r = tap / g.kw, s = tap % g.kw;
  const int c0 = (e % p.chunks) * kChunk;  // first input channel within the group
  const int cols = min(BN, g.cin_g - c0);
  TILED_CHECK(tap < g.kh * g.kw && cols > 0);

  const int split = blockIdx.z, splits = gridDim.z;
  const int64_t q_begin = split * p.pixels / splits;
  const int64_t q_end = (split + 1) * p.pixels / splits;
  const int iters = static_cast<int>((q_end - q_begin + BK - 1) / BK);

  const T* dy_tile = p.dy + pos0;
  const T* x_group = p.x + int64_t(gi) * g.cin_g + c0;
  const auto load_stage = [&](int stage, int it) {
    const int64_t qk = q_begin + int64_t(it) * BK;
    // A, stored [k][m]: the dy row of pixel qk + k, positions [pos0, pos0 + rows).
    load_tile<BK, BM, L::lda>(
        L::a(smem, stage),
        [&](int k) -> const T* {
          const int64_t q = qk + k;
          return q < q_end ? dy_tile + q * g.cout : nullptr;
        },
        rows, p.vec_dy, p.dy);
    // B, stored [k][n]: channels [c0, c0 + cols) of the input pixel under tap (r, s) of qk + k.
    load_tile<BK, BN, L::ldb>(
        L::b(smem, stage),
        [&](int k) -> const T* {
          const int64_t q = qk + k;
          if (q >= q_end) return nullptr;
          const Pixel px = decode_pixel(q, g.oh, g.ow);
          const int ih = px.y * g.sh - g.ph + r * g.dh;
          const int iw = px.x * g.sw - g.pw + s * g.dw;
          if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return nullptr;
          return x_group + ((int64_t(px.n) * g.h + ih) * g.w + iw) * g.cin;
        },
        cols, p.vec_x, p.x);
  };

  GemmCore<L, kTensor> core;
  gemm_mainloop<L>(core, smem, iters, load_stage);

  Acc<T>* cs = L::c(smem);
  core.store(cs);
  __syncthreads();
  // Channel-fastest writes: the contiguous dimension of dw_partial.
  const int taps = g.kh * g.kw;
  for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
    const int m = idx / BN, j = idx % BN;
    if (m >= rows || j >= cols) continue;
    const int ch = p.order[pos0 + m];
    TILED_CHECK(ch >= gi * g.cout_g && ch < (gi + 1) * g.cout_g);
    p.dw[((int64_t(split) * g.cout + ch) * taps + tap) * g.cin_g + c0 + j] = cs[m * L::ldc + j];
  }
}

}  // namespace

void tiled_grad_weight(const at::Tensor& dy_nhwc, const at::Tensor& x_nhwc,
                       const TilePlans& plans, const ConvArgs& a, bool use_tf32,
                       const at::Tensor& dw_partial) {
  check_plans(plans, a);
  check_nhwc(dy_nhwc, x_nhwc, a.n, a.oh, a.ow, a.cout, "dy_nhwc");
  check_nhwc(x_nhwc, x_nhwc, a.n, a.h, a.w, a.cin, "x_nhwc");
  TORCH_CHECK(dw_partial.dim() == 5, "rskcnn: dw_partial must be 5-D (splits, Cout, KH, KW, Cin_g), got ",
              dw_partial.sizes());
  const int64_t splits = dw_partial.size(0);
  const auto acc_type = x_nhwc.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  check_dense(dw_partial, x_nhwc, {splits, a.cout, a.kh, a.kw, a.cin_g}, acc_type, "dw_partial");
  const int64_t pixels = a.n * a.oh * a.ow;
  if (pixels == 0 || splits == 0 || a.cout == 0) return;

  const ConvArgs32 g = narrow_conv_args(a);
  const dim3 grid = make_grid(plans.out_capacity, plans.groups * plans.out_tiles, splits);
  // A split's K loop counts its pixels in int (the host never splits that finely).
  checked_int32(ceil_div(pixels, splits), "the output pixels of one split");
  const bool vec_dy = rows_16b_aligned(dy_nhwc, a.cout / a.groups);
  const bool vec_x = rows_16b_aligned(x_nhwc, a.cin_g);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_nhwc.scalar_type(), "rskcnn_tiled_grad_weight", [&] {
    using T = typename CudaType<scalar_t>::type;
    GradWeightParams<T> p{};
    p.dy = reinterpret_cast<const T*>(dy_nhwc.const_data_ptr<scalar_t>());
    p.x = reinterpret_cast<const T*>(x_nhwc.const_data_ptr<scalar_t>());
    p.dw = dw_partial.mutable_data_ptr<Acc<T>>();
    p.order = plans.order.const_data_ptr<int32_t>();
    p.entries = plans.out_entries.const_data_ptr<int32_t>();
    p.counts = plans.out_counts.const_data_ptr<int32_t>();
    p.g = g;
    p.pixels = pixels;
    p.out_tiles = static_cast<int>(plans.out_tiles);
    p.out_capacity = static_cast<int>(plans.out_capacity);
    p.chunks = static_cast<int>(ceil_div(a.cin_g, kChunk));
    p.vec_dy = vec_dy;
    p.vec_x = vec_x;
    dispatch_tile<T>(plans.shape.out_tile, use_tf32, [&](auto width, auto tensor) {
      tiled_grad_weight_kernel<T, decltype(width)::value, decltype(tensor)::value>
          <<<grid, kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace rskcnn::cuda
