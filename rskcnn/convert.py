"""Swap ``nn.Conv2d`` layers for ``RSKConv2d`` and back."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .masks import check_seed
from .modules import RSKConv2d


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _conv_kwargs(conv: nn.Conv2d) -> dict:
    return dict(
        in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )


def _plain_convs(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is nn.Conv2d]


def convert(model: nn.Module, keep_prob: float, which: str | Sequence[str] = "last", *,
            inplace: bool = False, **options) -> nn.Module:
    """Replaces ``nn.Conv2d`` layers of ``model`` by ``RSKConv2d`` sharing their parameters.

    ``which`` is ``"last"`` (the last registered ``nn.Conv2d``, where the paper puts RSK),
    ``"all"``, or a list of module names. ``options`` go to ``RSKConv2d`` (``granularity``,
    ``scale_mode``, ``law`` = ``"bernoulli"`` or ``"exact"``, ...; an exact law's mask rows
    follow each layer's own ``groups``); ``mask_seed=s`` gives the i-th replaced layer ``s + i`` (mod 2**64),
    so that layers of the same shape do not draw the same masks. Returns the converted model
    (a copy unless ``inplace``).
    """
    if not inplace:
        model = copy.deepcopy(model)
    convs = _plain_convs(model)
    if which == "last":
        if not convs:
            raise ValueError("convert: model has no nn.Conv2d layer to replace")
        names = convs[-1:]
    elif which == "all":
        names = convs
    elif isinstance(which, Sequence) and not isinstance(which, str):
        names = list(which)
        unknown = [n for n in names if n not in convs]
        if unknown:
            raise ValueError(f"convert: which names {unknown} that are not nn.Conv2d layers; those are {convs}")
    else:
        raise ValueError(f"convert: which must be 'last', 'all' or a list of module names, got {which!r}")

    seed = options.pop("mask_seed", None)
    if seed is not None:
        check_seed(seed, "mask_seed")
    for i, name in enumerate(names):
        conv = model.get_submodule(name)
        if seed is not None:
            options["mask_seed"] = (seed + i) % 2**64
        rsk = RSKConv2d(**_conv_kwargs(conv), keep_prob=keep_prob, **options)
        rsk.weight = conv.weight
        rsk.bias = conv.bias
        rsk.train(conv.training)
        _set_submodule(model, name, rsk)
    return model


@torch.no_grad()
def revert(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replaces every ``RSKConv2d`` by a plain ``nn.Conv2d`` computing its eval output
    (in ``'paper'`` mode the weight scaled by the layer's ``keep_fraction()``: ``keep_prob``
    under the ``bernoulli`` law, the realised ``k / n`` under ``exact``), for deployment and export."""
    if not inplace:
        model = copy.deepcopy(model)
    names = [name for name, m in model.named_modules() if isinstance(m, RSKConv2d)]
    if isinstance(model, RSKConv2d):
        raise ValueError("revert: pass a model that contains RSKConv2d, not the layer itself")
    for name in names:
        rsk = model.get_submodule(name)
        conv = nn.Conv2d(**_conv_kwargs(rsk))
        conv.weight.copy_(rsk.eval_weight())
        if rsk.bias is not None:
            conv.bias.copy_(rsk.bias)
        conv.train(rsk.training)
        _set_submodule(model, name, conv)
    return model
