// Argument checking shared by the host side of every backend: each check names the
// argument and the value it expected. The geometry it produces is conv_geometry.h's.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "conv_geometry.h"

namespace rskcnn {

// The block-mask geometry of a weight, after checking that mask matches it.
inline BlockMaskGeometry make_mask_geometry(at::IntArrayRef weight_size, const at::Tensor& mask,
                                            at::IntArrayRef block) {
  TORCH_CHECK(weight_size.size() == 4, "rskcnn: weight must be 4-D (Cout, Cin/groups, KH, KW), got ",
              weight_size.size(), "-D");
  TORCH_CHECK(block.size() == 4, "rskcnn: block must have 4 elements, got ", block.size());
  for (auto b : block) {
    TORCH_CHECK(b > 0, "rskcnn: block entries must be positive, got ", block);
  }
  for (auto s : weight_size) {
    TORCH_CHECK(s >= 0, "rskcnn: weight sizes must be non-negative, got ", weight_size);
  }
  const BlockMaskGeometry g = make_geometry(weight_size[0], weight_size[1], weight_size[2],
                                            weight_size[3], block[0], block[1], block[2], block[3]);
  TORCH_CHECK(mask.scalar_type() == at::kBool, "rskcnn: mask must be torch.bool, got ",
              mask.scalar_type());
  const std::vector<int64_t> expected{g.mo, g.mi, g.mh, g.mw};
  TORCH_CHECK(mask.sizes() == at::IntArrayRef(expected), "rskcnn: mask must have shape ",
              at::IntArrayRef(expected), " = ceil(weight shape / block), got ", mask.sizes());
  return g;
}

// Validates everything but the tensors' data and returns the geometry.
inline ConvArgs make_conv_args(
    at::IntArrayRef input_size, at::IntArrayRef weight_size, const at::Tensor& mask,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, at::IntArrayRef block) {
  TORCH_CHECK(input_size.size() == 4, "rskcnn: input must be 4-D (N, C, H, W), got ",
              input_size.size(), "-D");
  TORCH_CHECK(weight_size.size() == 4, "rskcnn: weight must be 4-D (Cout, Cin/groups, KH, KW), got ",
              weight_size.size(), "-D");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "rskcnn: stride, padding and dilation must have 2 elements");
  TORCH_CHECK(block.size() == 4, "rskcnn: block must have 4 elements, got ", block.size());
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, "rskcnn: stride must be positive, got ", stride);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, "rskcnn: dilation must be positive, got ", dilation);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, "rskcnn: padding must be non-negative, got ", padding);
  TORCH_CHECK(groups > 0, "rskcnn: groups must be positive, got ", groups);
  for (auto b : block) {
    TORCH_CHECK(b > 0, "rskcnn: block entries must be positive, got ", block);
  }

  ConvArgs a{};
  a.n = input_size[0]; a.cin = input_size[1]; a.h = input_size[2]; a.w = input_size[3];
  a.cout = weight_size[0]; a.cin_g = weight_size[1]; a.kh = weight_size[2]; a.kw = weight_size[3];
  a.sh = stride[0]; a.sw = stride[1];
  a.ph = padding[0]; a.pw = padding[1];
  a.dh = dilation[0]; a.dw = dilation[1];
  a.groups = groups;

  // An empty reduction (no input channel or tap) has no kept weight to plan around.
  TORCH_CHECK(a.cin_g > 0 && a.kh > 0 && a.kw > 0,
              "rskcnn: weight must have Cin/groups, KH and KW all >= 1, got weight shape ", weight_size);
  TORCH_CHECK(a.cin == a.cin_g * groups, "rskcnn: input has ", a.cin,
              " channels but weight expects Cin/groups * groups = ", a.cin_g, " * ", groups,
              " = ", a.cin_g * groups);
  TORCH_CHECK(a.cout % groups == 0, "rskcnn: weight.size(0) = ", a.cout,
              " must be divisible by groups = ", groups);
  a.oh = conv_out_extent(a.h, a.kh, a.sh, a.ph, a.dh);
  a.ow = conv_out_extent(a.w, a.kw, a.sw, a.pw, a.dw);
  TORCH_CHECK(a.oh > 0 && a.ow > 0, "rskcnn: kernel (", a.kh, ", ", a.kw, ") with dilation ",
              dilation, " is larger than the padded input (", a.h + 2 * a.ph, ", ",
              a.w + 2 * a.pw, ")");

  a.mask = make_mask_geometry(weight_size, mask, block);
  return a;
}

// The memory format an output takes from the tensor it follows.
inline at::MemoryFormat follow_memory_format(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

inline void check_same_device_dtype(const at::Tensor& ref, const at::Tensor& t, const char* name,
                                    const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "rskcnn: ", name, " is on ", t.device(), " but ",
              ref_name, " is on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "rskcnn: ", name, " has dtype ",
              t.scalar_type(), " but ", ref_name, " has dtype ", ref.scalar_type());
}


// grad_output must have the output shape (N, Cout, OH, OW) of the convolution.
inline void check_grad_output_shape(const at::Tensor& grad_output, const ConvArgs& a) {
  const std::vector<int64_t> expected{a.n, a.cout, a.oh, a.ow};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), "rskcnn: grad_output must have shape ",
              at::IntArrayRef(expected), ", got ", grad_output.sizes());
}

// The bias, checked against input and Cout and made contiguous; undefined without one.
inline at::Tensor checked_bias(const std::optional<at::Tensor>& bias, const at::Tensor& input,
                               int64_t cout) {
  if (!bias.has_value()) return at::Tensor();
  check_same_device_dtype(input, *bias, "bias", "input");
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == cout, "rskcnn: bias must have shape (", cout,
              ",), got ", bias->sizes());
  return bias->contiguous();
}

}  // namespace rskcnn
