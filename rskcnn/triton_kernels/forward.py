"""Forward: an implicit GEMM ``Y[pixels, Cout] = X_im2col[pixels, K] @ W[K, Cout]`` per conv
group, whose K loop visits only the kept (tap, input-channel chunk) steps of its output tile."""

from __future__ import annotations

import triton
import triton.language as tl

from . import configs
from .configs import Tiles
from ..geometry import ConvGeometry
from .tile_steps import mask_at, mask_args, mask_bytes


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, mask_ptr, b_ptr, y_ptr, order_ptr, steps_ptr, counts_ptr, scale,
    sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW,
    N, H, W, OH, OW, CIN_G, COUT_G, KW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    sx_n, sx_c, sx_h, sx_w, sw_o, sw_c, sw_h, sw_w, sy_n, sy_c, sy_h, sy_w,
    N_TILES, N_CHUNKS, MAX_STEPS, KEPT_TENTHS,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    tile_id = tl.program_id(1)  # group * N_TILES + output-channel tile
    group = tile_id // N_TILES
    tile = tile_id % N_TILES

    pixels = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pixel_ok = pixels < N * OH * OW
    n = pixels // (OH * OW)
    oh = (pixels // OW) % OH
    ow = pixels % OW

    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < COUT_G
    cout = tl.load(order_ptr + group * COUT_G + cols, mask=col_ok, other=0)
    chunk = tl.arange(0, BLOCK_K)
    x_base = x_ptr + n * sx_n + (group * CIN_G) * sx_c

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    count = tl.load(counts_ptr + tile_id)
    for i in range(0, count):
        step = tl.load(steps_ptr + tile_id * MAX_STEPS + i)
        tap = step // N_CHUNKS
        kh = tap // KW
        kw = tap % KW
        cin = (step % N_CHUNKS) * BLOCK_K + chunk
        cin_ok = cin < CIN_G
        ih = oh * STRIDE_H - PAD_H + kh * DIL_H
        iw = ow * STRIDE_W - PAD_W + kw * DIL_W
        in_ok = pixel_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x = tl.load(x_base[:, None] + ih[:, None] * sx_h + iw[:, None] * sx_w + cin[None, :] * sx_c,
                    mask=in_ok[:, None] & cin_ok[None, :], other=0.0)
        w_ok = cin_ok[:, None] & col_ok[None, :]
        w = tl.load(w_ptr + cout[None, :] * sw_o + cin[:, None] * sw_c + kh * sw_h + kw * sw_w, mask=w_ok, other=0.0)
        keep = tl.load(mask_at(mask_ptr, cout[None, :], cin[:, None], kh, kw, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW),
                       mask=w_ok, other=0)
        acc = tl.dot(x, tl.where(keep != 0, w, 0.0), acc, input_precision=PRECISION)

    acc = acc * scale
    if HAS_BIAS:
        acc += tl.load(b_ptr + cout, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    y = y_ptr + n[:, None] * sy_n + cout[None, :] * sy_c + oh[:, None] * sy_h + ow[:, None] * sy_w
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & col_ok[None, :])


def launch_forward(x, w, mask, block, scale: float, bias, y, order, steps, counts, geo: ConvGeometry, tiles: Tiles,
                   precision: str, kept_tenths: int = 0) -> None:
    """``y (N, Cout, OH, OW)`` from ``x (N, Cin, H, W)``, ``w (Cout, Cin_g, KH, KW)`` and its block
    ``mask`` (masked weights are never multiplied); ``order``/``steps``/``counts`` from
    :func:`rskcnn.triton_kernels.tile_steps.forward_plan` with the same tiles."""
    mask8 = mask_bytes(mask)
    n_tiles = triton.cdiv(geo.cout_g, tiles.block_n)
    pixels = geo.n * geo.oh * geo.ow
    args = dict(
        **mask_args(mask8, block), **geo.conv_args(),
        sx_n=x.stride(0), sx_c=x.stride(1), sx_h=x.stride(2), sx_w=x.stride(3),
        sw_o=w.stride(0), sw_c=w.stride(1), sw_h=w.stride(2), sw_w=w.stride(3),
        sy_n=y.stride(0), sy_c=y.stride(1), sy_h=y.stride(2), sy_w=y.stride(3),
        N_TILES=n_tiles, N_CHUNKS=triton.cdiv(geo.cin_g, tiles.block_k), MAX_STEPS=steps.shape[1],
        KEPT_TENTHS=kept_tenths, HAS_BIAS=bias is not None, PRECISION=precision,
        BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
    )
    tensors = (x, w, mask8, bias.contiguous() if bias is not None else y, y, order, steps, counts,
               scale)
    grid = lambda block_m: (triton.cdiv(pixels, block_m), geo.groups * n_tiles)  # noqa: E731
    configs.launch(_forward_kernel, "BLOCK_M", grid, tiles, tensors, args)
