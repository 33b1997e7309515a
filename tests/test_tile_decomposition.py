"""The decomposition the CUDA tensor-core kernels compute, done here in float64 with torch:
each tile of the channel order visits only its planned (tap, 32-channel chunk) steps, on the
weight and grad_output permuted into the order (csrc/cuda/conv.cpp's packing), and the result
must be the full masked convolution. This checks on the CPU that the shared planners of
csrc/block_mask.h (through rskcnn::plan_tiles) never leave out a kept weight, and that the
position-space contract of csrc/cuda/kernels.h adds up, for every granularity that takes tiles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn.masks import expand_mask

from conftest import requires_cpu_ops

pytestmark = requires_cpu_ops
CHUNK = 32


def decode(e: int, chunks: int, kw: int) -> tuple[int, int, int]:
    tap, c = divmod(e, chunks)
    return tap // kw, tap % kw, c


def run_case(n, cin, cout, size, kernel, stride, padding, dilation, groups, block, keep, tiles, reorder):
    kh, kw = kernel
    cin_g, cout_g = cin // groups, cout // groups
    x = torch.randn(n, cin, *size, dtype=torch.float64)
    w = torch.randn(cout, cin_g, kh, kw, dtype=torch.float64)
    b = torch.randn(cout, dtype=torch.float64)
    mask = rskcnn.sample_mask(w.shape, keep, block)
    kept = expand_mask(mask, block, w.shape)
    w_masked = w.masked_fill(~kept, 0)
    out_tile, in_tile = tiles
    order, out_e, out_c, in_e, in_c = torch.ops.rskcnn.plan_tiles(
        mask, list(w.shape), groups, list(block), [out_tile, CHUNK, in_tile, CHUNK], reorder)
    order = order.long()
    conv = dict(stride=stride, padding=padding, dilation=dilation)

    # What the host packs: weight rows and grad_output channels in position order.
    packed = w_masked.permute(0, 2, 3, 1)[order]                      # (Cout, KH, KW, Cin_g)
    cols = F.unfold(x, kernel, **conv).view(n, cin, kh, kw, -1)        # (N, Cin, KH, KW, L)
    y_ref = F.conv2d(x, w_masked, b, groups=groups, **conv)
    oh, ow = y_ref.shape[2:]
    dy = torch.randn_like(y_ref)
    dy_pos = dy.flatten(2)[:, order]                                   # (N, Cout, L), slot = position

    # Forward tiles: positions of the order x the steps of the tile's plan.
    y = torch.zeros(n, cout, oh * ow, dtype=torch.float64)
    out_tiles = -(-cout_g // out_tile)
    chunks_in = -(-cin_g // CHUNK)
    dw = torch.full_like(w, float("nan"))  # written only inside planned boxes
    for t in range(groups * out_tiles):
        gi, tn = divmod(t, out_tiles)
        pos = torch.arange(gi * cout_g + tn * out_tile, min(gi * cout_g + (tn + 1) * out_tile, (gi + 1) * cout_g))
        acc = torch.zeros(n, len(pos), oh * ow, dtype=torch.float64)
        for e in out_e[t, : out_c[t]].tolist():
            r, s, c = decode(e, chunks_in, kw)
            ch = torch.arange(c * CHUNK, min((c + 1) * CHUNK, cin_g))
            a = cols[:, gi * cin_g + ch, r, s]                           # (N, chunk, L)
            acc += torch.einsum("pc,ncl->npl", packed[pos][:, r, s][:, ch], a)
            # grad-weight visits the same boxes (tile x step), over all output pixels.
            dw[order[pos][:, None], ch[None, :], r, s] = torch.einsum("npl,ncl->pc", dy_pos[:, pos], a)
        y[:, order[pos]] = acc + b[order[pos], None]
    torch.testing.assert_close(y.view_as(y_ref), y_ref, rtol=1e-10, atol=1e-10)

    # Grad-input tiles: input channels x the steps (tap, chunk of positions) of the tile's plan.
    dcols = torch.zeros_like(cols)
    in_tiles = -(-cin_g // in_tile)
    chunks_out = -(-cout_g // CHUNK)
    for t in range(groups * in_tiles):
        gi, ti = divmod(t, in_tiles)
        ch = torch.arange(ti * in_tile, min((ti + 1) * in_tile, cin_g))
        for e in in_e[t, : in_c[t]].tolist():
            r, s, c = decode(e, chunks_out, kw)
            pos = gi * cout_g + torch.arange(c * CHUNK, min((c + 1) * CHUNK, cout_g))
            dcols[:, gi * cin_g + ch, r, s] += torch.einsum("pc,npl->ncl", packed[pos][:, r, s][:, ch], dy_pos[:, pos])
    dx = F.fold(dcols.view(n, cin * kh * kw, -1), size, kernel, **conv)

    xr, wr = x.clone().requires_grad_(True), w_masked.clone().requires_grad_(True)
    F.conv2d(xr, wr, b, groups=groups, **conv).backward(dy)
    torch.testing.assert_close(dx, xr.grad, rtol=1e-10, atol=1e-10)
    # Every kept weight lies in a planned box (NaN would remain otherwise) with the right gradient.
    torch.testing.assert_close(dw[kept], wr.grad[kept], rtol=1e-10, atol=1e-10)


CASES = {
    # name: (n, cin, cout, size, kernel, stride, padding, dilation, groups, granularity or block, tiles, reorder)
    "filter": (2, 40, 70, (6, 5), (3, 3), 1, 1, 1, 1, "filter", (64, 64), True),
    "tap": (2, 48, 48, (5, 6), (3, 3), 1, 1, 1, 1, "tap", (32, 64), True),
    "block32": (1, 64, 96, (5, 5), (3, 3), 1, 1, 1, 1, (32, 32, 1, 1), (32, 32), False),
    "block16_reordered": (2, 64, 64, (6, 6), (3, 3), 1, 1, 1, 1, (16, 16, 1, 1), (32, 32), True),
    "block_odd_grouped_strided": (2, 36, 40, (9, 7), (3, 2), (2, 1), (1, 0), (2, 1), 2, (4, 8, 2, 1), (32, 32), True),
    "filter_grouped_1x1": (3, 66, 64, (4, 4), (1, 1), 2, 0, 1, 2, "filter", (64, 64), True),
}


@pytest.mark.parametrize("keep", [0.2, 0.6])
@pytest.mark.parametrize("name", sorted(CASES))
def test_planned_tiles_compute_the_masked_convolution(name, keep):
    n, cin, cout, size, kernel, stride, padding, dilation, groups, gran, tiles, reorder = CASES[name]
    weight_shape = (cout, cin // groups, *kernel)
    block = gran if isinstance(gran, tuple) else rskcnn.block_shape(gran, weight_shape)
    run_case(n, cin, cout, size, kernel, stride, padding, dilation, groups, block, keep, tiles, reorder)
