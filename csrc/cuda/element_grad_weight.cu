// Grad-weight of the element-mask path on CUDA cores: an SDDMM in the manner of Sputnik.
//
// Only kept weights are computed: dw[o, i, r, s] = scale * sum over the N*OH*OW output
// pixels of dy[n, o, oh, ow] * x[n, g*Cin_g + i, oh*sh - ph + r*dh, ow*sw - pw + s*dw].
// A CTA takes one filter row o (rows longest first) and one of `splits` pixel ranges;
// it walks the row kEntries kept weights at a time, each thread reading groups of
// kGroup consecutive pixels (one dy load serves kEntries products per pixel), then
// reduces each weight over the CTA in a fixed order into a float (double) workspace.
// A second pass sums the splits in order, scales, and writes zero where keep is false,
// so the result depends on the shapes only, never on scheduling.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "element_common.cuh"
#include "element_lists.cuh"
#include "kernels.h"

namespace rskcnn::cuda {
namespace {

using namespace element;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kEntries = 16;  // kept weights reduced together
constexpr int kGroup = 4;     // consecutive pixels per thread step
constexpr int64_t kMinSplitPixels = 8192;
constexpr int64_t kCtasPerSm = 8;  // split until about this many CTAs per SM

// kPacked: OH*OW % kGroup == 0 and dy aligned, so a group is one packed dy load. The
// order of the sums does not depend on it.
template <typename scalar_t, bool kPacked>
__global__ void __launch_bounds__(kThreads)
    element_grad_weight_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                               const int32_t* __restrict__ entries,
                               const int32_t* __restrict__ counts,
                               const int32_t* __restrict__ order, ConvArgs a, ConvArgs32 a32,
                               int64_t splits, int64_t split_pixels,
                               at::acc_type<scalar_t, true>* __restrict__ partial) {
  using acc_t = at::acc_type<scalar_t, true>;
  // Per staged weight: r*dh, s*dw and the offset of x[n, g*Cin_g + i, ih0 + r*dh, iw0 + s*dw]
  // from x[n, g*Cin_g, ih0, iw0].
  __shared__ int s_dr[kEntries], s_ds[kEntries];
  __shared__ int64_t s_offset[kEntries];
  __shared__ acc_t s_warp_sum[kWarps][kEntries];

  const int64_t rank = blockIdx.x / splits;
  const int64_t split = blockIdx.x - rank * splits;
  const int64_t o = order[rank];
  const int32_t count = counts[o];
  const int taps = a32.kh * a32.kw;
  const int64_t row_len = a.cin_g * taps;  // the list's capacity and filter o's length
  const int32_t* row = entries + o * row_len;
  const int64_t group = o / (a.cout / a.groups);
  RSKCNN_DEVICE_ASSERT(o >= 0 && o < a.cout && count >= 0 && count <= row_len);
  const int64_t in_plane = int64_t{a32.h} * a32.w;
  const int64_t out_plane = int64_t{a32.oh} * a32.ow;
  const int64_t q_begin = split * split_pixels;
  const int64_t q_end = min_i64(a.n * out_plane, q_begin + split_pixels);
  acc_t* out = partial + (split * a.cout + o) * row_len;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  for (int32_t begin = 0; begin < count; begin += kEntries) {
    const int m = min(kEntries, count - begin);
    __syncthreads();  // the previous chunk's sums are read
    if (threadIdx.x < m) {
      const int32_t e = row[begin + threadIdx.x];
      RSKCNN_DEVICE_ASSERT(e >= 0 && e < row_len);
      const int i = e / taps;
      const int r = (e - i * taps) / a32.kw;
      const int s = e - i * taps - r * a32.kw;
      s_dr[threadIdx.x] = r * a32.dh;
      s_ds[threadIdx.x] = s * a32.dw;
      s_offset[threadIdx.x] = i * in_plane + int64_t{r * a32.dh} * a32.w + s * a32.dw;
    }
    __syncthreads();

    acc_t acc[kEntries] = {};
    for (int64_t q0 = q_begin + threadIdx.x * kGroup; q0 < q_end; q0 += kThreads * kGroup) {
      acc_t grad[kGroup];
      if constexpr (kPacked) {
        // Split bounds are multiples of kGroup and so is OH*OW: the group is whole and
        // lies in one image.
        const int64_t n = q0 / out_plane;
        const auto p = *reinterpret_cast<const Pack<scalar_t, kGroup>*>(
            dy + (n * a.cout + o) * out_plane + (q0 - n * out_plane));
#pragma unroll
        for (int t = 0; t < kGroup; ++t) grad[t] = static_cast<acc_t>(p.v[t]);
      } else {
#pragma unroll
        for (int t = 0; t < kGroup; ++t) {
          const int64_t q = q0 + t;
          const int64_t n = q / out_plane;
          grad[t] = q < q_end ? static_cast<acc_t>(dy[(n * a.cout + o) * out_plane + (q - n * out_plane)])
                              : acc_t(0);
        }
      }
#pragma unroll
      for (int t = 0; t < kGroup; ++t) {
        const int64_t q = q0 + t;
        if (!kPacked && q >= q_end) continue;
        const int64_t n = q / out_plane;
        const int pix = static_cast<int>(q - n * out_plane);
        const int oh = pix / a32.ow;
        const int ow = pix - oh * a32.ow;
        const int ih0 = oh * a32.sh - a32.ph, iw0 = ow * a32.sw - a32.pw;
        const int64_t corner =
            (n * a.cin + group * a.cin_g) * in_plane + int64_t{ih0} * a32.w + iw0;
#pragma unroll
        for (int k = 0; k < kEntries; ++k) {
          if (k >= m) break;
          const int ih = ih0 + s_dr[k], iw = iw0 + s_ds[k];
          if (static_cast<unsigned>(ih) < static_cast<unsigned>(a32.h) &&
              static_cast<unsigned>(iw) < static_cast<unsigned>(a32.w)) {
            acc[k] += grad[t] * static_cast<acc_t>(x[corner + s_offset[k]]);
          }
        }
      }
    }

    // Fixed-order reduction: a shuffle tree per warp, then the warps in order.
#pragma unroll
    for (int k = 0; k < kEntries; ++k) {
      if (k >= m) break;
      acc_t v = acc[k];
#pragma unroll
      for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(0xffffffffu, v, d);
      if (lane == 0) s_warp_sum[warp][k] = v;
    }
    __syncthreads();
    if (threadIdx.x < m) {
      acc_t total = 0;
#pragma unroll
      for (int wi = 0; wi < kWarps; ++wi) total += s_warp_sum[wi][threadIdx.x];
      out[row[begin + threadIdx.x]] = total;
    }
  }
}

// dw = scale * (sum of the splits, in order) where kept, exactly zero elsewhere; a
// dropped weight's workspace slot is never written and never read.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    finish_grad_weight_kernel(const at::acc_type<scalar_t, true>* __restrict__ partial,
                              const bool* __restrict__ keep, int64_t numel, int64_t splits,
                              at::acc_type<scalar_t, true> scale, scalar_t* __restrict__ dw) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t idx = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (idx >= numel) return;
  acc_t sum = 0;
  if (keep[idx]) {
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * numel + idx];
    sum *= scale;
  }
  dw[idx] = static_cast<scalar_t>(sum);
}

// Enough pixel ranges per row to give the GPU about kCtasPerSm CTAs per SM, each range
// at least kMinSplitPixels long. Depends on the shapes and the device only.
int64_t choose_splits(const ConvArgs& a, int64_t pixels) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = ceil_div(kCtasPerSm * sms, a.cout);
  const int64_t most = std::max<int64_t>(1, pixels / kMinSplitPixels);
  return std::clamp<int64_t>(wanted, 1, most);
}

template <typename scalar_t>
void launch(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& keep,
            const ElementRows& rows, const ConvArgs& a, const ConvArgs32& a32, double scale,
            const at::Tensor& dw) {
  using acc_t = at::acc_type<scalar_t, true>;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t out_plane = a.oh * a.ow;
  const int64_t pixels = a.n * out_plane;
  const int64_t splits = choose_splits(a, pixels);
  const int64_t split_pixels = ceil_div(ceil_div(pixels, splits), kGroup) * kGroup;
  const int64_t numel = dw.numel();
  check_grid(rows.rows * splits, "element_grad_weight");
  const at::Tensor partial = at::empty(
      {splits, numel}, dw.options().dtype(at::toAccumulateType(dw.scalar_type(), true)));
  acc_t* partial_ptr = partial.mutable_data_ptr<acc_t>();

  const scalar_t* dy_ptr = dy.const_data_ptr<scalar_t>();
  const auto kernel = can_pack<kGroup>(dy_ptr, out_plane)
                          ? element_grad_weight_kernel<scalar_t, true>
                          : element_grad_weight_kernel<scalar_t, false>;
  kernel<<<static_cast<unsigned>(rows.rows * splits), kThreads, 0, stream>>>(
      dy_ptr, x.const_data_ptr<scalar_t>(), rows.entries.const_data_ptr<int32_t>(),
      rows.counts.const_data_ptr<int32_t>(), rows.order.const_data_ptr<int32_t>(), a, a32, splits,
      split_pixels, partial_ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  finish_grad_weight_kernel<scalar_t>
      <<<static_cast<unsigned>(ceil_div(numel, kThreads)), kThreads, 0, stream>>>(
          partial_ptr, keep.const_data_ptr<bool>(), numel, splits, static_cast<acc_t>(scale),
          dw.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void element_grad_weight(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& keep,
                         const ConvArgs& a, double scale, const at::Tensor& dw) {
  TORCH_CHECK(dy.is_contiguous() && x.is_contiguous() && dw.is_contiguous(),
              "rskcnn: element_grad_weight needs contiguous tensors");
  if (dw.numel() == 0) return;
  if (a.n == 0) {  // no pixels: every gradient is an empty sum
    dw.zero_();
    return;
  }
  const ConvArgs32 a32 = narrow_element_conv_args(a);
  const ElementRows rows = plan_filter_rows(keep, a);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                  "rskcnn_element_grad_weight",
                                  [&] { launch<scalar_t>(dy, x, keep, rows, a, a32, scale, dw); });
}

}  // namespace rskcnn::cuda
