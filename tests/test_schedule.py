"""``rskcnn.KeepProbScheduler``: schedule maths, warm-up, targets, state round-trip, errors."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import rskcnn
from rskcnn import KeepProbScheduler, RSKConv2d


def conv(keep_prob: float = 0.3) -> RSKConv2d:
    return RSKConv2d(4, 6, 3, padding=1, keep_prob=keep_prob, granularity="filter")


def model(keeps=(0.3, 0.5)) -> nn.Sequential:
    layers = []
    for keep in keeps:
        layers += [conv(keep), nn.ReLU(), nn.Conv2d(6, 4, 1)]
    return nn.Sequential(*layers)


def run(scheduler: KeepProbScheduler, epochs: int) -> list[list[float]]:
    """The keep probabilities in force during epochs 0..epochs-1, read from the modules."""
    seen = []
    for _ in range(epochs):
        seen.append([m.keep_prob for m in scheduler.targets])
        scheduler.step()
    return seen


def test_authors_fashion_mnist_schedule():
    # their notebook: 1.0, 0.9, ..., 0.3 for epochs 1-8, then 0.3 to the end
    layer = conv(0.3)
    scheduler = KeepProbScheduler(layer, "linear", decay_epochs=7)
    assert scheduler.last_epoch == 0 and layer.keep_prob == 1.0
    seen = [keeps[0] for keeps in run(scheduler, 12)]
    assert seen == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3]
    assert scheduler.last_epoch == 12 and scheduler.get_last_keep_prob() == [0.3]


@pytest.mark.parametrize("shape", ["linear", "cosine", "step"])
def test_shapes_match_closed_form(shape):
    rng = random.Random(shape)
    start, end = rng.uniform(0.8, 1.0), rng.uniform(0.1, 0.6)
    decay, warmup, step_size = rng.randint(3, 9), rng.randint(0, 3), rng.randint(2, 3)
    scheduler = KeepProbScheduler(conv(end), shape, start=start, decay_epochs=decay, warmup_epochs=warmup,
                                  step_size=step_size)
    for epoch, (keep,) in enumerate(run(scheduler, warmup + decay + 4)):
        t = epoch - warmup
        if t < 0:
            expected = start
        else:
            if shape == "step":
                t = t // step_size * step_size
            f = min(1.0, t / decay)
            if shape == "cosine":
                f = (1 - math.cos(math.pi * f)) / 2
            expected = start + (end - start) * f
        assert keep == pytest.approx(expected, abs=1e-9), (epoch, shape)
    assert scheduler.get_last_keep_prob() == [pytest.approx(end)]


def test_cosine_is_monotone_and_symmetric():
    scheduler = KeepProbScheduler(conv(0.2), "cosine", decay_epochs=10)
    seen = [k[0] for k in run(scheduler, 11)]
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    assert seen[5] == pytest.approx(0.6)  # the midpoint of 1.0 and 0.2
    assert seen[0] - seen[2] == pytest.approx(seen[8] - seen[10])  # slow start, slow finish
    assert seen[0] - seen[2] < seen[4] - seen[6]


def test_constant_holds_start_during_warmup_then_target():
    scheduler = KeepProbScheduler(conv(0.4), "constant", warmup_epochs=2)
    assert [k[0] for k in run(scheduler, 5)] == [1.0, 1.0, 0.4, 0.4, 0.4]
    assert [k[0] for k in run(KeepProbScheduler(conv(0.4), "constant"), 2)] == [0.4, 0.4]


def test_user_function_counts_epochs_after_the_warmup():
    calls = []

    def halve(t):
        calls.append(t)
        return 0.5 ** (t + 1)

    scheduler = KeepProbScheduler(conv(0.9), halve, warmup_epochs=1, start=0.8)
    assert [k[0] for k in run(scheduler, 4)] == [0.8, 0.5, 0.25, 0.125]
    assert calls[:3] == [0, 1, 2]


def test_user_function_returning_a_bad_value_raises():
    with pytest.raises(ValueError, match="schedule function returned 0.0 for epoch 0"):
        KeepProbScheduler(conv(), lambda t: 0.0)
    scheduler = KeepProbScheduler(conv(), lambda t: 1.0 if t == 0 else 1.5)
    with pytest.raises(ValueError, match=r"returned 1.5 for epoch 1.*\(0, 1\]"):
        scheduler.step()


def test_targets_model_list_and_single_module():
    net = model((0.3, 0.5))
    scheduler = KeepProbScheduler(net, "linear", decay_epochs=2)
    layers = [m for m in net.modules() if isinstance(m, RSKConv2d)]
    assert scheduler.targets == layers
    # each layer decays to its own keep_prob, as LR schedulers keep each group's initial lr
    assert run(scheduler, 3) == [[1.0, 1.0], [0.65, 0.75], [0.3, 0.5]]

    only = conv(0.6)
    listed = KeepProbScheduler([only, layers[0]], "linear", decay_epochs=1, end=0.2)
    assert listed.get_last_keep_prob() == [1.0, 1.0]
    listed.step()
    assert only.keep_prob == layers[0].keep_prob == 0.2
    assert layers[1].keep_prob == 0.5  # not a target of this scheduler


def test_scheduler_changes_what_the_layer_computes():
    torch.manual_seed(0)
    layer = conv(0.5).eval()
    x = torch.randn(2, 4, 5, 5)
    scheduler = KeepProbScheduler(layer, "linear", decay_epochs=1)
    at_one = layer(x)
    torch.testing.assert_close(at_one, nn.functional.conv2d(x, layer.weight, layer.bias, padding=1))
    scheduler.step()  # keep 0.5: eval weight is W * 0.5 ('paper' scaling)
    torch.testing.assert_close(layer(x), nn.functional.conv2d(x, layer.weight * 0.5, layer.bias, padding=1))


def test_state_dict_round_trip_resumes_mid_schedule():
    first = model((0.3, 0.6))
    scheduler = KeepProbScheduler(first, "cosine", decay_epochs=6, warmup_epochs=1)
    for _ in range(4):
        scheduler.step()
    state = scheduler.state_dict()
    assert state["last_epoch"] == 4 and state["ends"] == [0.3, 0.6]

    second = model((0.9, 0.9))  # different keep_probs: the state's ends win
    resumed = KeepProbScheduler(second, "cosine", decay_epochs=2)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 4
    assert resumed.get_last_keep_prob() == scheduler.get_last_keep_prob()
    assert [m.keep_prob for m in resumed.targets] == [m.keep_prob for m in scheduler.targets]
    assert run(resumed, 5) == run(scheduler, 5)
    assert resumed.state_dict() == scheduler.state_dict()


def test_state_dict_is_plain_data():
    scheduler = KeepProbScheduler(conv(), lambda t: 0.5)
    state = scheduler.state_dict()
    assert state["schedule"] == "function"
    assert all(not callable(v) for v in state.values())


def test_load_state_dict_rejects_mismatches():
    scheduler = KeepProbScheduler(model((0.3, 0.5)), "linear", decay_epochs=3)
    state = scheduler.state_dict()
    with pytest.raises(ValueError, match="schedule 'linear', this scheduler runs 'cosine'"):
        KeepProbScheduler(model((0.3, 0.5)), "cosine", decay_epochs=3).load_state_dict(state)
    with pytest.raises(ValueError, match="2 targets' ends, this scheduler has 1 targets"):
        KeepProbScheduler(conv(), "linear", decay_epochs=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"state_dict is missing \['last_epoch'\]"):
        scheduler.load_state_dict({k: v for k, v in state.items() if k != "last_epoch"})
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        scheduler.load_state_dict([1, 2])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"schedule": "exponential"}, ValueError, r"schedule must be one of \('constant', 'linear'"),
        ({"schedule": "linear"}, ValueError, "decay_epochs is required for schedule='linear'"),
        ({"schedule": "cosine", "decay_epochs": 0}, ValueError, "decay_epochs must be an int >= 1, got 0"),
        ({"schedule": "step", "decay_epochs": 2.5}, TypeError, "decay_epochs must be an int >= 1, got 2.5"),
        ({"schedule": "constant", "warmup_epochs": -1}, ValueError, "warmup_epochs must be an int >= 0, got -1"),
        ({"schedule": "constant", "start": 0.0}, ValueError, r"start must be in \(0, 1\], got 0.0"),
        ({"schedule": "constant", "end": 1.2}, ValueError, r"end must be in \(0, 1\], got 1.2"),
        ({"schedule": "constant", "end": "0.5"}, TypeError, "end must be a float in"),
        ({"schedule": "step", "decay_epochs": 4, "step_size": 0}, ValueError, "step_size must be an int >= 1, got 0"),
        ({"schedule": "constant", "last_epoch": -2}, ValueError, "last_epoch must be an int >= -1, got -2"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        KeepProbScheduler(conv(), **kwargs)


def test_bad_targets_name_the_argument():
    with pytest.raises(ValueError, match="targets: the model Sequential contains no RSKConv2d"):
        KeepProbScheduler(nn.Sequential(nn.Conv2d(3, 4, 3)), "constant")
    with pytest.raises(TypeError, match="targets must be RSKConv2d modules, got a list holding Conv2d"):
        KeepProbScheduler([conv(), nn.Conv2d(3, 4, 3)], "constant")
    with pytest.raises(ValueError, match="targets: got an empty list"):
        KeepProbScheduler([], "constant")
    with pytest.raises(TypeError, match="targets must be an RSKConv2d, a list of them or an nn.Module"):
        KeepProbScheduler("conv3", "constant")


def test_exported_from_the_package():
    assert "KeepProbScheduler" in rskcnn.__all__ and rskcnn.KeepProbScheduler is KeepProbScheduler
    assert "schedule='linear'" in repr(KeepProbScheduler(conv(), "linear", decay_epochs=2))
