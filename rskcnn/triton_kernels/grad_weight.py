"""Grad-weight: per (group, ordered output-channel tile, input-channel tile, tap) a GEMM
``dW[Cout_tile, Cin_tile] = dY[Cout_tile, pixels] @ X_shifted[pixels, Cin_tile]`` over all
N*OH*OW pixels. A tile without a kept weight (read from the mask by the program itself) runs
zero iterations and stores zeros, and every result is multiplied by the mask and the scale,
so a masked weight's gradient is exactly 0."""

from __future__ import annotations

import triton
import triton.language as tl

from . import configs
from .configs import Tiles
from ..geometry import ConvGeometry
from .tile_steps import mask_at, mask_args, mask_bytes


@triton.jit
def _grad_weight_kernel(
    dy_ptr, x_ptr, mask_ptr, dw_ptr, order_ptr, scale,
    sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW,
    N, H, W, OH, OW, CIN_G, COUT_G, KW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    sd_n, sd_c, sd_h, sd_w, sx_n, sx_c, sx_h, sx_w, sg_o, sg_c, sg_h, sg_w,
    O_TILES, C_TILES, TAPS, KEPT_TENTHS,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)  # ((group * O_TILES + o_tile) * C_TILES + c_tile) * TAPS + tap
    tap = pid % TAPS
    c_tile = (pid // TAPS) % C_TILES
    o_tile = (pid // (TAPS * C_TILES)) % O_TILES
    group = pid // (TAPS * C_TILES * O_TILES)
    kh = tap // KW
    kw = tap % KW

    rank = o_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    rank_ok = rank < COUT_G
    cout = tl.load(order_ptr + group * COUT_G + rank, mask=rank_ok, other=0)
    cin = c_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    cin_ok = cin < CIN_G
    lane = tl.arange(0, BLOCK_K)

    ok = rank_ok[:, None] & cin_ok[None, :]
    keep = tl.load(mask_at(mask_ptr, cout[:, None], cin[None, :], kh, kw, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW),
                   mask=ok, other=0).to(tl.float32)
    pixel_count = N * OH * OW
    iterations = tl.where(tl.max(keep) > 0, tl.cdiv(pixel_count, BLOCK_K), 0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(0, iterations):
        pixels = i * BLOCK_K + lane
        pixel_ok = pixels < pixel_count
        n = pixels // (OH * OW)
        oh = (pixels // OW) % OH
        ow = pixels % OW
        ih = oh * STRIDE_H - PAD_H + kh * DIL_H
        iw = ow * STRIDE_W - PAD_W + kw * DIL_W
        in_ok = pixel_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        dy = tl.load(dy_ptr + cout[:, None] * sd_c + (n * sd_n + oh * sd_h + ow * sd_w)[None, :],
                     mask=rank_ok[:, None] & pixel_ok[None, :], other=0.0)
        x = tl.load(x_ptr + (n * sx_n + ih * sx_h + iw * sx_w)[:, None] + (group * CIN_G + cin)[None, :] * sx_c,
                    mask=in_ok[:, None] & cin_ok[None, :], other=0.0)
        acc = tl.dot(dy, x, acc, input_precision=PRECISION)

    dw = dw_ptr + cout[:, None] * sg_o + cin[None, :] * sg_c + kh * sg_h + kw * sg_w
    tl.store(dw, (acc * scale * keep).to(dw_ptr.dtype.element_ty), mask=ok)


def launch_grad_weight(dy, x, mask, block, scale: float, dw, order, geo: ConvGeometry, tiles: Tiles,
                       precision: str, kept_tenths: int = 0) -> None:
    """``dw (Cout, Cin_g, KH, KW)`` from ``dy (N, Cout, OH, OW)`` and ``x (N, Cin, H, W)``, times the
    block ``mask`` and ``scale``; ``order`` from :func:`rskcnn.triton_kernels.tile_steps.channel_order`."""
    mask8 = mask_bytes(mask)
    o_tiles, c_tiles = triton.cdiv(geo.cout_g, tiles.block_m), triton.cdiv(geo.cin_g, tiles.block_n)
    args = dict(
        **mask_args(mask8, block), **geo.conv_args(),
        sd_n=dy.stride(0), sd_c=dy.stride(1), sd_h=dy.stride(2), sd_w=dy.stride(3),
        sx_n=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        sg_o=dw.stride(0), sg_c=dw.stride(1), sg_h=dw.stride(2), sg_w=dw.stride(3),
        O_TILES=o_tiles, C_TILES=c_tiles, TAPS=geo.taps, KEPT_TENTHS=kept_tenths,
        PRECISION=precision, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
    )
    tensors = (dy, x, mask8, dw, order, scale)
    grid = lambda block_k: (geo.groups * o_tiles * c_tiles * geo.taps,)  # noqa: E731  (pixels are the K loop)
    configs.launch(_grad_weight_kernel, "BLOCK_K", grid, tiles, tensors, args)
