"""Results of ``references/paper/train.py``: the Markdown table (mean ± std over seeds), the
authors' Keras logs parsed for comparison, and PNG curves (matplotlib, optional)."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import statistics

from model import SWEEP_PREFIX, VARIANTS

# "469/469 [===] - 2s 4ms/step - loss: 0.0719 - accuracy: 0.9726 - val_loss: 0.2314 - val_accuracy: 0.9338"
KERAS_LINE = re.compile(r"- loss: ([\d.]+) - accuracy: ([\d.]+) - val_loss: ([\d.]+) - val_accuracy: ([\d.]+)")
AUTHORS_CSV = "authors.csv"
AUTHORS_FIELDS = ("run", "epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def read_runs(out: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def parse_keras_log(path: str) -> list[dict]:
    """Per-epoch rows from a Keras ``fit`` progress log."""
    with open(path) as f:
        rows = [m.groups() for m in KERAS_LINE.finditer(f.read())]
    return [{"epoch": i + 1, "train_loss": float(a), "train_acc": float(b), "val_loss": float(c), "val_acc": float(d)}
            for i, (a, b, c, d) in enumerate(rows)]


def read_authors(path: str | None, out: str) -> dict[str, list[dict]]:
    """{run name: per-epoch rows} from a folder of Keras logs, or the CSV this module writes;
    with no path, ``{out}/authors.csv`` if present. Runs ``N*`` are dense, ``Y*`` RSK."""
    if path is None:
        path = os.path.join(out, AUTHORS_CSV)
        if not os.path.exists(path):
            return {}
    if os.path.isdir(path):
        logs = {os.path.splitext(os.path.basename(p))[0]: parse_keras_log(p)
                for p in sorted(glob.glob(os.path.join(path, "*.txt")))}
        return {name: rows for name, rows in logs.items() if rows}
    runs: dict[str, list[dict]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            runs.setdefault(row["run"], []).append(
                {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if k != "run"})
    return runs


def write_authors_csv(authors: dict[str, list[dict]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=AUTHORS_FIELDS)
        writer.writeheader()
        for name, rows in authors.items():
            writer.writerows({"run": name, **row} for row in rows)


def _order(name: str) -> tuple:
    if name in VARIANTS:
        return (0, VARIANTS.index(name), 0.0)
    if name.startswith(SWEEP_PREFIX):
        return (1, 0, float(name[len(SWEEP_PREFIX):]))
    return (2, 0, name)


def summarise(histories: list[list[dict]]) -> dict:
    """Mean and std over runs of best/final val acc, final train-val gap, train s/epoch."""
    def stats(values):
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
                "values": values}
    return {
        "n": len(histories),
        "epochs": sorted({len(h) for h in histories}),
        "best_val_acc": stats([max(r["val_acc"] for r in h) for h in histories]),
        "best_epoch": [max(h, key=lambda r: r["val_acc"])["epoch"] for h in histories],
        "final_val_acc": stats([h[-1]["val_acc"] for h in histories]),
        "final_gap": stats([h[-1]["train_acc"] - h[-1]["val_acc"] for h in histories]),
        "s_per_epoch": stats([statistics.fmean(r["train_s"] for r in h) for h in histories])
        if "train_s" in histories[0][0] else None,
    }


def _pct(stat: dict | None, digits: int = 2) -> str:
    if stat is None:
        return "–"
    text = f"{100 * stat['mean']:.{digits}f}"
    return text + (f" ± {100 * stat['std']:.{digits}f}" if stat["std"] is not None else "")


def _secs(stat: dict | None) -> str:
    if stat is None:
        return "–"
    return f"{stat['mean']:.1f}" + (f" ± {stat['std']:.1f}" if stat["std"] is not None else "")


def tables(runs: list[dict], authors: dict[str, list[dict]]) -> tuple[str, dict]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["variant"], []).append(run)
    summary = {}
    for name in sorted(groups, key=_order):
        members = sorted(groups[name], key=lambda r: r["seed"])
        summary[name] = {"description": members[0]["description"], "seeds": [r["seed"] for r in members],
                         **summarise([r["history"] for r in members])}
    dense = summary.get("dense")
    lines = [
        "| variant | what | seeds | epochs | best val acc % | final val acc % | final vs dense (pp) "
        "| final train−val gap (pp) | train s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        delta = "–"
        if dense is not None and name != "dense":
            delta = f"{100 * (s['final_val_acc']['mean'] - dense['final_val_acc']['mean']):+.2f}"
        epochs = ",".join(map(str, s["epochs"]))
        lines.append(f"| `{name}` | {s['description']} | {s['n']} | {epochs} | {_pct(s['best_val_acc'])} "
                     f"| {_pct(s['final_val_acc'])} | {delta} | {_pct(s['final_gap'])} | {_secs(s['s_per_epoch'])} |")
    text = "\n".join(lines)
    authors_summary = {}
    if authors:
        kinds = {"dense (N runs)": [h for n, h in authors.items() if n.startswith("N")],
                 "RSK filter, keep 1.0 → 0.3 (Y runs)": [h for n, h in authors.items() if n.startswith("Y")]}
        rows = ["| authors' run | runs | epochs | best val acc % | final val acc % | final train−val gap (pp) |",
                "|---|---|---|---|---|---|"]
        ours = max(len(r["history"]) for r in runs)
        # the authors' runs cut at our epoch count too: what they had seen by then
        cuts = sorted({ours, max(len(h) for h in authors.values())})
        for cut in cuts:
            for kind, histories in kinds.items():
                if histories and min(len(h) for h in histories) >= cut:
                    s = summarise([h[:cut] for h in histories])
                    authors_summary[f"{kind}, first {cut} epochs"] = s
                    rows.append(f"| {kind} | {s['n']} | {cut} | {_pct(s['best_val_acc'])} "
                                f"| {_pct(s['final_val_acc'])} | {_pct(s['final_gap'])} |")
        text += "\n\nThe authors' Keras logs (Fashion-MNIST, their notebook), summarised the same way:\n\n" + "\n".join(rows)
    return text, {"variants": summary, "authors": authors_summary}


def mean_curve(histories: list[list[dict]], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    epochs = min(len(h) for h in histories)
    xs = list(range(1, epochs + 1))
    values = [[_value(h[i], key) for h in histories] for i in range(epochs)]
    return xs, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def _value(row: dict, key: str) -> float:
    return row["train_acc"] - row["val_acc"] if key == "gap" else row[key]


CURVES = (("val_acc", "validation accuracy"), ("val_loss", "validation loss"),
          ("gap", "train − validation accuracy (overfitting)"))


def plot(runs: list[dict], authors: dict[str, list[dict]], out: str, log) -> list[str]:
    """``val-acc.png``, ``val-loss.png``, ``gap.png`` (the authors' curves on the left where
    given, ours on the right, same axes) and ``sweep.png`` when keep-sweep runs exist."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots: skipped, matplotlib is not installed (pip install matplotlib)")
        return []
    groups: dict[str, list[list[dict]]] = {}
    for run in runs:
        groups.setdefault(run["variant"], []).append(run["history"])
    names = sorted(groups, key=_order)
    our_epochs = max(len(h) for hs in groups.values() for h in hs)
    last_epoch = max([our_epochs] + [len(rows) for rows in authors.values()])
    written = []
    panels = 2 if authors else 1
    for key, label in CURVES:
        fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), sharey=True, squeeze=False)
        ours = axes[0, -1]
        shown = []
        for name in names:
            xs, mean, low, high = mean_curve(groups[name], key)
            line, = ours.plot(xs, mean, label=f"{name} (n={len(groups[name])})",
                              linestyle="--" if name.startswith(SWEEP_PREFIX) else "-")
            ours.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
            shown += low[2:] + high[2:]
        ours.set_title("rskcnn (PyTorch): mean over seeds, band = min..max", fontsize=10)
        if authors:
            theirs = axes[0, 0]
            for name, rows in sorted(authors.items()):
                dense = name.startswith("N")
                values = [_value(r, key) for r in rows]
                theirs.plot([r["epoch"] for r in rows], values, color="tab:blue" if dense else "tab:orange",
                            alpha=0.8, label=name + (" dense" if dense else " RSK"))
                shown += values[2:]
            if our_epochs < last_epoch:
                theirs.axvline(our_epochs, color="grey", linestyle=":", label=f"our last epoch ({our_epochs})")
            theirs.set_title("authors (Keras logs, 60k images): N = dense, Y = RSK filter 1.0 → 0.3", fontsize=10)
            theirs.legend(fontsize=7)
        for ax in axes[0]:
            ax.set_xlabel("epoch")
            ax.set_xlim(0.5, last_epoch + 0.5)
            ax.grid(alpha=0.3)
        if shown:  # the first two epochs would squash the interesting part
            span = max(shown) - min(shown)
            axes[0, 0].set_ylim(min(shown) - 0.05 * span, max(shown) + 0.05 * span)
        axes[0, 0].set_ylabel(label)
        ours.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, f"{key.replace('_', '-')}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    sweep = sweep_points(runs)
    if any(r["variant"].startswith(SWEEP_PREFIX) for r in runs) and len(sweep) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("final_val_acc", "final"), ("best_val_acc", "best")):
            ps = sorted(sweep)
            means = [statistics.fmean(sweep[p][key]) for p in ps]
            ax.plot(ps, means, marker="o", label=f"{label} validation accuracy")
            for p in ps:
                ax.scatter([p] * len(sweep[p][key]), sweep[p][key], color="grey", s=8, zorder=3)
        ax.set_xlabel("keep probability p (1.0 = dense)")
        ax.set_ylabel("validation accuracy")
        ax.set_title("keep sweep (RSK filter with the authors' schedule); dots = seeds", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, "sweep.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def sweep_points(runs: list[dict]) -> dict[float, dict[str, list[float]]]:
    """{keep p: final and best val acc per run} over the sweep, rsk-schedule (at its keep) and dense (p = 1)."""
    points: dict[float, dict[str, list[float]]] = {}
    for run in runs:
        name = run["variant"]
        if name == "dense":
            p = 1.0
        elif name == "rsk-schedule" or name.startswith(SWEEP_PREFIX):
            p = run["keep_prob"]
        else:
            continue
        entry = points.setdefault(p, {"final_val_acc": [], "best_val_acc": []})
        entry["final_val_acc"].append(run["history"][-1]["val_acc"])
        entry["best_val_acc"].append(max(r["val_acc"] for r in run["history"]))
    return points


def write_report(out: str, authors_logs: str | None = None, plots: bool = True, log=print) -> str:
    runs = read_runs(out)
    if not runs:
        raise FileNotFoundError(f"no runs in {os.path.join(out, 'runs')}: nothing to report")
    authors = read_authors(authors_logs, out)
    if authors and authors_logs is not None:
        write_authors_csv(authors, os.path.join(out, AUTHORS_CSV))
    table, summary = tables(runs, authors)
    commands = sorted({r["command"] for r in runs})
    machine = runs[-1]["machine"]
    header = [
        "# references/paper/train.py: results", "",
        f"Dataset: {runs[0]['settings']['dataset']} ({runs[0]['settings']['train_images']} train, "
        f"{runs[0]['settings']['val_images']} validation images). Machine: {machine['cpu']}, "
        f"{machine['logical_cpus']} logical CPUs, {machine['threads']} torch threads, torch {machine['torch']}, "
        f"Python {machine['python']}.",
        f"Total training wall time over {len(runs)} runs: {sum(r['wall_s'] for r in runs) / 60:.1f} min.", "",
        "Accuracies are percent; ± is the sample standard deviation over seeds. The gap is the last "
        "epoch's running training accuracy (train mode, as Keras reports it) minus its validation "
        "accuracy. s/epoch is the training pass alone.", "",
        table, "", "Commands:", "", *[f"    {c}" for c in commands], "",
    ]
    text = "\n".join(header)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"summary": summary, "commands": commands, "machine": machine}, f, indent=1)
    if plots:
        for path in plot(runs, authors, out, log):
            log(f"wrote {path}")
    return table
