"""Reproducible masks and checkpoint/resume.

Three sources of masks: a ``generator`` (its state is saved), ``mask_seed`` (the counter
``mask_step`` is in the state_dict) and torch's global RNG (its state is saved). For each,
training 6 epochs straight and training 3, saving model + optimizer + KeepProbScheduler +
RNG state to a file, loading it into freshly built (differently initialised) objects and
training 3 more must give bit-identical masks and losses on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rskcnn
from rskcnn.masks import counter_uniform

EPOCHS, STEPS_PER_EPOCH = 6, 2
SOURCES = ["generator", "mask_seed", "global_rng"]


def _build(source: str, init_seed: int):
    torch.manual_seed(init_seed)
    options = {"generator": torch.Generator().manual_seed(7)} if source == "generator" else {}
    if source == "mask_seed":
        options = {"mask_seed": 7}
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        rskcnn.RSKConv2d(8, 8, 3, padding=1, keep_prob=0.4, granularity="element", **options), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = rskcnn.KeepProbScheduler(model, "linear", decay_epochs=4)
    return model, optimizer, scheduler


def _train(model, optimizer, scheduler, epochs: range, log: dict) -> None:
    rsk = model[2]
    sample = type(rsk).sample_mask.__get__(rsk)
    rsk.sample_mask = lambda: log["masks"].append(sample()) or log["masks"][-1]
    for epoch in epochs:
        for step in range(STEPS_PER_EPOCH):
            g = torch.Generator().manual_seed(100 * epoch + step)
            x, y = torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            log["losses"].append(loss.item())
            log["keep"].append(rsk.keep_prob)
        scheduler.step()
    del rsk.sample_mask


def _checkpoint(model, optimizer, scheduler, source: str) -> dict:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if source == "generator":
        state["mask_generator"] = model[2].generator.get_state()
    if source == "global_rng":
        state["torch_rng"] = torch.get_rng_state()
    return state


def _restore(state: dict, model, optimizer, scheduler, source: str) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if source == "generator":
        model[2].generator.set_state(state["mask_generator"])
    if source == "global_rng":
        torch.set_rng_state(state["torch_rng"])


@pytest.mark.parametrize("source", SOURCES)
def test_resume_gives_bit_identical_masks_and_losses(source, tmp_path):
    torch.manual_seed(1)
    straight = {"masks": [], "losses": [], "keep": []}
    _train(*_build(source, init_seed=0), range(EPOCHS), straight)

    torch.manual_seed(1)
    resumed = {"masks": [], "losses": [], "keep": []}
    model, optimizer, scheduler = _build(source, init_seed=0)
    _train(model, optimizer, scheduler, range(EPOCHS // 2), resumed)
    torch.save(_checkpoint(model, optimizer, scheduler, source), tmp_path / "ckpt.pt")
    del model, optimizer, scheduler

    torch.manual_seed(12345)  # the resumed process's RNG and init differ; only the checkpoint carries state
    model, optimizer, scheduler = _build(source, init_seed=99)
    _restore(torch.load(tmp_path / "ckpt.pt", weights_only=False), model, optimizer, scheduler, source)
    _train(model, optimizer, scheduler, range(EPOCHS // 2, EPOCHS), resumed)

    assert straight["keep"] == resumed["keep"]
    assert straight["keep"][0] == 1.0 and straight["keep"][-1] == 0.4, straight["keep"]
    assert straight["losses"] == resumed["losses"], "losses after resuming are not bit-identical"
    # keep_prob = 1 (the first epoch) is nn.Conv2d in eager mode: no mask is drawn
    assert len(straight["masks"]) == len(resumed["masks"]) == sum(k < 1 for k in straight["keep"])
    for i, (a, b) in enumerate(zip(straight["masks"], resumed["masks"])):
        assert torch.equal(a, b), f"mask {i} differs after resuming"
    late = straight["masks"][-1]
    assert 0 < int(late.sum()) < late.numel(), "keep 0.4 should drop some weights and keep others"


@pytest.mark.parametrize("source", ["generator", "mask_seed"])
def test_masks_identical_across_runs(source):
    """Two independently built layers with the same generator seed or mask_seed draw the same
    masks, whatever the global RNG does in between."""
    def masks():
        options = {"generator": torch.Generator().manual_seed(5)} if source == "generator" else {"mask_seed": 5}
        m = rskcnn.RSKConv2d(6, 4, 3, keep_prob=0.5, **options)
        out = []
        for _ in range(3):
            torch.rand(17)  # global RNG traffic must not matter
            out.append(m.sample_mask())
        return out

    a, b = masks(), masks()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])


def test_mask_step_is_in_the_state_dict_only_with_mask_seed():
    plain = rskcnn.RSKConv2d(4, 4, 3, keep_prob=0.5)
    seeded = rskcnn.RSKConv2d(4, 4, 3, keep_prob=0.5, mask_seed=3)
    assert "mask_step" not in plain.state_dict()
    assert "mask_step" in seeded.state_dict()
    seeded(torch.randn(1, 4, 5, 5))
    assert int(seeded.state_dict()["mask_step"]) == 1
    # A plain nn.Conv2d checkpoint still loads strictly and keeps the counter.
    seeded.load_state_dict(nn.Conv2d(4, 4, 3).state_dict(), strict=True)
    assert int(seeded.mask_step) == 1


def test_seeded_masks_statistics():
    """counter_uniform: different per step and per seed, roughly uniform, 64-bit seeds."""
    a = counter_uniform((400, 250), seed=2**64 - 1, step=0)
    b = counter_uniform((400, 250), seed=2**64 - 1, step=1)
    c = counter_uniform((400, 250), seed=2**63, step=0)
    assert a.dtype == torch.float32 and 0 <= float(a.min()) and float(a.max()) < 1
    assert abs(float(a.mean()) - 0.5) < 0.01 and abs(float(a.std()) - 12**-0.5) < 0.01
    for u, v in ((a, b), (a, c)):
        r = torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1]
        assert abs(float(r)) < 0.02
    r = torch.corrcoef(torch.stack([a.flatten()[:-1], a.flatten()[1:]]))[0, 1]
    assert abs(float(r)) < 0.02, "neighbouring entries are correlated"
    assert torch.equal(a, counter_uniform((400, 250), seed=2**64 - 1, step=torch.tensor(0)))


@pytest.mark.parametrize("seed, error", [(-1, TypeError), (2**64, TypeError), (1.5, TypeError), (True, TypeError)])
def test_bad_mask_seed(seed, error):
    with pytest.raises(error, match="mask_seed"):
        rskcnn.RSKConv2d(4, 4, 3, mask_seed=seed)


def test_generator_and_mask_seed_together_is_an_error():
    with pytest.raises(ValueError, match="generator or mask_seed"):
        rskcnn.RSKConv2d(4, 4, 3, mask_seed=1, generator=torch.Generator())


def test_convert_gives_each_layer_its_own_mask_seed():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3))
    converted = rskcnn.convert(model, 0.5, "all", mask_seed=2**64 - 2)
    assert [m.mask_seed for m in converted] == [2**64 - 2, 2**64 - 1, 0]
    masks = [m.sample_mask() for m in converted]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    with pytest.raises(TypeError, match="mask_seed"):
        rskcnn.convert(model, 0.5, "all", mask_seed=-1)
