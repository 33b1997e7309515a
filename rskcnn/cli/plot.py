"""``python -m rskcnn plot``: a bench result (JSON) as ratio-to-dense against keep probability,
one panel per granularity, with the ideal line (ratio = p) and the speed target."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from .passes import PASSES

DENSE = "dense"

# The speed targets (issues 3 and 4): ratio <= a * p + b per granularity.
TARGETS = {"filter": (1.15, 0.0), "block": (1.3, 0.0), "tap": (1.3, 0.05), "element": (1.6, 0.1)}


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "plot",
        help="plot a bench result: ratio to dense against keep probability",
        description="Reads a JSON written by 'rskcnn bench' and draws, for one pass, each backend's "
        "median time over dense's against the keep probability: one panel per granularity, a "
        "line per (layer, backend), the ideal ratio = p and the speed target dashed.",
    )
    parser.add_argument("results", type=Path, help="a JSON file written by 'rskcnn bench'")
    parser.add_argument("--pass", dest="pass_name", choices=PASSES, default="step",
                        help="which pass to plot (default: step, a whole training step)")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG to write (default: the JSON's path with -<pass>.png)")
    parser.set_defaults(func=run)


def series(data: dict, pass_name: str) -> dict[str, dict[tuple[str, str], list[tuple[float, float]]]]:
    """granularity -> (layer, backend) -> sorted [(keep_prob, ratio)] for one pass, dense left out."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in data["records"]:
        if r["pass"] == pass_name and r["backend"] != DENSE:
            out[r["granularity"]][(r["layer"], r["backend"])].append((r["keep_prob"], r["ratio"]))
    return {g: {k: sorted(v) for k, v in lines.items()} for g, lines in out.items()}


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(args.results.read_text())
    lines = series(data, args.pass_name)
    if not lines:
        raise SystemExit(f"rskcnn plot: {args.results} has no {args.pass_name!r} records")
    granularities = [g for g in ("filter", "block", "tap", "element") if g in lines]
    fig, axes = plt.subplots(1, len(granularities), figsize=(4.2 * len(granularities), 4), squeeze=False)
    s = data["settings"]
    for ax, granularity in zip(axes[0], granularities):
        ps = sorted({p for pts in lines[granularity].values() for p, _ in pts})
        grid = [0.05, *ps, 1.0]  # from 0.05, not 0: the y axis is logarithmic
        ax.plot(grid, grid, color="black", linewidth=1, label="ideal: ratio = p")
        a, b = TARGETS[granularity]
        ax.plot(grid, [a * p + b for p in grid], color="black", linestyle="--", linewidth=1,
                label=f"target: {a}·p" + (f" + {b}" if b else ""))
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        for (layer, backend), pts in sorted(lines[granularity].items()):
            ax.plot([p for p, _ in pts], [r for _, r in pts], marker="o", label=f"{layer} {backend}")
        ax.set_title(granularity)
        ax.set_xlim(0.0, 1.02)
        ax.set_xlabel("keep probability p")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"{args.pass_name} time / dense time")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{s['device']} {s['dtype']}, {s['memory_format']}, {s['threads']} threads"
                 + (", TF32" if s.get("tf32") else "") + f" ({s['date'][:10]})", fontsize=10)
    fig.tight_layout()
    out = args.out or args.results.with_name(f"{args.results.stem}-{args.pass_name}.png")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"rskcnn plot: wrote {out}")
    return 0
