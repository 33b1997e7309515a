"""The static shape of one convolution, as the kernels take it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..functional import conv_out_extent


@dataclass(frozen=True)
class ConvGeometry:
    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, input_size, weight_size, stride, padding, dilation, groups) -> "ConvGeometry":
        n, cin, h, w = (int(s) for s in input_size)
        cout, _, kh, kw = (int(s) for s in weight_size)
        oh = conv_out_extent(h, kh, stride[0], padding[0], dilation[0])
        ow = conv_out_extent(w, kw, stride[1], padding[1], dilation[1])
        return cls(n, cin, h, w, cout, kh, kw, oh, ow, tuple(stride), tuple(padding), tuple(dilation), int(groups))

    @property
    def cin_g(self) -> int:
        return self.cin // self.groups

    @property
    def cout_g(self) -> int:
        return self.cout // self.groups

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    def conv_args(self) -> dict:
        """The geometry scalars every kernel takes, by their kernel argument names."""
        return dict(
            N=self.n, H=self.h, W=self.w, OH=self.oh, OW=self.ow, CIN_G=self.cin_g, COUT_G=self.cout_g,
            KW=self.kw, STRIDE_H=self.stride[0], STRIDE_W=self.stride[1], PAD_H=self.padding[0],
            PAD_W=self.padding[1], DIL_H=self.dilation[0], DIL_W=self.dilation[1],
        )


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """tl.dot's input precision: fp32 follows ``torch.backends.cudnn.allow_tf32`` as cuDNN does."""
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"
