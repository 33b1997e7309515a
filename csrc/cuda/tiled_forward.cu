// Forward pass of the tiled implicit GEMM: y = scale * conv(x, w_packed) + bias.
// A CTA computes 64 output pixels x one forward tile of the channel order (out_tile
// positions); its K loop visits only the tile's plan steps (tap, chunk of 32 input channels).
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
struct ForwardParams {
  const T* x;     // (N, H, W, Cin)
  const T* w;     // (Cout, KH, KW, Cin_g), row pos = channel order[pos]
  const T* bias;  // (Cout,) or nullptr
  T* y;           // (N, Cout, OH, OW), strides ys
  const int32_t* order;
  const int32_t* entries;
  const int32_t* counts;
  ConvArgs32 g;
  int64_t ys[4];
  int64_t pixels;  // N * OH * OW
  int out_tiles, out_capacity, chunks;
  Acc<T> scale;
  bool vec_x, vec_w;
};

template <typename T, int BN, bool kTensor>
__global__ void __launch_bounds__(kThreads) tiled_forward_kernel(const ForwardParams<T> p) {
  using L = GemmLayout<T, kPixelTile, BN, /*A_ROW=*/true, /*B_ROW=*/false, /*C_COL=*/true>;
  constexpr int BM = L::BM, BK = L::BK, kStagesPerChunk = kChunk / BK;
  __shared__ __align__(128) unsigned char smem[L::kBytes];
  __shared__ int s_n[BM], s_oh[BM], s_ow[BM];  // output pixel of each A row; s_n = -1 past the end

  const ConvArgs32& g = p.g;
  TILED_CHECK(blockDim.x == kThreads);
  const int tile = blockIdx.y;
  const int gi = tile / p.out_tiles;
  const int tile_begin = (tile % p.out_tiles) * BN;  // first position within the group
  const int pos0 = gi * g.cout_g + tile_begin;
  const int cols = min(BN, g.cout_g - tile_begin);
  const int count = p.counts[tile];
  const int32_t* steps = p.entries + int64_t(tile) * p.out_capacity;
  TILED_CHECK(cols > 0 && count >= 0 && count <= p.out_capacity);

  const int64_t q0 = int64_t(blockIdx.x) * BM;
  for (int m = threadIdx.x; m < BM; m += kThreads) {
    const int64_t q = q0 + m;
    const Pixel px = q < p.pixels ? decode_pixel(q, g.oh, g.ow) : Pixel{-1, 0, 0};
    s_n[m] = px.n;
    s_oh[m] = px.y;
    s_ow[m] = px.x;
  }
  __syncthreads();

  const T* x_group = p.x + int64_t(gi) * g.cin_g;
  const int taps = g.kh * g.kw;
  const auto load_stage = [&](int stage, int it) {
    const int e = steps[it / kStagesPerChunk];
    TILED_CHECK(e >= 0 && e < p.out_capacity);
    const int tap = e / p.chunks;
    const int r = tap / g.kw, s = tap % g.kw;
    const int c0 = (e % p.chunks) * kChunk + (it % kStagesPerChunk) * BK;
    const int valid = min(BK, g.cin_g - c0);  // channels of this stage; <= 0 for an empty half
    TILED_CHECK(tap < taps && (valid > 0 || it % kStagesPerChunk != 0));
    // A: the input pixel under tap (r, s) of each output pixel, channels [c0, c0 + BK).
    load_tile<BM, BK, L::lda>(
        L::a(smem, stage),
        [&](int m) -> const T* {
          const int ih = s_oh[m] * g.sh - g.ph + r * g.dh;
          const int iw = s_ow[m] * g.sw - g.pw + s * g.dw;
          if (s_n[m] < 0 || ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return nullptr;
          return x_group + ((int64_t(s_n[m]) * g.h + ih) * g.w + iw) * g.cin + c0;
        },
        valid, p.vec_x, p.x);
    // B, stored [n][k]: weight rows of the tile's positions at tap (r, s).
    load_tile<BN, BK, L::ldb>(
        L::b(smem, stage),
        [&](int j) -> const T* {
          if (j >= cols) return nullptr;
          TILED_CHECK(pos0 + j < g.cout);
          return p.w + (int64_t(pos0 + j) * taps + tap) * g.cin_g + c0;
        },
        valid, p.vec_w, p.w);
  };

  GemmCore<L, kTensor> core;
  gemm_mainloop<L>(core, smem, count * kStagesPerChunk, load_stage);

  Acc<T>* cs = L::c(smem);
  core.store(cs);
  __syncthreads();
  // Pixel-fastest writes: coalesced for a contiguous (N, C, H, W) y.
  for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
    const int m = idx % BM, j = idx / BM;
    if (j >= cols || s_n[m] < 0) continue;
    const int ch = p.order[pos0 + j];
    TILED_CHECK(ch >= gi * g.cout_g && ch < (gi + 1) * g.cout_g);
    Acc<T> v = cs[j * L::ldc + m] * p.scale;
    if (p.bias != nullptr) v += Elem<T>::to_acc(p.bias[ch]);
    p.y[s_n[m] * p.ys[0] + ch * p.ys[1] + s_oh[m] * p.ys[2] + s_ow[m] * p.ys[3]] =
        Elem<T>::from_acc(v);
  }
}

}  // namespace

void tiled_forward(const at::Tensor& x_nhwc, const at::Tensor& w_packed, const at::Tensor& bias,
                   const TilePlans& plans, const ConvArgs& a, double scale, bool use_tf32,
                   const at::Tensor& y) {
  check_plans(plans, a);
  check_nhwc(x_nhwc, x_nhwc, a.n, a.h, a.w, a.cin, "x_nhwc");
  check_dense(w_packed, x_nhwc, {a.cout, a.kh, a.kw, a.cin_g}, x_nhwc.scalar_type(), "w_packed");
  check_output(y, x_nhwc, {a.n, a.cout, a.oh, a.ow}, "y");
  if (bias.defined()) check_dense(bias, x_nhwc, {a.cout}, x_nhwc.scalar_type(), "bias");
  const int64_t pixels = a.n * a.oh * a.ow;
  if (pixels == 0 || a.cout == 0) return;

  const ConvArgs32 g = narrow_conv_args(a);
  const dim3 grid = make_grid(ceil_div(pixels, kPixelTile), plans.groups * plans.out_tiles);
  const bool vec_x = rows_16b_aligned(x_nhwc, a.cin_g);
  const bool vec_w = rows_16b_aligned(w_packed, a.cin_g);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_nhwc.scalar_type(), "rskcnn_tiled_forward", [&] {
    using T = typename CudaType<scalar_t>::type;
    ForwardParams<T> p{};
    p.x = reinterpret_cast<const T*>(x_nhwc.const_data_ptr<scalar_t>());
    p.w = reinterpret_cast<const T*>(w_packed.const_data_ptr<scalar_t>());
    p.bias = bias.defined() ? reinterpret_cast<const T*>(bias.const_data_ptr<scalar_t>()) : nullptr;
    p.y = reinterpret_cast<T*>(y.mutable_data_ptr<scalar_t>());
    p.order = plans.order.const_data_ptr<int32_t>();
    p.entries = plans.out_entries.const_data_ptr<int32_t>();
    p.counts = plans.out_counts.const_data_ptr<int32_t>();
    p.g = g;
    for (int d = 0; d < 4; ++d) p.ys[d] = y.stride(d);
    p.pixels = pixels;
    p.out_tiles = static_cast<int>(plans.out_tiles);
    p.out_capacity = static_cast<int>(plans.out_capacity);
    p.chunks = static_cast<int>(ceil_div(a.cin_g, kChunk));
    p.scale = static_cast<Acc<T>>(scale);
    p.vec_x = vec_x;
    p.vec_w = vec_w;
    dispatch_tile<T>(plans.shape.out_tile, use_tf32, [&](auto width, auto tensor) {
      tiled_forward_kernel<T, decltype(width)::value, decltype(tensor)::value>
          <<<grid, kThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace rskcnn::cuda
