"""Block masks: block_shape, mask_shape, expand_mask and sample_mask."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import rskcnn

WEIGHT = (8, 6, 3, 5)  # Cout, Cin/groups, KH, KW


@pytest.mark.parametrize(
    "granularity, block_size, expected",
    [
        ("element", (4, 2), (1, 1, 1, 1)),
        ("tap", (4, 2), (1, 6, 1, 1)),
        ("filter", (4, 2), (1, 6, 3, 5)),
        ("block", (4, 2), (4, 2, 1, 1)),
        ("block", (3, 5), (3, 5, 1, 1)),
    ],
)
def test_block_shape(granularity, block_size, expected):
    assert rskcnn.block_shape(granularity, WEIGHT, block_size) == expected


def test_block_shape_default_block_size():
    assert rskcnn.block_shape("block", WEIGHT) == (32, 32, 1, 1)


def test_block_shape_uses_cin_per_group():
    # A grouped conv's weight has Cin/groups in dim 1; tap and filter blocks span exactly that.
    grouped = (6, 2, 3, 2)
    assert rskcnn.block_shape("tap", grouped) == (1, 2, 1, 1)
    assert rskcnn.block_shape("filter", grouped) == (1, 2, 3, 2)


def test_granularities_constant_lists_the_four_names():
    assert set(rskcnn.GRANULARITIES) == {"element", "tap", "filter", "block"}
    for name in rskcnn.GRANULARITIES:
        assert len(rskcnn.block_shape(name, WEIGHT, (4, 2))) == 4


@pytest.mark.parametrize("name", ["Element", "channel", "", "kernel", "elements"])
def test_block_shape_unknown_granularity(name):
    with pytest.raises(ValueError, match="granularity"):
        rskcnn.block_shape(name, WEIGHT)


@pytest.mark.parametrize(
    "weight_shape, block",
    [
        ((8, 6, 3, 5), (1, 1, 1, 1)),
        ((8, 6, 3, 5), (4, 2, 1, 1)),
        ((7, 5, 3, 3), (4, 2, 1, 1)),
        ((7, 5, 3, 3), (3, 5, 2, 2)),
        ((3, 2, 3, 3), (32, 32, 1, 1)),  # blocks larger than the weight
        ((5, 4, 1, 1), (64, 64, 1, 1)),
        ((2, 3, 3, 2), (1, 3, 3, 2)),
        ((2, 3, 3, 2), (9, 9, 9, 9)),
    ],
)
def test_mask_shape_is_ceil(weight_shape, block):
    expected = tuple(-(-s // b) for s, b in zip(weight_shape, block))
    assert rskcnn.mask_shape(weight_shape, block) == expected
    assert all(m >= 1 for m in expected)


def test_mask_shape_block_larger_than_weight_is_one_block():
    assert rskcnn.mask_shape((3, 2, 3, 3), (32, 32, 1, 1)) == (1, 1, 3, 3)
    assert rskcnn.mask_shape((3, 2, 3, 3), (32, 32, 8, 8)) == (1, 1, 1, 1)


def _expand_by_loop(mask: torch.Tensor, block, weight_shape) -> torch.Tensor:
    bo, bi, bh, bw = block
    out = torch.zeros(weight_shape, dtype=torch.bool)
    for o, i, h, w in itertools.product(*(range(s) for s in weight_shape)):
        out[o, i, h, w] = bool(mask[o // bo, i // bi, h // bh, w // bw])
    return out


@pytest.mark.parametrize(
    "weight_shape, block",
    [
        ((5, 3, 3, 2), (1, 1, 1, 1)),
        ((5, 3, 3, 2), (1, 3, 1, 1)),
        ((5, 3, 3, 2), (1, 3, 3, 2)),
        ((7, 5, 3, 3), (4, 2, 1, 1)),
        ((7, 5, 3, 3), (3, 5, 1, 1)),
        ((7, 5, 3, 3), (2, 3, 2, 2)),
        ((3, 2, 2, 2), (32, 32, 1, 1)),
    ],
)
def test_expand_mask_matches_python_loop(weight_shape, block):
    mask = torch.rand(rskcnn.mask_shape(weight_shape, block)) < 0.5
    mask.view(-1)[0] = True
    mask.view(-1)[-1] = False
    full = rskcnn.expand_mask(mask, block, weight_shape)
    assert full.dtype == torch.bool
    assert tuple(full.shape) == weight_shape
    assert torch.equal(full, _expand_by_loop(mask, block, weight_shape))


@pytest.mark.parametrize("granularity", ["element", "tap", "filter", "block"])
def test_expand_mask_counts_whole_blocks(granularity):
    # Every kept mask entry keeps exactly the weights of its (clipped) block.
    weight_shape = (7, 5, 3, 2)
    block = rskcnn.block_shape(granularity, weight_shape, (3, 2))
    mask = torch.rand(rskcnn.mask_shape(weight_shape, block)) < 0.5
    full = rskcnn.expand_mask(mask, block, weight_shape)
    expected = 0
    for idx in mask.nonzero().tolist():
        size = 1
        for b, s, k in zip(idx, weight_shape, block):
            size *= min((b + 1) * k, s) - b * k
        expected += size
    assert int(full.sum()) == expected


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("granularity", ["element", "block"])
def test_sample_mask_keep_fraction(p, granularity):
    weight_shape = (256, 64, 3, 3)
    block = rskcnn.block_shape(granularity, weight_shape, (4, 2))
    mask = rskcnn.sample_mask(weight_shape, p, block)
    assert mask.dtype == torch.bool
    assert tuple(mask.shape) == rskcnn.mask_shape(weight_shape, block)
    n = mask.numel()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(mask.float().mean().item() - p) < 6 * sigma


def test_sample_mask_keep_prob_one_keeps_everything():
    for granularity in rskcnn.GRANULARITIES:
        block = rskcnn.block_shape(granularity, WEIGHT, (4, 2))
        mask = rskcnn.sample_mask(WEIGHT, 1.0, block)
        assert mask.all()
        assert tuple(mask.shape) == rskcnn.mask_shape(WEIGHT, block)


def test_sample_mask_reproducible_with_generator():
    shape = (32, 16, 3, 3)
    a = rskcnn.sample_mask(shape, 0.5, (1, 1, 1, 1), generator=torch.Generator().manual_seed(123))
    torch.rand(100)  # the global RNG must not matter
    b = rskcnn.sample_mask(shape, 0.5, (1, 1, 1, 1), generator=torch.Generator().manual_seed(123))
    c = rskcnn.sample_mask(shape, 0.5, (1, 1, 1, 1), generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_mask_generator_advances():
    g = torch.Generator().manual_seed(7)
    a = rskcnn.sample_mask((32, 16, 3, 3), 0.5, (1, 1, 1, 1), generator=g)
    b = rskcnn.sample_mask((32, 16, 3, 3), 0.5, (1, 1, 1, 1), generator=g)
    assert not torch.equal(a, b)


def test_sample_mask_tensor_keep_prob_matches_float():
    shape = (16, 8, 3, 3)
    a = rskcnn.sample_mask(shape, 0.3, (1, 1, 1, 1), generator=torch.Generator().manual_seed(5))
    b = rskcnn.sample_mask(shape, torch.tensor(0.3), (1, 1, 1, 1), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
