"""The exact-count mask law (``law="exact"``): the row layout, the kept count per row, the
uniformity of the kept units, determinism, the module's scaling, convert/revert, torch.compile
without recompiles on a keep_prob change, and the validation of ``law``."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn.functional as F
from torch import nn

import rskcnn
from rskcnn.masks import counter_uniform

from conftest import assert_close

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e .[test])")
st = hypothesis.strategies
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck))

ODD_WEIGHT = (7, 5, 3, 2)  # Cout, Cin/groups, KH, KW: no block below divides it evenly
GROUPED_WEIGHT = (9, 5, 3, 2)  # Cout divisible by groups = 3
KEEPS = (1e-6, 0.01, 0.3, 0.5, 0.75, 0.999, 1.0)


def expected_count(p: float, n: int) -> int:
    """k = max(1, round(p n)), written out independently of the library."""
    return max(1, round(p * n))


def row_counts(mask: torch.Tensor, granularity: str, groups: int) -> torch.Tensor:
    """The kept count of every row, by the definition: the filters of each conv group for
    ``filter`` masks (output channel o is in group o // (Cout / groups)), else ``mask[o]``."""
    if granularity == "filter":
        per_group = mask.shape[0] // groups
        group_of = torch.arange(mask.shape[0]) // per_group
        return torch.stack([mask.flatten()[group_of == g].sum() for g in range(groups)])
    return mask.flatten(1).sum(1)


def layout_cases():
    """(weight shape, granularity, block_size, groups)."""
    cases = [(ODD_WEIGHT, g, (3, 2), 1) for g in rskcnn.GRANULARITIES]
    cases += [(GROUPED_WEIGHT, g, (2, 4), 3) for g in rskcnn.GRANULARITIES]
    return cases


# --------------------------------------------------------------------------- rows and counts


def test_mask_rows_follow_the_documented_layout():
    block = lambda g, w=ODD_WEIGHT, size=(3, 2): rskcnn.block_shape(g, w, size)  # noqa: E731
    assert rskcnn.mask_rows(ODD_WEIGHT, block("element")) == (7, 5 * 3 * 2)
    assert rskcnn.mask_rows(ODD_WEIGHT, block("tap")) == (7, 3 * 2)
    assert rskcnn.mask_rows(ODD_WEIGHT, block("filter")) == (1, 7)
    assert rskcnn.mask_rows(ODD_WEIGHT, block("block")) == (3, 3 * 3 * 2)  # mask (3, 3, 3, 2)
    assert rskcnn.mask_rows(GROUPED_WEIGHT, block("filter", GROUPED_WEIGHT), 3) == (3, 3)
    assert rskcnn.mask_rows(GROUPED_WEIGHT, block("element", GROUPED_WEIGHT), 3) == (9, 30)
    # one unit per output block-row: the rows are the groups (depthwise 1x1: rows of one unit)
    assert rskcnn.mask_rows((6, 1, 1, 1), (1, 1, 1, 1), 6) == (6, 1)
    assert rskcnn.mask_rows((6, 4, 1, 1), (2, 4, 1, 1), 3) == (3, 1)
    # block-rows that straddle groups (ceil(6 / 4) = 2 block-rows, 3 groups): one row
    assert rskcnn.mask_rows((6, 4, 1, 1), (4, 4, 1, 1), 3) == (1, 2)


@pytest.mark.parametrize("groups", [0, 2, 1.0, True])
def test_mask_rows_rejects_bad_groups(groups):
    with pytest.raises(ValueError, match="groups"):
        rskcnn.mask_rows(ODD_WEIGHT, (1, 1, 1, 1), groups)


@pytest.mark.parametrize("source", ["generator", "seed", "global"])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["float", "tensor"])
@pytest.mark.parametrize("weight_shape,granularity,block_size,groups", layout_cases())
def test_every_row_keeps_exactly_k(weight_shape, granularity, block_size, groups, as_tensor, source):
    block = rskcnn.block_shape(granularity, weight_shape, block_size)
    rows, n = rskcnn.mask_rows(weight_shape, block, groups)
    for i, p in enumerate(KEEPS):
        keep = torch.tensor(p, dtype=torch.float64) if as_tensor else p
        rng = dict(generator=torch.Generator().manual_seed(i)) if source == "generator" else (
            dict(seed=11, step=i) if source == "seed" else {})
        mask = rskcnn.sample_mask(weight_shape, keep, block, law="exact", groups=groups, **rng)
        assert mask.dtype == torch.bool and tuple(mask.shape) == rskcnn.mask_shape(weight_shape, block)
        counts = row_counts(mask, granularity, groups)
        assert counts.shape == (rows,)
        assert counts.tolist() == [expected_count(p, n)] * rows, f"p={p}, n={n}"


@hypothesis.settings(max_examples=150, **SETTINGS)
@hypothesis.given(
    weight=st.tuples(st.integers(1, 9), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4)),
    block=st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 5), st.integers(1, 5)),
    groups=st.sampled_from([1, 2, 3]),
    p=st.floats(1e-9, 1.0, exclude_min=False),
    seed=st.integers(0, 2**64 - 1),
)
def test_exact_count_for_raw_blocks(weight, block, groups, p, seed):
    """Any block, any keep: every row of mask.reshape(rows, n) keeps k = max(1, round(p n)),
    and the tensor keep_prob gives the same k, and so the same mask, as the float."""
    weight = (weight[0] * groups, *weight[1:])
    rows, n = rskcnn.mask_rows(weight, block, groups)
    assert rows * n == math.prod(rskcnn.mask_shape(weight, block))
    k = rskcnn.exact_keep_count(p, n)
    assert k == expected_count(p, n)
    assert int(rskcnn.exact_keep_count(torch.tensor(p, dtype=torch.float64), n)) == k
    mask = rskcnn.sample_mask(weight, p, block, seed=seed, step=3, law="exact", groups=groups)
    assert mask.reshape(rows, n).sum(1).tolist() == [k] * rows
    same = rskcnn.sample_mask(weight, torch.tensor(p, dtype=torch.float64), block, seed=seed, step=3,
                              law="exact", groups=groups)
    assert torch.equal(mask, same)


def test_exact_keep_count_edges():
    assert rskcnn.exact_keep_count(1e-12, 10_000) == 1  # tiny p still keeps one
    assert rskcnn.exact_keep_count(1.0, 37) == 37
    assert rskcnn.exact_keep_count(0.5, 1) == 1
    assert rskcnn.exact_keep_count(0.25, 10) == 2 and rskcnn.exact_keep_count(0.35, 10) == 4  # half to even
    assert rskcnn.exact_keep_count(0.5, 0) == 0
    counts = rskcnn.exact_keep_count(torch.tensor([1e-12, 0.25, 0.35, 1.0], dtype=torch.float64), 10)
    assert counts.dtype == torch.int64 and counts.tolist() == [1, 2, 4, 10]
    assert rskcnn.keep_fraction(0.3, 7, "exact") == 2 / 7
    assert rskcnn.keep_fraction(0.3, 7, "bernoulli") == 0.3
    with pytest.raises(ValueError, match="keep_prob"):
        rskcnn.exact_keep_count(0.0, 5)
    with pytest.raises(ValueError, match="n must be"):
        rskcnn.exact_keep_count(0.5, -1)


def test_exact_mask_on_an_empty_weight():
    mask = rskcnn.sample_mask((4, 0, 3, 3), 0.5, (1, 1, 1, 1), law="exact")
    assert mask.shape == (4, 0, 3, 3)


# --------------------------------------------------------------------------- uniformity
# A row of n = 6 units keeping k = 2 has 15 possible kept sets; a uniform sampler without
# replacement gives each the same frequency. The chi-square test is over the 15 sets (so it
# also sees a sampler whose single-unit marginals are right but whose pairs are not). Seeds are
# fixed, and a correct sampler passes p > 1e-4 with overwhelming probability.

N_UNITS, N_KEPT, P_MIN = 6, 2, 1e-4
SUBSETS = list(itertools.combinations(range(N_UNITS), N_KEPT))


def subset_p_value(rows: torch.Tensor) -> float:
    """The chi-square p-value of the kept sets of bool rows ``(draws, 6)`` against uniform."""
    assert rows.shape[1] == N_UNITS and (rows.sum(1) == N_KEPT).all()
    code = (rows.to(torch.int64) * (2 ** torch.arange(N_UNITS))).sum(1)
    observed = torch.stack([(code == sum(2**u for u in s)).sum() for s in SUBSETS]).to(torch.float64)
    assert observed.sum() == rows.shape[0]
    expected = rows.shape[0] / len(SUBSETS)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    df = len(SUBSETS) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), chi2 / 2))


def test_subset_test_rejects_biased_samplers():
    """The test has power: two plausible broken samplers fail it at the same sample size."""
    draws = 3000
    g = torch.Generator().manual_seed(0)
    # a cyclic window at a random start: every unit kept with probability k/n, but 6 of the 15 sets
    start = torch.randint(0, N_UNITS, (draws, 1), generator=g)
    window = ((torch.arange(N_UNITS) - start) % N_UNITS) < N_KEPT
    assert subset_p_value(window) < 1e-12
    # the k smallest of tilted uniforms (unit j's scaled by 1 + 0.3 j / 6): low indices win more often
    u = torch.rand(draws, N_UNITS, generator=g) * (1 + 0.3 * torch.arange(N_UNITS) / N_UNITS)
    tilted = torch.zeros(draws, N_UNITS, dtype=torch.bool).scatter_(1, u.argsort(1)[:, :N_KEPT], True)
    assert subset_p_value(tilted) < P_MIN


@pytest.mark.parametrize("source", ["generator", "seed"])
def test_kept_units_are_uniform_across_rows(source):
    """3000 element rows of one draw (weight (3000, 3, 2, 1), p = 1/3: k = 2 of n = 6)."""
    rng = dict(generator=torch.Generator().manual_seed(5)) if source == "generator" else dict(seed=5, step=0)
    mask = rskcnn.sample_mask((3000, 3, 2, 1), 1 / 3, (1, 1, 1, 1), law="exact", **rng)
    assert subset_p_value(mask.reshape(3000, N_UNITS)) > P_MIN


@pytest.mark.parametrize("source", ["generator", "seed"])
def test_kept_units_are_uniform_across_draws(source):
    """One filter row (6 filters, p = 1/3), fresh every draw: 1500 successive draws."""
    g = torch.Generator().manual_seed(9)
    draws = []
    for step in range(1500):
        rng = dict(generator=g) if source == "generator" else dict(seed=2**63 + 1, step=step)
        draws.append(rskcnn.sample_mask((6, 4, 3, 3), 1 / 3, (1, 4, 3, 3), law="exact", **rng).flatten())
    assert subset_p_value(torch.stack(draws)) > P_MIN


# --------------------------------------------------------------------------- determinism


def test_exact_masks_are_deterministic_with_generator_and_seed():
    shape, block = (16, 8, 3, 3), (1, 1, 1, 1)

    def with_generator(seed):
        return rskcnn.sample_mask(shape, 0.4, block, law="exact", generator=torch.Generator().manual_seed(seed))

    a = with_generator(3)
    torch.rand(10)  # the global RNG must not matter
    assert torch.equal(a, with_generator(3)) and not torch.equal(a, with_generator(4))
    g = torch.Generator().manual_seed(3)
    first = rskcnn.sample_mask(shape, 0.4, block, law="exact", generator=g)
    assert torch.equal(first, a)
    assert not torch.equal(rskcnn.sample_mask(shape, 0.4, block, law="exact", generator=g), first)

    def with_seed(seed, step):
        return rskcnn.sample_mask(shape, 0.4, block, law="exact", seed=seed, step=step)

    b = with_seed(77, 5)
    assert torch.equal(b, with_seed(77, 5)) and torch.equal(b, with_seed(77, torch.tensor(5)))
    assert not torch.equal(b, with_seed(77, 6)) and not torch.equal(b, with_seed(78, 5))
    # the k smallest of the same counter uniforms
    u = counter_uniform(shape, 77, 5).reshape(16, -1)
    k = rskcnn.exact_keep_count(0.4, u.shape[1])
    threshold = u.sort(1).values[:, k - 1 : k]
    assert torch.equal(b.reshape(16, -1), u <= threshold)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare with the CPU draw")
def test_seeded_exact_mask_is_the_same_on_cuda():
    shape, block = (64, 32, 3, 3), (1, 4, 1, 1)
    cpu = rskcnn.sample_mask(shape, 0.3, block, law="exact", seed=123, step=9)
    cuda = rskcnn.sample_mask(shape, torch.tensor(0.3, dtype=torch.float64, device="cuda"), block, law="exact",
                              seed=123, step=9, device="cuda")
    assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu)


# --------------------------------------------------------------------------- the module

MODULE = dict(in_channels=6, out_channels=9, kernel_size=(3, 2), padding=1, groups=3)


def exact_layer(granularity, scale_mode, keep_prob=0.3, **options):
    return rskcnn.RSKConv2d(**MODULE, keep_prob=keep_prob, granularity=granularity, block_size=(2, 3),
                            scale_mode=scale_mode, law="exact", mask_seed=41, **options)


def dense(x, weight, layer):
    return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


@pytest.mark.parametrize("scale_mode", ["paper", "inverted"])
@pytest.mark.parametrize("granularity", rskcnn.GRANULARITIES)
def test_module_train_and_eval_use_the_realised_fraction(granularity, scale_mode):
    layer = exact_layer(granularity, scale_mode).train()
    rows, n = rskcnn.mask_rows(layer.weight.shape, layer.block, layer.groups)
    k = rskcnn.exact_keep_count(0.3, n)
    x = torch.randn(2, 6, 5, 4)
    for step in range(2):
        mask = rskcnn.sample_mask(layer.weight.shape, 0.3, layer.block, law="exact", groups=3, seed=41, step=step)
        assert mask.reshape(rows, n).sum(1).tolist() == [k] * rows
        full = rskcnn.expand_mask(mask, layer.block, layer.weight.shape)
        scale = n / k if scale_mode == "inverted" else 1.0
        with torch.no_grad():
            assert_close(layer(x), dense(x, layer.weight * full * scale, layer), torch.float32, 12,
                         msg=f"train step {step}")
    assert int(layer.mask_step) == 2
    assert float(layer.keep_fraction()) == k / n
    layer.eval()
    eval_weight = layer.weight * (k / n) if scale_mode == "paper" else layer.weight
    with torch.no_grad():
        assert_close(layer(x), dense(x, eval_weight, layer), torch.float32, 12, msg="eval")


def test_module_generator_draws_the_exact_mask():
    layer = rskcnn.RSKConv2d(**MODULE, keep_prob=0.5, granularity="filter", law="exact",
                             generator=torch.Generator().manual_seed(8))
    mask = layer.sample_mask()
    expected = rskcnn.sample_mask(layer.weight.shape, 0.5, layer.block, law="exact", groups=3,
                                  generator=torch.Generator().manual_seed(8))
    assert torch.equal(mask, expected) and mask.reshape(3, 3).sum(1).tolist() == [2, 2, 2]


def test_scheduler_moves_the_realised_fraction():
    """KeepProbScheduler sets keep_prob; the exact layer's fraction follows k / n of the new value."""
    layer = exact_layer("tap", "paper", keep_prob=0.3)
    n = layer.mask_rows[1]
    scheduler = rskcnn.KeepProbScheduler(layer, "linear", decay_epochs=2)
    fractions = []
    for _ in range(3):
        fractions.append(float(layer.keep_fraction()))
        scheduler.step()
    assert fractions == [rskcnn.exact_keep_count(p, n) / n for p in (1.0, 0.65, 0.3)]


def test_extra_repr_shows_a_non_default_law():
    assert "law='exact'" in repr(exact_layer("element", "paper"))
    assert "law" not in repr(rskcnn.RSKConv2d(4, 4, 3))


def test_convert_passes_the_law_and_revert_folds_the_realised_fraction():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 9, 3, padding=1, groups=3))
    converted = rskcnn.convert(model, 0.3, "all", granularity="filter", law="exact")
    first, grouped = converted[0], converted[2]
    assert first.law == grouped.law == "exact"
    assert first.mask_rows == (1, 6) and grouped.mask_rows == (3, 3)
    assert grouped.sample_mask().reshape(3, 3).sum(1).tolist() == [1, 1, 1]
    reverted = rskcnn.revert(converted.eval())
    assert torch.equal(reverted[0].weight, model[0].weight * (2 / 6))  # round(1.8) = 2 of 6
    assert torch.equal(reverted[2].weight, model[2].weight * (1 / 3))  # round(0.9) = 1 of 3
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        assert_close(reverted(x), converted(x), torch.float32, 60)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_exact_layer_never_recompiles_on_keep_prob():
    """fullgraph train mode with mask_seed: each step equals its eager twin (same seeded
    exact masks), and keep_prob 0.5 -> 0.3 -> 1 -> 0.01 compiles no second graph."""
    eager = exact_layer("element", "inverted", keep_prob=0.5)
    twin = exact_layer("element", "inverted", keep_prob=0.5)
    twin.load_state_dict(eager.state_dict())
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(twin, backend=counter, fullgraph=True)
    x = torch.randn(2, 6, 5, 4)
    counts = []
    for p in (0.5, 0.3, 1.0, 0.01):
        eager.keep_prob = twin.keep_prob = p
        assert_close(compiled(x), eager(x), torch.float32, 12, msg=f"keep_prob={p}")
        counts.append(counter.frame_count)
    assert int(twin.mask_step) == int(eager.mask_step) == 4
    assert counts[0] >= 1 and counts == [counts[0]] * len(counts), f"graphs compiled so far {counts}"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("law", ["uniform", "Exact", None, 1])
def test_bad_law_raises_naming_it(law):
    with pytest.raises(ValueError, match=r"law must be one of \('bernoulli', 'exact'\)"):
        rskcnn.RSKConv2d(4, 4, 3, law=law)
    with pytest.raises(ValueError, match="law"):
        rskcnn.sample_mask((4, 4, 3, 3), 0.5, (1, 1, 1, 1), law=law)
    with pytest.raises(ValueError, match="law"):
        rskcnn.keep_fraction(0.5, 9, law)
    with pytest.raises(ValueError, match="law"):
        rskcnn.convert(nn.Sequential(nn.Conv2d(3, 4, 3)), 0.5, law=law)
