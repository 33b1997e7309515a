"""A bench result (the JSON's dict) drawn as ratio-to-dense against keep probability, one
panel per granularity, with the ideal line (ratio = p) and the speed target. matplotlib is
an optional dependency (``pip install rskcnn[plot]``), imported only when a plot is drawn."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from .passes import DENSE

# The speed targets (issues 3 and 4): ratio <= a * p + b per granularity.
TARGETS = {"filter": (1.15, 0.0), "block": (1.3, 0.0), "tap": (1.3, 0.05), "element": (1.6, 0.1)}


def ratio_field(data: dict) -> str:
    """The records' ratio a plot draws: ``graph_ratio`` for a graph-timed result, else ``ratio``."""
    return "graph_ratio" if data["settings"].get("timing") == "graph" else "ratio"


def series(data: dict, pass_name: str) -> dict[str, dict[tuple[str, str], list[tuple[float, float]]]]:
    """granularity -> (layer, backend) -> sorted [(keep_prob, ratio)] for one pass, dense left out.
    The ratio is the CUDA-graph one where the result was graph-timed (points a pass could not
    be captured at are left out), else the eager one."""
    field = ratio_field(data)
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in data["records"]:
        if r["pass"] == pass_name and r["backend"] != DENSE and r.get(field) is not None:
            out[r["granularity"]][(r["layer"], r["backend"])].append((r["keep_prob"], r[field]))
    return {g: {k: sorted(v) for k, v in lines.items()} for g, lines in out.items()}


def plot_result(data: dict, pass_name: str, out: str | os.PathLike) -> Path:
    """Draws ``pass_name``'s ratios of the bench result ``data`` into the PNG ``out`` and
    returns its path. Raises ValueError when ``data`` has no record of that pass, and
    ImportError (saying how to install it) when matplotlib is missing."""
    lines = series(data, pass_name)
    field = ratio_field(data)
    if not lines:
        raise ValueError(f"no {pass_name!r} records")
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plotting a bench result needs matplotlib: pip install matplotlib "
                          "(or rskcnn[plot])") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    axes[0][0].set_ylabel(f"{pass_name} time / dense time")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{s['device']} {s['dtype']}, {s['memory_format']}, {s['threads']} threads"
                 + (", TF32" if s.get("tf32") else "") + (", CUDA-graph replays" if field == "graph_ratio" else "")
                 + f" ({s['date'][:10]})", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
