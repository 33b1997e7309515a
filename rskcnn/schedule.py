"""``KeepProbScheduler``: changes the keep probability of ``RSKConv2d`` layers epoch by epoch,
with the conventions of ``torch.optim.lr_scheduler`` (``step()``, ``last_epoch``,
``state_dict()``/``load_state_dict()``).

Section 3.6 of the paper starts training at keep 1 and lowers keep evenly, epoch by epoch, to
the target, reaching it just before the dense model starts to overfit. The authors'
Fashion-MNIST notebook uses 1.0, 0.9, ..., 0.3 for epochs 1-8, then 0.3::

    model = paper_cnn(keep_prob=0.3)                       # 0.3 is each layer's target
    scheduler = KeepProbScheduler(model, "linear", decay_epochs=7)   # keep is now 1.0
    for epoch in range(40):
        train_one_epoch(model)
        scheduler.step()                                   # 0.9, 0.8, ..., 0.3, 0.3, ...
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

from torch import nn

from .modules import RSKConv2d

SCHEDULES = ("constant", "linear", "cosine", "step")


def _check_prob(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _targets(targets) -> list[RSKConv2d]:
    if isinstance(targets, RSKConv2d):
        return [targets]
    if isinstance(targets, nn.Module):
        found = [m for m in targets.modules() if isinstance(m, RSKConv2d)]
        if not found:
            raise ValueError(f"targets: the model {type(targets).__name__} contains no RSKConv2d "
                             "(rskcnn.convert puts one in)")
        return found
    if isinstance(targets, Iterable) and not isinstance(targets, (str, bytes)):
        found = list(targets)
        wrong = [type(m).__name__ for m in found if not isinstance(m, RSKConv2d)]
        if wrong:
            raise TypeError(f"targets must be RSKConv2d modules, got a list holding {', '.join(wrong)}")
        if not found:
            raise ValueError("targets: got an empty list, expected at least one RSKConv2d")
        return found
    raise TypeError("targets must be an RSKConv2d, a list of them or an nn.Module containing them, "
                    f"got {type(targets).__name__}")


class KeepProbScheduler:
    """Sets ``keep_prob`` of the target ``RSKConv2d`` layers at each ``step()``.

    Args:
        targets: an ``RSKConv2d``, a list of them, or a model (every ``RSKConv2d`` inside).
        schedule: ``"constant"``, ``"linear"``, ``"cosine"``, ``"step"`` or a function
            ``f(t) -> keep`` of the epoch ``t = 0, 1, ...`` counted from the end of the warm-up.
        start: keep during the warm-up and at the start of the decay (default 1.0, the paper's).
        end: the target keep; by default each layer's ``keep_prob`` when the scheduler is built
            (as LR schedulers take each group's initial lr), so layers may have different targets.
        warmup_epochs: epochs held at ``start`` before the decay begins.
        decay_epochs: epochs from ``start`` to ``end`` (``linear``, ``cosine``, ``step``);
            with ``decay_epochs = 7`` a linear 1.0 -> 0.3 goes down by 0.1 per epoch.
        step_size: for ``"step"``, epochs between two drops: the linear schedule evaluated at
            ``t // step_size * step_size``.
        last_epoch: the index of the last finished epoch (-1: none, a fresh run).

    ``constant`` keeps ``start`` during the warm-up, then ``end``. As with LR schedulers,
    building the scheduler applies the epoch-0 value and each ``step()`` advances one epoch;
    keep probabilities are set through the ``keep_prob`` property, a tensor buffer, so a
    compiled model does not recompile.
    """

    def __init__(
        self,
        targets,
        schedule: str | Callable[[int], float] = "linear",
        *,
        start: float = 1.0,
        end: float | None = None,
        warmup_epochs: int = 0,
        decay_epochs: int | None = None,
        step_size: int = 1,
        last_epoch: int = -1,
    ) -> None:
        self.targets = _targets(targets)
        if callable(schedule):
            self.schedule_fn, self.schedule = schedule, "function"
        elif isinstance(schedule, str) and schedule in SCHEDULES:
            self.schedule_fn, self.schedule = None, schedule
        else:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a callable f(epoch) -> keep, got {schedule!r}")
        self.start = _check_prob("start", start)
        if end is None:
            self.ends = [m.keep_prob for m in self.targets]
        else:
            self.ends = [_check_prob("end", end)] * len(self.targets)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        if self.schedule in ("linear", "cosine", "step"):
            if decay_epochs is None:
                raise ValueError(f"decay_epochs is required for schedule={self.schedule!r} "
                                 "(an int >= 1: epochs from start to end)")
            self.decay_epochs = _check_int("decay_epochs", decay_epochs, 1)
        else:
            self.decay_epochs = None if decay_epochs is None else _check_int("decay_epochs", decay_epochs, 1)
        self.step_size = _check_int("step_size", step_size, 1)
        self.last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._last_keep_prob: list[float] = []
        self.step()

    def keep_prob_at(self, epoch: int) -> list[float]:
        """The keep probability of each target during epoch ``epoch`` (0-based), without side effects."""
        epoch = _check_int("epoch", epoch, 0)
        t = epoch - self.warmup_epochs
        if t < 0:
            return [self.start] * len(self.targets)
        if self.schedule_fn is not None:
            value = self.schedule_fn(t)
            try:
                value = _check_prob("keep", value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"schedule function returned {value!r} for epoch {t} after the warm-up; "
                                 "expected a float in (0, 1]") from error
            return [value] * len(self.targets)
        if self.schedule == "constant":
            return list(self.ends)
        if self.schedule == "step":
            t = t // self.step_size * self.step_size
        fraction = min(1.0, t / self.decay_epochs)
        if self.schedule == "cosine":
            fraction = (1.0 - math.cos(math.pi * fraction)) / 2.0
        # round off the float noise of start + k * delta (0.30000000000000004 is not the target 0.3)
        return [round(self.start + (end - self.start) * fraction, 12) for end in self.ends]

    def step(self) -> None:
        """Advances one epoch (call it at each epoch end) and sets every target's keep_prob."""
        self.last_epoch += 1
        self._last_keep_prob = self.keep_prob_at(self.last_epoch)
        for module, value in zip(self.targets, self._last_keep_prob):
            module.keep_prob = value

    def get_last_keep_prob(self) -> list[float]:
        """The keep probabilities set by the last ``step()``, one per target."""
        return list(self._last_keep_prob)

    def state_dict(self) -> dict:
        """The epoch and settings; a schedule function is not saved (pass it again to the constructor)."""
        return {
            "schedule": self.schedule, "start": self.start, "ends": list(self.ends),
            "warmup_epochs": self.warmup_epochs, "decay_epochs": self.decay_epochs,
            "step_size": self.step_size, "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores a ``state_dict()`` and sets the targets' keep_prob for its epoch."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict from KeepProbScheduler.state_dict(), got {type(state_dict).__name__}")
        missing = {"schedule", "start", "ends", "warmup_epochs", "decay_epochs", "step_size", "last_epoch"} - set(state_dict)
        if missing:
            raise ValueError(f"state_dict is missing {sorted(missing)}")
        if state_dict["schedule"] != self.schedule:
            raise ValueError(f"state_dict is for schedule {state_dict['schedule']!r}, this scheduler runs {self.schedule!r}")
        if len(state_dict["ends"]) != len(self.targets):
            raise ValueError(f"state_dict has {len(state_dict['ends'])} targets' ends, this scheduler has "
                             f"{len(self.targets)} targets")
        self.start = _check_prob("start", state_dict["start"])
        self.ends = [_check_prob("end", e) for e in state_dict["ends"]]
        self.warmup_epochs = _check_int("warmup_epochs", state_dict["warmup_epochs"], 0)
        decay = state_dict["decay_epochs"]
        self.decay_epochs = None if decay is None else _check_int("decay_epochs", decay, 1)
        self.step_size = _check_int("step_size", state_dict["step_size"], 1)
        self.last_epoch = _check_int("last_epoch", state_dict["last_epoch"], 0) - 1
        self.step()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(schedule={self.schedule!r}, start={self.start}, ends={self.ends}, "
                f"warmup_epochs={self.warmup_epochs}, decay_epochs={self.decay_epochs}, "
                f"last_epoch={self.last_epoch}, targets={len(self.targets)})")
