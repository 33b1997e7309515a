"""Block masks on the cpu backend with the block shapes of its block-row GEMM path
(csrc/cpu/block_rows.cpp: grad-weight of block masks with bo >= 8, groups == 1) and
small ones that keep the sparse rows, against F.conv2d on the masked weight in float64:
forward and both gradients, NaN in masked weights, masked gradients exactly 0."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import rskcnn

from conftest import requires_cpu_ops

pytestmark = requires_cpu_ops

# (N, Cin, H, W, Cout, K, stride, padding, dilation)
GEOMETRIES = {
    "odd_channels": (2, 45, 9, 7, 37, 3, 1, 1, 1),
    "stride2_pad": (2, 40, 11, 10, 33, 3, 2, 2, 1),
    "dilated": (1, 33, 12, 9, 20, 3, 1, 2, 2),
    "pointwise": (3, 70, 5, 6, 50, 1, 1, 0, 1),
    "kernel5_stride3": (2, 17, 13, 12, 24, 5, 3, 1, 1),
    "batch1": (1, 64, 8, 8, 64, 3, 1, 1, 1),
    "wide": (2, 80, 6, 5, 96, 3, 1, 1, 1),
    "batch0": (0, 40, 8, 8, 36, 3, 1, 1, 1),
}
# (64, 16) and (16, 64): 64 rows share a list, two 32-row panels (csrc/cpu/row_panels.h) per run.
BLOCKS = [(8, 8), (16, 32), (32, 8), (32, 32), (8, 4), (4, 16), (64, 16), (16, 64)]
KEEPS = [0.0, 0.3, 1.0]


def masked_weight(weight, mask, block):
    idx = [torch.arange(s) // b for s, b in zip(weight.shape, block)]
    m = mask[idx[0][:, None, None, None], idx[1][None, :, None, None], idx[2][None, None, :, None],
             idx[3][None, None, None, :]]
    return torch.where(m, weight, torch.zeros((), dtype=weight.dtype)), m


def run(geometry, bo_bi, keep, dtype, seed=0):
    n, cin, h, w, cout, k, s, p, d = GEOMETRIES[geometry]
    block = (*bo_bi, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=dtype)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    mask_shape = [-(-a // b) for a, b in zip(weight.shape, block)]
    mask = torch.rand(mask_shape, generator=gen) < keep
    wm, m = masked_weight(weight, mask, block)
    weight = torch.where(m, weight, torch.full((), float("nan"), dtype=dtype))  # never read
    scale = 1.5

    xr, wr, br = (t.detach().to(torch.float64).requires_grad_() for t in (x, wm, bias))
    ref = F.conv2d(xr, wr * scale, br, s, p, d)
    go = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref.backward(go)

    xc, wc, bc = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    out = rskcnn.rsk_conv2d(xc, wc, mask, bc, s, p, d, block=block, scale=scale, backend="cpu")
    out.backward(go.to(dtype))
    return (out, xc.grad, wc.grad), (ref, xr.grad, wr.grad * m), m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry,bo_bi,keep", list(itertools.product(GEOMETRIES, BLOCKS, KEEPS)))
def test_block_rows_match_masked_conv(geometry, bo_bi, keep, dtype):
    got, want, m = run(geometry, bo_bi, keep, dtype)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, g, r in zip(("out", "grad_input", "grad_weight"), got, want):
        assert g.dtype == dtype, name
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g.to(torch.float64), r, **tol, msg=name)
    assert (got[2][~m] == 0).all()


@pytest.mark.parametrize("geometry", ["batch1", "dilated"])  # two block rows, one
def test_block_rows_deterministic_across_thread_counts(geometry):
    threads = torch.get_num_threads()
    first = run(geometry, (32, 32), 0.5, torch.float32)[0]
    try:
        for t in (1, max(2, threads)):
            torch.set_num_threads(t)
            again = run(geometry, (32, 32), 0.5, torch.float32)[0]
            for a, b in zip(first, again):
                assert torch.equal(a, b), t
    finally:
        torch.set_num_threads(threads)
