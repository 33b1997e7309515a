"""Argument types shared by the ``rskcnn`` subcommands: each turns an option's text into its
value or raises ``argparse.ArgumentTypeError`` saying what was expected (argparse then exits
with status 2 and the option's name), and the one way a subcommand is registered."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def add_command(commands, name: str, run: Callable[[argparse.Namespace], int], *, help: str,
                description: str) -> argparse.ArgumentParser:
    """Adds the subcommand ``name`` to ``commands`` (from ``add_subparsers``); ``run(args)``
    is what it does. Returns its parser, for the options."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def names(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A type for a comma-separated, non-empty subset of ``choices``, e.g. ``paper,vgg16``."""
    def parse(text: str) -> tuple[str, ...]:
        found = comma_separated(text)
        if not found or any(n not in choices for n in found):
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(choices)}, got {text!r}")
        return found
    return parse


def comma_separated(text: str) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma-separated list (checked later by whoever uses them)."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def keep_probs(text: str) -> tuple[float, ...]:
    """A type for comma-separated keep probabilities in (0, 1], e.g. ``0.25,0.5``."""
    try:
        probs = tuple(float(p) for p in text.split(","))
    except ValueError:
        probs = ()
    if not probs or not all(0.0 < p <= 1.0 for p in probs):
        raise argparse.ArgumentTypeError(f"expected comma-separated keep probabilities in (0, 1], got {text!r}")
    return probs


def positive(kind: type) -> Callable[[str], int | float]:
    """A type for a number of ``kind`` (int or float) above 0."""
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def non_negative_int(text: str) -> int:
    """A type for an int >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def share(text: str) -> float:
    """A type for a share in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def positive_pair(text: str) -> tuple[int, int]:
    """A type for two ints >= 1, e.g. a block size ``32,32``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected two positive ints like 32,32, got {text!r}")
    return values  # type: ignore[return-value]
