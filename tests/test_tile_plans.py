"""The CUDA kernels' tile plans (csrc/block_mask.h, csrc/tile_steps.h), built on the CPU by
rskcnn::plan_tiles with the very host/device functions the CUDA plan kernels call, against a
brute-force plan written here from the definition; and the CUDA build of them where a GPU is."""

from __future__ import annotations

import pytest
import torch

from rskcnn.masks import block_shape, expand_mask, mask_shape

from conftest import requires_cpu_ops

pytestmark = requires_cpu_ops


def reference_order(mask, block, weight_shape, groups, reorder):
    cout = weight_shape[0]
    cout_g = cout // groups

    def key(o):
        if not reorder:
            return (0, o)
        taps = mask[o // block[0]].any(0).flatten().tolist()  # block-taps kept by channel o
        pattern = sum(1 << (62 - t) for t, kept in enumerate(taps) if kept and t < 63)
        return ((0 if any(taps) else 1 << 63) | pattern, o)

    return [o for gi in range(groups) for o in sorted(range(gi * cout_g, (gi + 1) * cout_g), key=key)]


def reference_plans(mask, block, weight_shape, groups, tile_shape, reorder):
    cout, cin_g, kh, kw = weight_shape
    out_tile, in_chunk, in_tile, out_chunk = tile_shape
    full = expand_mask(mask, block, weight_shape)
    order = reference_order(mask, block, weight_shape, groups, reorder)
    cout_g = cout // groups
    out_plans, in_plans = [], []
    for gi in range(groups):
        positions = list(range(gi * cout_g, (gi + 1) * cout_g))
        for t0 in range(0, cout_g, out_tile):
            tile = [order[p] for p in positions[t0:t0 + out_tile]]
            chunks = -(-cin_g // in_chunk)
            out_plans.append([tap * chunks + c for tap in range(kh * kw) for c in range(chunks)
                              if full[tile, c * in_chunk:(c + 1) * in_chunk, tap // kw, tap % kw].any()])
        for i0 in range(0, cin_g, in_tile):
            chunks = -(-cout_g // out_chunk)
            in_plans.append([tap * chunks + c for tap in range(kh * kw) for c in range(chunks)
                             if full[[order[p] for p in positions[c * out_chunk:(c + 1) * out_chunk]],
                                     i0:i0 + in_tile, tap // kw, tap % kw].any()])
    return order, out_plans, in_plans


def check_plans(got, expected):
    order, out_entries, out_counts, in_entries, in_counts = got
    ref_order, ref_out, ref_in = expected
    assert order.dtype == torch.int32 and order.tolist() == ref_order
    for entries, counts, ref in ((out_entries, out_counts, ref_out), (in_entries, in_counts, ref_in)):
        assert counts.tolist() == [len(r) for r in ref]
        for row, count, r in zip(entries.tolist(), counts.tolist(), ref):
            assert row[:count] == r
            assert all(v == -1 for v in row[count:])


CASES = {
    # name: (weight shape, groups, granularity or block, tile shape, reorder)
    "filter": ((70, 40, 3, 3), 1, "filter", (64, 32, 64, 32), True),
    "tap": ((48, 20, 3, 3), 1, "tap", (32, 32, 64, 32), True),
    "block_32": ((96, 80, 3, 3), 1, (32, 32, 1, 1), (32, 32, 32, 32), False),
    "block_16_in_32_tiles": ((64, 64, 3, 3), 1, (16, 16, 1, 1), (32, 32, 32, 32), True),
    "block_odd_grouped": ((36, 18, 3, 2), 2, (4, 8, 2, 1), (32, 32, 32, 32), True),
    "element_grouped": ((12, 5, 3, 3), 3, "element", (32, 32, 32, 32), True),
    "filter_grouped_small_tiles": ((24, 10, 1, 3), 4, "filter", (4, 3, 4, 2), True),
}


@pytest.mark.parametrize("keep_prob", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_plans_match_brute_force(name, keep_prob):
    weight_shape, groups, granularity, tile_shape, reorder = CASES[name]
    block = granularity if isinstance(granularity, tuple) else block_shape(granularity, weight_shape)
    mask = torch.rand(mask_shape(weight_shape, block)) < keep_prob
    got = torch.ops.rskcnn.plan_tiles(mask, list(weight_shape), groups, list(block), list(tile_shape), reorder)
    check_plans(got, reference_plans(mask, block, weight_shape, groups, tile_shape, reorder))


def test_dropped_filters_come_last_and_plan_no_steps():
    weight_shape = (128, 32, 3, 3)
    block = block_shape("filter", weight_shape)
    mask = torch.zeros(mask_shape(weight_shape, block), dtype=torch.bool)
    kept = torch.randperm(128)[:64]
    mask[kept] = True
    order, _, out_counts, _, in_counts = torch.ops.rskcnn.plan_tiles(
        mask, list(weight_shape), 1, list(block), [64, 32, 64, 32], True)
    assert sorted(order[:64].tolist()) == sorted(kept.tolist())
    assert out_counts.tolist() == [9, 0]  # the kept tile visits every tap, the dropped one nothing
    assert in_counts.tolist() == [9 * 2]  # per tap, the 2 of 4 chunks of 32 positions that hold kept filters


def test_aligned_blocks_plan_exactly_the_kept_blocks():
    weight_shape = (64, 64, 3, 3)
    block = (32, 32, 1, 1)
    mask = torch.rand(mask_shape(weight_shape, block)) < 0.5
    order, out_entries, out_counts, in_entries, in_counts = torch.ops.rskcnn.plan_tiles(
        mask, list(weight_shape), 1, list(block), [32, 32, 32, 32], False)
    assert order.tolist() == list(range(64))
    assert out_counts.tolist() == mask.flatten(1).sum(1).tolist()
    assert in_counts.tolist() == mask.transpose(0, 1).flatten(1).sum(1).tolist()


def test_opcheck_plan_tiles():
    weight_shape = (12, 6, 3, 2)
    block = (2, 3, 1, 1)
    mask = torch.rand(mask_shape(weight_shape, block)) < 0.5
    torch.library.opcheck(torch.ops.rskcnn.plan_tiles.default,
                          (mask, list(weight_shape), 2, list(block), [4, 2, 2, 3], True))


@pytest.mark.parametrize("bad, match", [
    (dict(tile_shape=[0, 32, 32, 32]), "tile shape entries must be positive"),
    (dict(groups=5), "groups = 5 must divide Cout = 12"),
    (dict(block=[2, 3, 1]), "block must have 4 elements"),
    (dict(weight_size=[12, 6, 3, 3]), "mask must have shape"),
])
def test_plan_tiles_errors(bad, match):
    args = dict(mask=torch.ones(6, 2, 3, 2, dtype=torch.bool), weight_size=[12, 6, 3, 2], groups=2,
                block=[2, 3, 1, 1], tile_shape=[4, 2, 2, 3], reorder=True)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.rskcnn.plan_tiles(*args.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU build of the plans)")
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_plans_equal_cpu_plans(name):
    weight_shape, groups, granularity, tile_shape, reorder = CASES[name]
    block = granularity if isinstance(granularity, tuple) else block_shape(granularity, weight_shape)
    mask = torch.rand(mask_shape(weight_shape, block)) < 0.5
    args = (list(weight_shape), groups, list(block), list(tile_shape), reorder)
    cpu = torch.ops.rskcnn.plan_tiles(mask, *args)
    gpu = torch.ops.rskcnn.plan_tiles(mask.cuda(), *args)
    for c, g in zip(cpu, gpu):
        assert g.is_cuda and torch.equal(c, g.cpu())
