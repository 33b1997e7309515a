// The CUDA kernels of the rskcnn ops: argument checks, the device guard, and the
// choice between the tensor-core tiles (tap, filter, block masks) and the sparse lists
// (element masks). Everything here is tensor ops on the device; nothing syncs.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include <optional>

#include "../conv_args.h"
#include "../op_kernels.h"
#include "../tile_steps.h"
#include "kernels.h"

namespace rskcnn::cuda {
namespace {

void check_cuda_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "rskcnn cuda backend: ", name, " must be a CUDA tensor, got ", t.device());
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "rskcnn cuda backend: ", name, " must be float32, float64, float16 or bfloat16, got ",
              dtype);
}

// The checks every op makes first, in this order: `data` (input or grad_output) is a CUDA
// float tensor, `other` (weight or input) has its device and dtype, and the mask is on its
// device.
void check_op_tensors(const at::Tensor& data, const char* data_name, const at::Tensor& other,
                      const char* other_name, const at::Tensor& mask) {
  check_cuda_float_tensor(data, data_name);
  check_same_device_dtype(data, other, other_name, data_name);
  TORCH_CHECK(mask.device() == data.device(), "rskcnn cuda backend: mask is on ", mask.device(),
              " but the data is on ", data.device());
}

// Runs `write` (an element kernel, which writes contiguous NCHW) on `out`, or on a
// contiguous temporary that is then copied into a channels-last `out`.
template <class Write>
void write_contiguous(const at::Tensor& out, const Write& write) {
  const at::Tensor dst = out.is_contiguous() ? out : at::empty_like(out, at::MemoryFormat::Contiguous);
  write(dst);
  if (!dst.is_same(out)) out.copy_(dst);
}

// Element-sized input blocks go to the sparse lists; blocks of 8 or more input channels
// (or whole filters) fill tensor-core steps.
bool use_tiles(const ConvArgs& a) {
  return a.mask.bi >= 8 || a.mask.bi >= a.cin_g;
}

bool use_tf32(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && at::globalContext().allowTF32CuDNN();
}

// (Cout, Cin_g, KH, KW) bool: mask expanded to one entry per weight.
at::Tensor expand_mask(const at::Tensor& mask, const ConvArgs& a) {
  const BlockMaskGeometry& g = a.mask;
  return mask.reshape({g.mo, 1, g.mi, 1, g.mh, 1, g.mw, 1})
      .expand({g.mo, g.bo, g.mi, g.bi, g.mh, g.bh, g.mw, g.bw})
      .reshape({g.mo * g.bo, g.mi * g.bi, g.mh * g.bh, g.mw * g.bw})
      .slice(0, 0, a.cout).slice(1, 0, a.cin_g).slice(2, 0, a.kh).slice(3, 0, a.kw);
}

TilePlans make_plans(const at::Tensor& mask, const ConvArgs& a) {
  const auto [shape, reorder] = choose_tile_shape(a.mask);
  TilePlans plans = allocate_tile_plans(mask, a.mask, a.groups, shape, reorder);
  build_tile_plans(mask, a.mask, plans);
  return plans;
}

// (Cout, KH, KW, Cin_g) contiguous; row p is output channel order[p], masked weights are 0
// (so a NaN there never reaches a product).
at::Tensor pack_weight(const at::Tensor& weight, const at::Tensor& mask, const ConvArgs& a,
                       const TilePlans& plans) {
  const at::Tensor masked = weight.masked_fill(expand_mask(mask, a).logical_not(), 0).permute({0, 2, 3, 1});
  return (plans.reorder ? masked.index_select(0, plans.order) : masked).contiguous();
}

// (N, OH, OW, Cout) contiguous; channel slot p holds output channel order[p].
at::Tensor pack_grad_output(const at::Tensor& grad_output, const TilePlans& plans) {
  const at::Tensor nhwc = grad_output.permute({0, 2, 3, 1});
  return (plans.reorder ? nhwc.index_select(3, plans.order) : nhwc).contiguous();
}

// (N, H, W, C) contiguous, a view of channels-last data.
at::Tensor nhwc(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});
}

// Splits of the grad-weight pixel reduction: enough CTAs for two waves over the SMs,
// each split still reducing at least 1024 pixels, at most 16 (the fp32 workspace grows
// with the count).
int64_t grad_weight_splits(const ConvArgs& a, const TilePlans& plans) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t boxes = std::max<int64_t>(1, a.groups * plans.out_tiles * plans.out_capacity);
  const int64_t pixels = a.n * a.oh * a.ow;
  const int64_t wanted = ceil_div(2 * int64_t{sms}, boxes);
  return std::max<int64_t>(1, std::min<int64_t>({wanted, ceil_div(pixels, 1024), 16}));
}

}  // namespace

at::Tensor masked_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         at::IntArrayRef block, double scale) {
  check_op_tensors(input, "input", weight, "weight", mask);
  const c10::cuda::CUDAGuard guard(input.device());
  const ConvArgs a = make_conv_args(input.sizes(), weight.sizes(), mask, stride, padding, dilation,
                                    groups, block);
  const at::Tensor bias_c = checked_bias(bias, input, a.cout);
  at::Tensor output = at::empty({a.n, a.cout, a.oh, a.ow},
                                input.options().memory_format(follow_memory_format(input)));
  if (output.numel() == 0) return output;

  if (use_tiles(a)) {
    const TilePlans plans = make_plans(mask, a);
    tiled_forward(nhwc(input), pack_weight(weight, mask, a, plans), bias_c, plans, a, scale,
                  use_tf32(input), output);
    return output;
  }
  write_contiguous(output, [&](const at::Tensor& y) {
    element_forward(input.contiguous(), weight.contiguous(), bias_c, expand_mask(mask, a).contiguous(),
                    a, scale, y);
  });
  return output;
}

at::Tensor masked_conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                    const at::Tensor& mask, at::IntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    at::IntArrayRef block, double scale) {
  check_op_tensors(grad_output, "grad_output", weight, "weight", mask);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const ConvArgs a = make_conv_args(input_size, weight.sizes(), mask, stride, padding, dilation,
                                    groups, block);
  check_grad_output_shape(grad_output, a);
  at::Tensor grad_input = at::empty(input_size, grad_output.options().memory_format(
                                                    follow_memory_format(grad_output)));
  if (grad_input.numel() == 0) return grad_input;
  if (grad_output.numel() == 0) return grad_input.zero_();

  if (use_tiles(a)) {
    const TilePlans plans = make_plans(mask, a);
    tiled_grad_input(pack_grad_output(grad_output, plans), pack_weight(weight, mask, a, plans), plans,
                     a, scale, use_tf32(grad_output), grad_input);
    return grad_input;
  }
  write_contiguous(grad_input, [&](const at::Tensor& dx) {
    element_grad_input(grad_output.contiguous(), weight.contiguous(), expand_mask(mask, a).contiguous(),
                       a, scale, dx);
  });
  return grad_input;
}

at::Tensor masked_conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mask, at::IntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     at::IntArrayRef block, double scale) {
  check_op_tensors(grad_output, "grad_output", input, "input", mask);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const ConvArgs a = make_conv_args(input.sizes(), weight_size, mask, stride, padding, dilation,
                                    groups, block);
  check_grad_output_shape(grad_output, a);
  if (grad_output.numel() == 0 || input.numel() == 0) {
    return at::zeros(weight_size, grad_output.options());
  }

  if (use_tiles(a)) {
    const TilePlans plans = make_plans(mask, a);
    const auto acc = grad_output.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor partial = at::zeros(
        {grad_weight_splits(a, plans), a.cout, a.kh, a.kw, a.cin_g}, grad_output.options().dtype(acc));
    tiled_grad_weight(pack_grad_output(grad_output, plans), nhwc(input), plans, a,
                      use_tf32(grad_output), partial);
    const at::Tensor summed = partial.sum(0).permute({0, 3, 1, 2}).mul(scale);
    return summed.masked_fill(expand_mask(mask, a).logical_not(), 0)
        .to(grad_output.scalar_type())
        .contiguous();
  }
  at::Tensor grad_weight = at::empty(weight_size, grad_output.options());
  element_grad_weight(grad_output.contiguous(), input.contiguous(), expand_mask(mask, a).contiguous(),
                      a, scale, grad_weight);
  return grad_weight;
}

}  // namespace rskcnn::cuda
