"""The authors' 6-layer CNN and the variants that ``references/paper/train.py`` compares.

conv 32 -> ReLU -> max-pool 2 -> conv 64 -> ReLU -> max-pool 2 -> conv 128 -> ReLU [-> regulariser]
-> flatten -> dense 128 -> ReLU -> dense 64 -> ReLU -> dense 10 (28x28 inputs; 256 -> 128 for
inputs of 32x32 and larger, the authors' CIFAR head). Every conv is 3x3, stride 1, 'same'
padding. Weights are Glorot-uniform and biases zero, as Keras initialises them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import OrderedDict

import torch
from torch import nn

from rskcnn import RSKConv2d

CORE_VARIANTS = ("dense", "rsk-filter", "rsk-element", "rsk-schedule")
EXTRA_VARIANTS = ("dropout2d", "dropblock")
VARIANTS = CORE_VARIANTS + EXTRA_VARIANTS
SWEEP_PREFIX = "sweep-"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model configuration. ``regulariser``: 'none', 'rsk', 'dropout2d' or 'dropblock'."""

    name: str
    regulariser: str
    keep_prob: float = 1.0
    granularity: str = "filter"
    scheduled: bool = False

    def describe(self) -> str:
        if self.regulariser == "none":
            return "dense"
        if self.regulariser == "rsk":
            how = "keep schedule 1.0 ->" if self.scheduled else "fixed keep"
            return f"RSK {self.granularity}, {how} {self.keep_prob:g}"
        return f"{self.regulariser} after the last conv, drop {1 - self.keep_prob:g}"


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def make_variant(name: str, keep_prob: float, schedule_granularity: str = "filter") -> Variant:
    if name == "dense":
        return Variant(name, "none")
    if name in ("rsk-filter", "rsk-element"):
        return Variant(name, "rsk", keep_prob, name.split("-")[1])
    if name == "rsk-schedule":
        return Variant(name, "rsk", keep_prob, schedule_granularity, scheduled=True)
    if name in EXTRA_VARIANTS:
        return Variant(name, name, keep_prob)
    if name.startswith(SWEEP_PREFIX):
        return Variant(name, "rsk", float(name[len(SWEEP_PREFIX):]), schedule_granularity, scheduled=True)
    raise ValueError(f"variant must be one of {VARIANTS} or {SWEEP_PREFIX}P, got {name!r}")


def _regulariser(variant: Variant, map_size: int) -> nn.Module | None:
    drop = 1.0 - variant.keep_prob
    if variant.regulariser == "dropout2d":
        return nn.Dropout2d(drop)
    if variant.regulariser == "dropblock":
        from torchvision.ops import DropBlock2d

        # torchvision needs an odd block no larger than the map: 3 on 7x7 maps, 1 on digits' 2x2
        return DropBlock2d(drop, block_size=3 if map_size >= 3 else 1)
    return None


def paper_cnn(variant: Variant, in_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The authors' 6-layer CNN for inputs ``(C, H, W)``; output logits ``(N, num_classes)``."""
    channels, height, width = in_shape
    if variant.regulariser == "rsk":
        last = RSKConv2d(64, 128, 3, padding=1, keep_prob=variant.keep_prob, granularity=variant.granularity)
    else:
        last = nn.Conv2d(64, 128, 3, padding=1)
    hidden = (256, 128) if min(height, width) >= 32 else (128, 64)
    layers = [
        ("conv1", nn.Conv2d(channels, 32, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("conv3", last), ("relu3", nn.ReLU()),
    ]
    regulariser = _regulariser(variant, min(height, width) // 4)
    if regulariser is not None:
        layers.append((variant.regulariser, regulariser))
    flat = 128 * (height // 4) * (width // 4)
    layers += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, hidden[0])), ("relu4", nn.ReLU()),
        ("fc2", nn.Linear(hidden[0], hidden[1])), ("relu5", nn.ReLU()),
        ("fc3", nn.Linear(hidden[1], num_classes)),
    ]
    model = nn.Sequential(OrderedDict(layers))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
