"""DistributedDataParallel over gloo: 2 CPU processes train a small model containing RSKConv2d.

rskcnn adds nothing of its own to distribution: a mask is drawn inside each rank's forward
and DDP all-reduces (averages) the gradients as for any layer. The test checks, for a model
whose masks come from each rank's RNG (the default) and for one with ``mask_seed`` (the same
masks on every rank):

* which masks the ranks drew (different by default, identical with ``mask_seed``);
* that every rank's gradient after backward is the mean over ranks of the single-process
  gradients, recomputed here from each rank's data and recorded masks, at every step;
* that the parameters stay equal across ranks and equal to the replayed SGD trajectory;
* that nothing hangs: the processes are joined with a deadline and killed past it.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import rskcnn

WORLD = 2
STEPS = 3
LR = 0.5
DEADLINE_S = 90  # a hang fails the test instead of stalling CI; a normal run takes ~10 s


def _model(mask_seed):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        rskcnn.RSKConv2d(8, 8, 3, padding=1, keep_prob=0.5, granularity="filter", mask_seed=mask_seed),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    )


def _batch(step: int, rank: int):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for name, mask_seed in (("default", None), ("seeded", 31)):
            model = _model(mask_seed)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            torch.manual_seed(100 + rank)  # each rank's own RNG stream, as a data pipeline would seed it
            rsk = model[2]
            masks, sample = [], rsk.sample_mask
            rsk.sample_mask = lambda: masks.append(sample()) or masks[-1]
            opt = torch.optim.SGD(ddp.parameters(), lr=LR)
            grads = []
            for step in range(STEPS):
                x, y = _batch(step, rank)
                opt.zero_grad()
                F.cross_entropy(ddp(x), y).backward()
                grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
                opt.step()
            results[name] = dict(masks=masks, grads=grads,
                                 params={n: p.detach().clone() for n, p in model.named_parameters()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run_ranks(tmp_path) -> list[dict]:
    ctx = mp.start_processes(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP workers still running after {DEADLINE_S} s (deadlock?)")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    if sys.platform == "win32":
        pytest.skip("the test spawns processes with a file:// rendezvous (Linux/macOS)")
    return _run_ranks(tmp_path_factory.mktemp("ddp"))


def _replay(rank_results: list[dict]):
    """Single process: each step, every rank's gradient from its data and recorded mask, their
    mean, and the SGD update; yields (step, mean gradient, parameters after the step)."""
    model = _model(mask_seed=None)
    rsk = model[2]
    for step in range(STEPS):
        per_rank = []
        for rank, res in enumerate(rank_results):
            rsk.sample_mask = lambda m=res["masks"][step]: m
            model.zero_grad()
            x, y = _batch(step, rank)
            F.cross_entropy(model(x), y).backward()
            per_rank.append({n: p.grad.clone() for n, p in model.named_parameters()})
        mean = {n: sum(g[n] for g in per_rank) / len(per_rank) for n in per_rank[0]}
        with torch.no_grad():
            for n, p in model.named_parameters():
                p -= LR * mean[n]
        yield step, mean, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["default", "seeded"])
def test_ddp_gloo_two_ranks(ranks, variant):
    results = [r[variant] for r in ranks]
    masks = [r["masks"] for r in results]
    assert all(len(m) == STEPS for m in masks)
    same = [torch.equal(masks[0][s], masks[1][s]) for s in range(STEPS)]
    if variant == "default":
        assert not any(same), "ranks drew identical masks from differently seeded RNGs"
    else:
        assert all(same), "with mask_seed every rank must draw the same masks"
        assert not torch.equal(masks[0][0], masks[0][1]), "the seeded mask must change every step"

    for step, mean, params in _replay(results):
        for rank, res in enumerate(results):
            for name, g in res["grads"][step].items():
                torch.testing.assert_close(g, mean[name], rtol=1e-5, atol=1e-6,
                                           msg=lambda m: f"rank {rank} step {step} grad {name}: {m}")
    for name, p in params.items():
        torch.testing.assert_close(results[0]["params"][name], results[1]["params"][name], rtol=0, atol=0)
        torch.testing.assert_close(results[0]["params"][name], p, rtol=1e-5, atol=1e-6)
    rsk_grad = results[0]["grads"][0]["2.weight"]
    assert rsk_grad.abs().sum() > 0, "the RSK layer got no gradient"
