// Forward of the element-mask path: y = conv2d(x, W * keep * scale) + bias on CUDA cores.
//
// An SpMM in the manner of Sputnik: the sparse operand is the filters (row o = the kept
// (i, r, s) of output channel o), the dense one the implicit im2col of x. A CTA takes
// one row and a tile of kTile output pixels of N*OH*OW; it stages the row's kept
// weights in shared memory kChunk at a time and each thread accumulates kItems pixels.
// Block ids run over the rows longest first, so the long rows start first and the
// short ones fill the tail.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "element_common.cuh"
#include "element_lists.cuh"
#include "kernels.h"

namespace rskcnn::cuda {
namespace {

using namespace element;

constexpr int kThreads = 128;
constexpr int kItems = 4;  // output pixels per thread
constexpr int kTile = kThreads * kItems;
constexpr int kChunk = 256;  // kept weights staged at a time

// V: pixels per packed store of y (1 or 4, dividing kItems).
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
    element_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                           const scalar_t* __restrict__ bias, const int32_t* __restrict__ entries,
                           const int32_t* __restrict__ counts, const int32_t* __restrict__ order,
                           ConvArgs a, ConvArgs32 a32, at::acc_type<scalar_t, true> scale,
                           int64_t tiles, scalar_t* __restrict__ y) {
  using acc_t = at::acc_type<scalar_t, true>;
  // Per staged weight: its value, r*dh, s*dw, and the offset of its input element
  // x[n, g*Cin_g + i, ih0 + r*dh, iw0 + s*dw] from x[n, g*Cin_g, ih0, iw0].
  __shared__ acc_t s_value[kChunk];
  __shared__ int s_dr[kChunk], s_ds[kChunk];
  __shared__ int64_t s_offset[kChunk];

  const int64_t rank = blockIdx.x / tiles;
  const int64_t tile_begin = (blockIdx.x - rank * tiles) * kTile;
  const int64_t o = order[rank];
  const int32_t count = counts[o];
  const int taps = a32.kh * a32.kw;
  const int64_t row_len = a.cin_g * taps;  // the list's capacity and filter o's length
  const int32_t* row = entries + o * row_len;
  const scalar_t* filter = w + o * row_len;
  const int64_t group = o / (a.cout / a.groups);
  RSKCNN_DEVICE_ASSERT(o >= 0 && o < a.cout && count >= 0 && count <= row_len);
  const int64_t in_plane = int64_t{a32.h} * a32.w;
  const int64_t out_plane = int64_t{a32.oh} * a32.ow;
  const int64_t pixels = a.n * out_plane;

  // Top-left corner of each item's receptive field. Items past the last pixel compute
  // a copy of the last pixel and are not stored.
  int ih0[kItems], iw0[kItems];
  int64_t corner[kItems];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int64_t q = min_i64(item_pixel<kThreads, V>(tile_begin, j), pixels - 1);
    const int64_t n = q / out_plane;
    const int pix = static_cast<int>(q - n * out_plane);
    const int oh = pix / a32.ow;
    const int ow = pix - oh * a32.ow;
    ih0[j] = oh * a32.sh - a32.ph;
    iw0[j] = ow * a32.sw - a32.pw;
    corner[j] = (n * a.cin + group * a.cin_g) * in_plane + int64_t{ih0[j]} * a32.w + iw0[j];
  }

  acc_t acc[kItems] = {};
  for (int32_t begin = 0; begin < count; begin += kChunk) {
    const int m = min(kChunk, count - begin);
    __syncthreads();  // the previous chunk is consumed
    for (int k = threadIdx.x; k < m; k += kThreads) {
      const int32_t e = row[begin + k];
      RSKCNN_DEVICE_ASSERT(e >= 0 && e < row_len);
      const int i = e / taps;
      const int r = (e - i * taps) / a32.kw;
      const int s = e - i * taps - r * a32.kw;
      s_value[k] = static_cast<acc_t>(filter[e]);
      s_dr[k] = r * a32.dh;
      s_ds[k] = s * a32.dw;
      s_offset[k] = i * in_plane + int64_t{r * a32.dh} * a32.w + s * a32.dw;
    }
    __syncthreads();
    for (int k = 0; k < m; ++k) {
      const acc_t value = s_value[k];
      const int dr = s_dr[k], ds = s_ds[k];
      const int64_t offset = s_offset[k];
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        const int ih = ih0[j] + dr, iw = iw0[j] + ds;
        if (static_cast<unsigned>(ih) < static_cast<unsigned>(a32.h) &&
            static_cast<unsigned>(iw) < static_cast<unsigned>(a32.w)) {
          acc[j] += value * static_cast<acc_t>(x[corner[j] + offset]);
        }
      }
    }
  }

  const acc_t b = bias != nullptr ? static_cast<acc_t>(bias[o]) : acc_t(0);
#pragma unroll
  for (int j = 0; j < kItems; j += V) {
    // With V > 1 the V pixels share a plane (OH*OW % V == 0), so all or none are real.
    const int64_t q = item_pixel<kThreads, V>(tile_begin, j);
    if (q >= pixels) continue;
    const int64_t n = q / out_plane;
    Pack<scalar_t, V> out;
#pragma unroll
    for (int t = 0; t < V; ++t) out.v[t] = static_cast<scalar_t>(acc[j + t] * scale + b);
    *reinterpret_cast<Pack<scalar_t, V>*>(y + (n * a.cout + o) * out_plane + (q - n * out_plane)) =
        out;
  }
}

template <typename scalar_t>
void launch(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
            const ElementRows& rows, const ConvArgs& a, const ConvArgs32& a32, double scale,
            int64_t tiles, const at::Tensor& y) {
  scalar_t* out = y.mutable_data_ptr<scalar_t>();
  const auto kernel = can_pack<4>(out, a.oh * a.ow) ? element_forward_kernel<scalar_t, 4>
                                                    : element_forward_kernel<scalar_t, 1>;
  kernel<<<static_cast<unsigned>(rows.rows * tiles), kThreads, 0,
           at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
      bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
      rows.entries.const_data_ptr<int32_t>(), rows.counts.const_data_ptr<int32_t>(),
      rows.order.const_data_ptr<int32_t>(), a, a32,
      static_cast<at::acc_type<scalar_t, true>>(scale), tiles, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void element_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                     const at::Tensor& keep, const ConvArgs& a, double scale, const at::Tensor& y) {
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && y.is_contiguous() &&
                  (!bias.defined() || bias.is_contiguous()),
              "rskcnn: element_forward needs contiguous tensors");
  if (y.numel() == 0) return;
  const ConvArgs32 a32 = narrow_element_conv_args(a);
  const ElementRows rows = plan_filter_rows(keep, a);
  const int64_t tiles = ceil_div(a.n * a.oh * a.ow, kTile);
  check_grid(rows.rows * tiles, "element_forward");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "rskcnn_element_forward",
                                  [&] { launch<scalar_t>(x, w, bias, rows, a, a32, scale, tiles, y); });
}

}  // namespace rskcnn::cuda
