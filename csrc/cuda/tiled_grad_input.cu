// Input gradient of the tiled implicit GEMM: dx = scale * conv_transpose(dy, w_packed).
// A CTA computes 64 input pixels x one grad-input tile (in_tile input channels of a group);
// its K loop visits only the tile's plan steps (tap, chunk of 32 positions of the order).
//
// Each step gathers, for every input pixel, the output pixel that tap (r, s) maps onto it
// and zeroes the rows where there is none. With stride > 1 most of those rows are zero
// (only 1 / (sh * sw) of the pixels have a source per tap), so strided layers multiply
// zeros; splitting pixels by stride phase would avoid that.
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
struct GradInputParams {
  const T* dy;  // (N, OH, OW, Cout), slot pos = channel order[pos]
  const T* w;   // (Cout, KH, KW, Cin_g), row pos = channel order[pos]
  T* dx;        // (N, Cin, H, W), strides dxs
  const int32_t* entries;
  const int32_t* counts;
  ConvArgs32 g;
  int64_t dxs[4];
  int64_t pixels;  // N * H * W
  int in_tiles, in_capacity, chunks;
  Acc<T> scale;
  bool vec_dy, vec_w;
};

template <typename T, int BN, bool kTensor>
__global__ void __launch_bounds__(kThreads) tiled_grad_input_kernel(const GradInputParams<T> p) {
  using L = GemmLayout<T, kPixelTile, BN, /*A_ROW=*/true, /*B_ROW=*/true, /*C_COL=*/true>;
  constexpr int BM = L::BM, BK = L::BK, kStagesPerChunk = kChunk / BK;
  __shared__ __align__(128) unsigned char smem[L::kBytes];
  __shared__ int s_n[BM], s_ih[BM], s_iw[BM];  // input pixel of each A row; s_n = -1 past the end

  const ConvArgs32& g = p.g;
  TILED_CHECK(blockDim.x == kThreads);
  const int tile = blockIdx.y;
  const int gi = tile / p.in_tiles;
  const int i0 = (tile % p.in_tiles) * BN;  // first input channel within the group
  const int cols = min(BN, g.cin_g - i0);
  const int count = p.counts[tile];
  const int32_t* steps = p.entries + int64_t(tile) * p.in_capacity;
  TILED_CHECK(cols > 0 && count >= 0 && count <= p.in_capacity);

  const int64_t q0 = int64_t(blockIdx.x) * BM;
  for (int m = threadIdx.x; m < BM; m += kThreads) {
    const int64_t q = q0 + m;
    const Pixel px = q < p.pixels ? decode_pixel(q, g.h, g.w) : Pixel{-1, 0, 0};
    s_n[m] = px.n;
    s_ih[m] = px.y;
    s_iw[m] = px.x;
  }
  __syncthreads();

  const T* dy_group = p.dy + int64_t(gi) * g.cout_g;
  const int taps = g.kh * g.kw;
  const auto load_stage = [&](int stage, int it) {
    const int e = steps[it / kStagesPerChunk];
    TILED_CHECK(e >= 0 && e < p.in_capacity);
    const int tap = e / p.chunks;
    const int r = tap / g.kw, s = tap % g.kw;
    // Positions [p0, p0 + BK) of the group's order.
    const int p0 = (e % p.chunks) * kChunk + (it % kStagesPerChunk) * BK;
    const int valid = min(BK, g.cout_g - p0);  // <= 0 for an empty half
    TILED_CHECK(tap < taps && (valid > 0 || it % kStagesPerChunk != 0));
    // A: dy at the output pixel (oh, ow) with oh * sh - ph + r * dh = ih (and likewise for w).
    load_tile<BM, BK, L::lda>(
        L::a(smem, stage),
        [&](int m) -> const T* {
          const int th = s_ih[m] + g.ph - r * g.dh;
          const int tw = s_iw[m] + g.pw - s * g.dw;
          if (s_n[m] < 0 || th < 0 || tw < 0 || th % g.sh != 0 || tw % g.sw != 0) return nullptr;
          const int oh = th / g.sh, ow = tw / g.sw;
          if (oh >= g.oh || ow >= g.ow) return nullptr;
          return dy_group + ((int64_t(s_n[m]) * g.oh + oh) * g.ow + ow) * g.cout + p0;
        },
        valid, p.vec_dy, p.dy);
    // B, stored [k][n]: the tile's input channels of weight row gi * cout_g + p0 + k at tap (r, s).
    load_tile<BK, BN, L::ldb>(
        L::b(smem, stage),
        [&](int k) -> const T* {
          if (k >= valid) return nullptr;
          return p.w + (int64_t(gi * g.cout_g + p0 + k) * taps + tap) * g.cin_g + i0;
        },
        cols, p.vec_w, p.w);
  };

  GemmCore<L, kTensor> core;
  gemm_mainloop<L>(core, smem, count * kStagesPerChunk, load_stage);

  Acc<T>* cs = L::c(smem);
  core.store(cs);
  __syncthreads();
  // Pixel-fastest writes: coalesced for a contiguous (N, C, H, W) dx. A tile with no step
  // writes zeros.
  const int64_t ch0 = int64_t(gi) * g.cin_g + i0;
  for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
    const int m = idx % BM, j = idx / BM;
    if (j >= cols || s_n[m] < 0) continue;
    const Acc<T> v = cs[j * L::ldc + m] * p.scale;
    p.dx[s_n[m] * p.dxs[0] + (ch0 + j) * p.dxs[1] + s_ih[m] * p.dxs[2] + s_iw[m] * p.dxs[3]] =
        Elem<T>::from_acc(v);
  }
}

}  // namespace

void tiled_grad_input(const at::Tensor& dy_nhwc, const at::Tensor& w_packed,
                      const TilePlans& plans, const ConvArgs& a, double scale, bool use_tf32,
                      const at::Tensor& dx) {
  check_plans(plans, a);
  check_nhwc(dy_nhwc, dy_nhwc, a.n, a.oh, a.ow, a.cout, "dy_nhwc");
  check_dense(w_packed, dy_nhwc, {a.cout, a.kh, a.kw, a.cin_g}, dy_nhwc.scalar_type(), "w_packed");
  check_output(dx, dy_nhwc, {a.n, a.cin, a.h, a.w}, "dx");
  const int64_t pixels = a.n * a.h * a.w;
  if (pixels == 0 || a.cin == 0) return;

  const ConvArgs32 g = narrow_conv_args(a);
  const dim3 grid = make_grid(ceil_div(pixels, kPixelTile), plans.groups * plans.in_tiles);
  const bool vec_dy = rows_16b_aligned(dy_nhwc, a.cout / a.groups);
  const bool vec_w = rows_16b_aligned(w_packed, a.cin_g);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy_nhwc.scalar_type(), "rskcnn_tiled_grad_input", [&] {
    using T = typename CudaType<scalar_t>::type;
    GradInputParams<T> p{};
    p.dy = reinterpret_cast<const T*>(dy_nhwc.const_data_ptr<scalar_t>());
    p.w = reinterpret_cast<const T*>(w_packed.const_data_ptr<scalar_t>());
    p.dx = reinterpret_cast<T*>(dx.mutable_data_ptr<scalar_t>());
    p.entries = plans.in_entries.const_data_ptr<int32_t>();
    p.counts = plans.in_counts.const_data_ptr<int32_t>();
    p.g = g;
    for (int d = 0; d < 4; ++d) p.dxs[d] = dx.stride(d);
    p.pixels = pixels;
    p.in_tiles = static_cast<int>(plans.in_tiles);
    p.in_capacity = static_cast<int>(plans.in_capacity);
    p.chunks = static_cast<int>(ceil_div(a.cout / a.groups, kChunk));
    p.scale = static_cast<Acc<T>>(scale);
    p.vec_dy = vec_dy;
    p.vec_w = vec_w;
    dispatch_tile<T>(plans.shape.in_tile, use_tf32, [&](auto width, auto tensor) {
      tiled_grad_input_kernel<T, decltype(width)::value, decltype(tensor)::value>
          <<<grid, kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace rskcnn::cuda
