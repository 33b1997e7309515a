"""Grad-input: an implicit GEMM ``dX[pixels, Cin_g] = dY_gathered[pixels, K] @ W[K, Cin_g]`` per
conv group, K over (tap, output-channel chunk), visiting only the kept steps of each
input-channel tile. Output channels are read in the planned order, so the chunks of dropped
filters are empty and skipped."""

from __future__ import annotations

import triton
import triton.language as tl

from . import configs
from .configs import Tiles
from ..geometry import ConvGeometry
from .tile_steps import mask_at, mask_args, mask_bytes


@triton.jit
def _grad_input_kernel(
    dy_ptr, w_ptr, mask_ptr, dx_ptr, order_ptr, steps_ptr, counts_ptr, scale,
    sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW,
    N, H, W, OH, OW, CIN_G, COUT_G, KW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    sd_n, sd_c, sd_h, sd_w, sw_o, sw_c, sw_h, sw_w, sx_n, sx_c, sx_h, sx_w,
    N_TILES, N_CHUNKS, MAX_STEPS, KEPT_TENTHS,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    tile_id = tl.program_id(1)  # group * N_TILES + input-channel tile
    group = tile_id // N_TILES
    tile = tile_id % N_TILES

    pixels = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pixel_ok = pixels < N * H * W
    n = pixels // (H * W)
    ih = (pixels // W) % H
    iw = pixels % W

    cin = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    cin_ok = cin < CIN_G
    chunk = tl.arange(0, BLOCK_K)
    dy_base = dy_ptr + n * sd_n

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    count = tl.load(counts_ptr + tile_id)
    for i in range(0, count):
        step = tl.load(steps_ptr + tile_id * MAX_STEPS + i)
        tap = step // N_CHUNKS
        kh = tap // KW
        kw = tap % KW
        rank = (step % N_CHUNKS) * BLOCK_K + chunk
        rank_ok = rank < COUT_G
        cout = tl.load(order_ptr + group * COUT_G + rank, mask=rank_ok, other=0)
        # Input pixel ih receives from output row oh where oh*stride = ih + pad - kh*dil.
        th = ih + PAD_H - kh * DIL_H
        tw = iw + PAD_W - kw * DIL_W
        oh = th // STRIDE_H
        ow = tw // STRIDE_W
        from_ok = (pixel_ok & (th >= 0) & (tw >= 0) & (th % STRIDE_H == 0) & (tw % STRIDE_W == 0)
                   & (oh < OH) & (ow < OW))
        dy = tl.load(dy_base[:, None] + oh[:, None] * sd_h + ow[:, None] * sd_w + cout[None, :] * sd_c,
                     mask=from_ok[:, None] & rank_ok[None, :], other=0.0)
        w_ok = rank_ok[:, None] & cin_ok[None, :]
        w = tl.load(w_ptr + cout[:, None] * sw_o + cin[None, :] * sw_c + kh * sw_h + kw * sw_w, mask=w_ok, other=0.0)
        keep = tl.load(mask_at(mask_ptr, cout[:, None], cin[None, :], kh, kw, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW),
                       mask=w_ok, other=0)
        acc = tl.dot(dy, tl.where(keep != 0, w, 0.0), acc, input_precision=PRECISION)

    acc = acc * scale

    dx = (dx_ptr + n[:, None] * sx_n + (group * CIN_G + cin)[None, :] * sx_c
          + ih[:, None] * sx_h + iw[:, None] * sx_w)
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & cin_ok[None, :])


def launch_grad_input(dy, w, mask, block, scale: float, dx, order, steps, counts, geo: ConvGeometry, tiles: Tiles,
                      precision: str, kept_tenths: int = 0) -> None:
    """``dx (N, Cin, H, W)`` from ``dy (N, Cout, OH, OW)``, ``w`` and its block ``mask``; every
    element of ``dx`` is written. Plan from :func:`rskcnn.triton_kernels.tile_steps.grad_input_plan`."""
    mask8 = mask_bytes(mask)
    n_tiles = triton.cdiv(geo.cin_g, tiles.block_n)
    pixels = geo.n * geo.h * geo.w
    args = dict(
        **mask_args(mask8, block), **geo.conv_args(),
        sd_n=dy.stride(0), sd_c=dy.stride(1), sd_h=dy.stride(2), sd_w=dy.stride(3),
        sw_o=w.stride(0), sw_c=w.stride(1), sw_h=w.stride(2), sw_w=w.stride(3),
        sx_n=dx.stride(0), sx_c=dx.stride(1), sx_h=dx.stride(2), sx_w=dx.stride(3),
        N_TILES=n_tiles, N_CHUNKS=triton.cdiv(geo.cout_g, tiles.block_k), MAX_STEPS=steps.shape[1],
        KEPT_TENTHS=kept_tenths, PRECISION=precision, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
    )
    tensors = (dy, w, mask8, dx, order, steps, counts, scale)
    grid = lambda block_m: (triton.cdiv(pixels, block_m), geo.groups * n_tiles)  # noqa: E731
    configs.launch(_grad_input_kernel, "BLOCK_M", grid, tiles, tensors, args)
