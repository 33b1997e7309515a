// What the CUDA host code (conv.cpp) calls. Every function launches on the current
// stream of its tensors' device (the caller holds a device guard) and checks each
// launch with C10_CUDA_KERNEL_LAUNCH_CHECK. None of them syncs with the host.
//
// Shapes use the names of ConvArgs: N, Cin, H, W (input), Cout, Cin_g = Cin/groups,
// KH, KW (weight), OH, OW (output). Supported dtypes: float32, float64, float16, bfloat16;
// accumulation is in float32 (float64 for float64).
#pragma once

#include <ATen/ATen.h>

#include "../conv_args.h"
#include "../tile_steps.h"

namespace rskcnn::cuda {

// ---- plans (tile_steps.cu)

// Fills `plans` (allocated by allocate_tile_plans on the GPU) from mask (MO, MI, MH, MW).
void build_tile_plans(const at::Tensor& mask, const BlockMaskGeometry& g, TilePlans& plans);

// ---- tensor-core path for tap, filter and block masks (tiled_*.cu)
//
// x_nhwc, dy_nhwc: channels-last data, contiguous as (N, H, W, C).
// w_packed: (Cout, KH, KW, Cin_g) contiguous, masked weights already zeroed, input dtype.
// Each tile visits only the steps of its plan; a forward tile of dropped filters only
// writes the bias. use_tf32 matters for float32 only.

// y: (N, Cout, OH, OW) with any strides; bias undefined or (Cout,) contiguous.
void tiled_forward(const at::Tensor& x_nhwc, const at::Tensor& w_packed, const at::Tensor& bias,
                   const TilePlans& plans, const ConvArgs& a, double scale, bool use_tf32,
                   const at::Tensor& y);

// dx: (N, Cin, H, W) with any strides; every element is written.
void tiled_grad_input(const at::Tensor& dy_nhwc, const at::Tensor& w_packed,
                      const TilePlans& plans, const ConvArgs& a, double scale, bool use_tf32,
                      const at::Tensor& dx);

// dw_partial: (splits, Cout, KH, KW, Cin_g) contiguous, float32 (float64 for float64
// inputs), zero-filled by the caller. Split s reduces the output pixels
// [s * P / splits, (s + 1) * P / splits) with P = N * OH * OW; only the plan's steps are
// written. Unscaled and unmasked: the caller sums the splits, masks and scales.
void tiled_grad_weight(const at::Tensor& dy_nhwc, const at::Tensor& x_nhwc,
                       const TilePlans& plans, const ConvArgs& a, bool use_tf32,
                       const at::Tensor& dw_partial);

// ---- CUDA-core sparse path for element masks (element_*.cu)
//
// keep: (Cout, Cin_g, KH, KW) bool contiguous, one entry per weight. x, w, dy are
// contiguous NCHW / OIHW; the outputs are contiguous and every element is written.

// y: (N, Cout, OH, OW); bias undefined or (Cout,) contiguous.
void element_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                     const at::Tensor& keep, const ConvArgs& a, double scale, const at::Tensor& y);

// dx: (N, Cin, H, W).
void element_grad_input(const at::Tensor& dy, const at::Tensor& w, const at::Tensor& keep,
                        const ConvArgs& a, double scale, const at::Tensor& dx);

// dw: (Cout, Cin_g, KH, KW); exactly zero where keep is false.
void element_grad_weight(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& keep,
                         const ConvArgs& a, double scale, const at::Tensor& dw);

}  // namespace rskcnn::cuda
