// Grad-input of the element-mask path on CUDA cores: dx = conv_transpose(dy, W * keep * scale).
//
// The SpMM of element_forward.cu turned around: row c = g*Cin_g + i lists the kept
// (l, r, s) of w[g*Cout_g + l, i, r, s], the dense operand is dy. A CTA takes one row
// and a tile of kTile input pixels of N*H*W; input pixel (ih, iw) gathers dy[oh, ow]
// with oh*sh = ih + ph - r*dh, likewise for ow. Rows run longest first.
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
constexpr int kItems = 4;  // input pixels per thread
constexpr int kTile = kThreads * kItems;
constexpr int kChunk = 256;  // kept weights staged at a time

// V: pixels per packed store of dx (1 or 4). kUnitStride: sh == sw == 1, where every
// tap meets exactly one output pixel and no division is needed.
template <typename scalar_t, int V, bool kUnitStride>
__global__ void __launch_bounds__(kThreads)
    element_grad_input_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ w,
                              const int32_t* __restrict__ entries,
                              const int32_t* __restrict__ counts,
                              const int32_t* __restrict__ order, int64_t capacity, ConvArgs a,
                              ConvArgs32 a32, at::acc_type<scalar_t, true> scale, int64_t tiles,
                              scalar_t* __restrict__ dx) {
  using acc_t = at::acc_type<scalar_t, true>;
  // Per staged weight: its value, r*dh, s*dw and the offset of its dy channel; with unit
  // stride the offset also holds -(r*dh*OW + s*dw), so that it addresses dy[oh, ow] from
  // the pixel's (ih + ph, iw + pw).
  __shared__ acc_t s_value[kChunk];
  __shared__ int s_dr[kChunk], s_ds[kChunk];
  __shared__ int64_t s_offset[kChunk];

  const int64_t rank = blockIdx.x / tiles;
  const int64_t tile_begin = (blockIdx.x - rank * tiles) * kTile;
  const int64_t c = order[rank];
  const int32_t count = counts[c];
  const int32_t* row = entries + c * capacity;
  const int64_t group = c / a.cin_g;
  const int64_t i = c - group * a.cin_g;
  const int64_t cout_g = a.cout / a.groups;
  RSKCNN_DEVICE_ASSERT(c >= 0 && c < a.cin && count >= 0 && count <= capacity);
  const int taps = a32.kh * a32.kw;
  const int64_t in_plane = int64_t{a32.h} * a32.w;
  const int64_t out_plane = int64_t{a32.oh} * a32.ow;
  const int64_t pixels = a.n * in_plane;

  // (ih + ph, iw + pw) of each item and the offset of its image in dy. Items past the
  // last pixel compute a copy of the last pixel and are not stored.
  int th[kItems], tw[kItems];
  int64_t base[kItems];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int64_t q = min_i64(item_pixel<kThreads, V>(tile_begin, j), pixels - 1);
    const int64_t n = q / in_plane;
    const int pix = static_cast<int>(q - n * in_plane);
    const int ih = pix / a32.w;
    th[j] = ih + a32.ph;
    tw[j] = pix - ih * a32.w + a32.pw;
    base[j] = n * a.cout * out_plane;
    if constexpr (kUnitStride) base[j] += int64_t{th[j]} * a32.ow + tw[j];
  }

  acc_t acc[kItems] = {};
  for (int32_t begin = 0; begin < count; begin += kChunk) {
    const int m = min(kChunk, count - begin);
    __syncthreads();  // the previous chunk is consumed
    for (int k = threadIdx.x; k < m; k += kThreads) {
      const int32_t e = row[begin + k];
      RSKCNN_DEVICE_ASSERT(e >= 0 && e < capacity);
      const int l = e / taps;
      const int tap = e - l * taps;
      const int r = tap / a32.kw;
      const int s = tap - r * a32.kw;
      const int64_t o = group * cout_g + l;
      s_value[k] = static_cast<acc_t>(w[(o * a.cin_g + i) * taps + tap]);
      s_dr[k] = r * a32.dh;
      s_ds[k] = s * a32.dw;
      s_offset[k] = o * out_plane;
      if constexpr (kUnitStride) s_offset[k] -= int64_t{r * a32.dh} * a32.ow + s * a32.dw;
    }
    __syncthreads();
    for (int k = 0; k < m; ++k) {
      const acc_t value = s_value[k];
      const int dr = s_dr[k], ds = s_ds[k];
      const int64_t offset = s_offset[k];
#pragma unroll
      for (int j = 0; j < kItems; ++j) {
        if constexpr (kUnitStride) {
          const int oh = th[j] - dr, ow = tw[j] - ds;
          if (static_cast<unsigned>(oh) < static_cast<unsigned>(a32.oh) &&
              static_cast<unsigned>(ow) < static_cast<unsigned>(a32.ow)) {
            acc[j] += value * static_cast<acc_t>(dy[base[j] + offset]);
          }
        } else {
          const int ah = th[j] - dr, aw = tw[j] - ds;
          if (ah < 0 || aw < 0) continue;
          const int oh = ah / a32.sh, ow = aw / a32.sw;
          if (oh * a32.sh == ah && ow * a32.sw == aw && oh < a32.oh && ow < a32.ow) {
            acc[j] += value * static_cast<acc_t>(dy[base[j] + offset + int64_t{oh} * a32.ow + ow]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kItems; j += V) {
    // With V > 1 the V pixels share a plane (H*W % V == 0), so all or none are real.
    const int64_t q = item_pixel<kThreads, V>(tile_begin, j);
    if (q >= pixels) continue;
    const int64_t n = q / in_plane;
    Pack<scalar_t, V> out;
#pragma unroll
    for (int t = 0; t < V; ++t) out.v[t] = static_cast<scalar_t>(acc[j + t] * scale);
    *reinterpret_cast<Pack<scalar_t, V>*>(dx + (n * a.cin + c) * in_plane + (q - n * in_plane)) =
        out;
  }
}

template <typename scalar_t, bool kUnitStride>
auto pick_kernel(bool pack) {
  return pack ? element_grad_input_kernel<scalar_t, 4, kUnitStride>
              : element_grad_input_kernel<scalar_t, 1, kUnitStride>;
}

template <typename scalar_t>
void launch(const at::Tensor& dy, const at::Tensor& w, const ElementRows& rows, const ConvArgs& a,
            const ConvArgs32& a32, double scale, int64_t tiles, const at::Tensor& dx) {
  scalar_t* out = dx.mutable_data_ptr<scalar_t>();
  const bool pack = can_pack<4>(out, a.h * a.w);
  const auto kernel = a32.sh == 1 && a32.sw == 1 ? pick_kernel<scalar_t, true>(pack)
                                               : pick_kernel<scalar_t, false>(pack);
  kernel<<<static_cast<unsigned>(rows.rows * tiles), kThreads, 0,
           at::cuda::getCurrentCUDAStream()>>>(
      dy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
      rows.entries.const_data_ptr<int32_t>(), rows.counts.const_data_ptr<int32_t>(),
      rows.order.const_data_ptr<int32_t>(), rows.capacity, a, a32,
      static_cast<at::acc_type<scalar_t, true>>(scale), tiles, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void element_grad_input(const at::Tensor& dy, const at::Tensor& w, const at::Tensor& keep,
                        const ConvArgs& a, double scale, const at::Tensor& dx) {
  TORCH_CHECK(dy.is_contiguous() && w.is_contiguous() && dx.is_contiguous(),
              "rskcnn: element_grad_input needs contiguous tensors");
  if (dx.numel() == 0) return;
  const ConvArgs32 a32 = narrow_element_conv_args(a);
  const ElementRows rows = plan_input_rows(keep, a);
  const int64_t tiles = ceil_div(a.n * a.h * a.w, kTile);
  check_grid(rows.rows * tiles, "element_grad_input");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                  "rskcnn_element_grad_input",
                                  [&] { launch<scalar_t>(dy, w, rows, a, a32, scale, tiles, dx); });
}

}  // namespace rskcnn::cuda
