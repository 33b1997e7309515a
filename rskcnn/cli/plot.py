"""``python -m rskcnn plot``: the options of :func:`rskcnn.bench.plot_result`, which draws a
bench result (JSON) as ratio-to-dense against keep probability."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rskcnn.bench import PASSES, plot_result

from .arguments import add_command


def add_parser(commands) -> None:
    parser = add_command(
        commands, "plot", run,
        help="plot a bench result: ratio to dense against keep probability",
        description="Reads a JSON written by 'rskcnn bench' and draws, for one pass, each backend's "
        "median time over dense's against the keep probability: one panel per granularity, a "
        "line per (layer, backend), the ideal ratio = p and the speed target dashed. Needs matplotlib.",
    )
    parser.add_argument("results", type=Path, help="a JSON file written by 'rskcnn bench'")
    parser.add_argument("--pass", dest="pass_name", choices=PASSES, default="step",
                        help="which pass to plot (default: step, a whole training step)")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG to write (default: the JSON's path with -<pass>.png)")


def run(args: argparse.Namespace) -> int:
    data = json.loads(args.results.read_text())
    out = args.out or args.results.with_name(f"{args.results.stem}-{args.pass_name}.png")
    try:
        plot_result(data, args.pass_name, out)
    except (ValueError, ImportError) as error:
        raise SystemExit(f"rskcnn plot: {args.results}: {error}") from None
    print(f"rskcnn plot: wrote {out}")
    return 0
