"""``python -m rskcnn`` (also the ``rskcnn`` console script): ``info``, ``bench``, ``plot`` and ``calibrate``.

The paper's training harness is not part of the package: ``python references/paper/train.py``
in a checkout of the repository.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .cli import bench, calibrate, info, plot

    parser = argparse.ArgumentParser(
        prog="rskcnn",
        description="rskcnn: randomly-sparse-kernel convolutions whose kernels skip the masked weights.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info.add_parser(commands)
    bench.add_parser(commands)
    plot.add_parser(commands)
    calibrate.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in benchmark results
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
