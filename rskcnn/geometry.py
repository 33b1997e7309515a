"""Shape arithmetic of a convolution and of its block mask: the bottom of the package.

Every other module (the functional API, the op rules, the backends, the Triton kernels)
takes these from here; this module imports nothing of rskcnn's, so it can never close an
import loop. Its C++ twin is ``csrc/conv_geometry.h``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints, ``b > 0`` (works for SymInts too)."""
    return -(-a // b)


def conv_out_extent(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output extent of a convolution along one dimension, as ``F.conv2d`` computes it."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def mask_shape_of(weight_shape: Sequence[int], block: Sequence[int]) -> tuple[int, int, int, int]:
    """``ceil(weight_shape / block)`` elementwise, unchecked: the shape of a block mask
    ``(MO, MI, MH, MW)`` over a weight ``(Cout, Cin/groups, KH, KW)``. Validating wrappers:
    :func:`rskcnn.mask_shape` (Python errors) and the ops' fake kernels."""
    return tuple(ceil_div(s, b) for s, b in zip(weight_shape, block))  # type: ignore[return-value]


def conv_output_shape(input_size, weight_size, stride, padding, dilation) -> tuple:
    """``(N, Cout, OH, OW)`` of a convolution of ``(N, Cin, H, W)`` by ``(Cout, Cin/groups, KH, KW)``
    with symmetric int ``padding``; an extent below 1 means the kernel does not fit."""
    n, _, h, w = input_size
    cout, _, kh, kw = weight_size
    oh = conv_out_extent(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_extent(w, kw, stride[1], padding[1], dilation[1])
    return (n, cout, oh, ow)


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    """The memory format an op's output takes from the tensor it follows (channels_last in,
    channels_last out); the rule of ``follow_memory_format`` in ``csrc/conv_args.h``, so
    fake and real strides agree."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


@dataclass(frozen=True)
class ConvGeometry:
    """The static shape of one 2-D convolution, as the kernels take it.

    input ``(n, cin, h, w)``, weight ``(cout, cin/groups, kh, kw)``, output ``(n, cout, oh, ow)``.
    """

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
