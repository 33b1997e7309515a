// The geometry of a convolution, shared by every C++/CUDA backend on the host and the
// device: its extents (ConvArgs), the block-mask shape over its weight
// (BlockMaskGeometry), the integer arithmetic on both, and the one int32 form of the
// extents that the CUDA kernels index with (ConvArgs32, made by narrow_conv_args).
// Checking the arguments that produce a ConvArgs is conv_args.h's job.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>

#if defined(__CUDACC__)
#define RSKCNN_HOST_DEVICE __host__ __device__
#else
#define RSKCNN_HOST_DEVICE
#endif

namespace rskcnn {

RSKCNN_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

RSKCNN_HOST_DEVICE inline int64_t min_i64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Output extent of a convolution along one axis: input `in`, kernel `k`, stride `s`,
// padding `p` on each side, dilation `d`.
RSKCNN_HOST_DEVICE inline int64_t conv_out_extent(int64_t in, int64_t k, int64_t s, int64_t p,
                                                  int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

// A block mask over a weight (Cout, Cin_g, KH, KW) with block (bo, bi, bh, bw) has shape
// (MO, MI, MH, MW) = ceil(weight / block).
struct BlockMaskGeometry {
  int64_t cout, cin_g, kh, kw;  // weight shape
  int64_t bo, bi, bh, bw;       // block shape
  int64_t mo, mi, mh, mw;       // mask shape

  RSKCNN_HOST_DEVICE int64_t taps_per_block_row() const { return mi * mh * mw; }
  RSKCNN_HOST_DEVICE int64_t taps_per_block_column() const { return mo * mh * mw; }
};

RSKCNN_HOST_DEVICE inline BlockMaskGeometry make_geometry(
    int64_t cout, int64_t cin_g, int64_t kh, int64_t kw,
    int64_t bo, int64_t bi, int64_t bh, int64_t bw) {
  return BlockMaskGeometry{cout, cin_g, kh, kw, bo, bi, bh, bw,
                           ceil_div(cout, bo), ceil_div(cin_g, bi),
                           ceil_div(kh, bh), ceil_div(kw, bw)};
}

// Every extent of one convolution (made by make_conv_args of conv_args.h).
struct ConvArgs {
  int64_t n, cin, h, w;       // input
  int64_t cout, cin_g, kh, kw;  // weight
  int64_t oh, ow;             // output
  int64_t sh, sw, ph, pw, dh, dw, groups;
  BlockMaskGeometry mask;
};

// ConvArgs narrowed to int, so that the per-pixel and per-tap arithmetic of the CUDA
// kernels stays 32-bit; offsets into tensors are still computed in int64. Given the
// checks of narrow_conv_args, every sum the kernels form (oh*sh - ph + r*dh,
// ih + ph - r*dh) fits in an int.
struct ConvArgs32 {
  int n, h, w, cin, cin_g;
  int cout, cout_g, kh, kw;
  int oh, ow;
  int sh, sw, ph, pw, dh, dw;
};

// v as an int, after checking that it fits; `what` names it in the error.
inline int checked_int32(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, "rskcnn: the CUDA kernels need ", what,
              " to fit in int32, got ", v);
  return static_cast<int>(v);
}

// The one checked conversion from ConvArgs to ConvArgs32.
inline ConvArgs32 narrow_conv_args(const ConvArgs& a) {
  // Bounds every oh * sh - ph + r * dh and ih + ph the kernels form.
  checked_int32(a.h + 2 * a.ph + a.dh * a.kh + a.sh * a.oh, "the padded height");
  checked_int32(a.w + 2 * a.pw + a.dw * a.kw + a.sw * a.ow, "the padded width");
  const auto i32 = checked_int32;
  return ConvArgs32{i32(a.n, "N"),   i32(a.h, "H"),   i32(a.w, "W"),
                    i32(a.cin, "Cin"), i32(a.cin_g, "Cin/groups"),
                    i32(a.cout, "Cout"), i32(a.cout / a.groups, "Cout/groups"),
                    i32(a.kh, "KH"), i32(a.kw, "KW"),
                    i32(a.oh, "OH"), i32(a.ow, "OW"),
                    i32(a.sh, "stride"), i32(a.sw, "stride"), i32(a.ph, "padding"),
                    i32(a.pw, "padding"), i32(a.dh, "dilation"), i32(a.dw, "dilation")};
}

}  // namespace rskcnn
