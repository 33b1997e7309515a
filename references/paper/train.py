"""The paper's experiment: the authors' 6-layer CNN, dense against RSK (filter, element,
scheduled), Dropout2d, DropBlock and a keep-probability sweep, over several seeds, offline.

    python references/paper/train.py --quick          # from the root of a checkout
    python references/paper/train.py --help

It uses rskcnn as any user would (``pip install -e ".[paper]"`` also installs numpy, tqdm,
scikit-learn and matplotlib) and imports its sibling modules ``data``, ``model`` and ``report``
from this folder, which Python puts first on ``sys.path`` when it runs the script.

Writes ``{out}/runs/{variant}_seed{seed}.csv`` (one row per epoch) and ``.json`` (settings,
history, summary), then ``{out}/results.md``/``results.json`` (mean ± std over seeds) and PNG
curves, from every run found in ``{out}/runs`` (so several processes may share one ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import sys
import time

import torch
import torch.nn.functional as F

from rskcnn import GRANULARITIES, KeepProbScheduler
from rskcnn.schedule import SCHEDULES

import data
import model
import report

# The command recorded in the results, as run from the checkout's root.
COMMAND = "python references/paper/train.py"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUICK = {"epochs": 8, "seeds": (0,), "sweep": (0.5,), "train_subset": 2000, "val_subset": 1000}
FULL = {"epochs": 40, "seeds": (0, 1, 2), "sweep": (0.3, 0.5, 0.7, 0.9), "train_subset": None, "val_subset": None}
# The authors lower keep by 0.1 per epoch (1.0, 0.9, ..., 0.3), so by default a schedule
# towards p takes (1 - p) / 0.1 epochs.
AUTHORS_KEEP_STEP = 0.1


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in model.VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {', '.join(model.VARIANTS)}, got {text!r}")
    return names


def _probs(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        probs = tuple(float(p) for p in text.split(","))
    except ValueError:
        probs = ()
    if not probs or not all(0.0 < p <= 1.0 for p in probs):
        raise argparse.ArgumentTypeError(f"expected comma-separated keep probabilities in (0, 1] or 'none', got {text!r}")
    return probs


def _keep(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a keep probability in (0, 1], got {text!r}")
    return value


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated ints >= 0, got {text!r}")
    return seeds


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Trains the authors' 6-layer CNN (Adam 1e-3, batch 128) as each variant over "
        "several seeds, offline, and writes per-epoch logs, a Markdown table (mean ± std of best and "
        "final validation accuracy, final train-val gap, s/epoch) and PNG curves. The official test "
        "set is the validation set, as in the authors' notebooks.",
    )
    parser.add_argument("--dataset", choices=data.DATASETS, default="digits",
                        help="digits: scikit-learn's bundled 8x8 digits (no download, the default); "
                        "fashion-mnist: Debian's dataset-fashion-mnist or --data-dir; mnist, cifar10, "
                        "cifar100: --data-dir")
    parser.add_argument("--data-dir", help="folder with the IDX files (MNIST, Fashion-MNIST, .gz or not) "
                        "or the CIFAR python pickles")
    parser.add_argument("--variants", type=_variants, default=model.VARIANTS, metavar="V1,V2",
                        help=f"subset of {','.join(model.VARIANTS)} (default: all)")
    parser.add_argument("--keep-prob", type=_keep, default=0.3,
                        help="keep of the RSK variants, the schedule's target, and 1 - drop rate of "
                        "dropout2d/dropblock (default 0.3, the authors' final Fashion-MNIST keep)")
    parser.add_argument("--sweep", type=_probs, default=None, metavar="P1,P2",
                        help="scheduled-RSK runs at each keep p ('none' for no sweep; default "
                        f"{','.join(map(str, FULL['sweep']))}; a p equal to --keep-prob reuses rsk-schedule)")
    parser.add_argument("--sweep-seeds", type=_seeds, default=None, metavar="S1,S2",
                        help="seeds of the sweep, dropout2d and dropblock runs (default: --seeds)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="linear",
                        help="shape of the keep schedule from 1.0 to --keep-prob (default linear)")
    parser.add_argument("--decay-epochs", type=_positive, default=None,
                        help="epochs of the decay (default: the authors' 0.1 per epoch, (1 - p) / 0.1)")
    parser.add_argument("--warmup-epochs", type=_non_negative, default=0,
                        help="epochs held at keep 1.0 before the decay (default 0)")
    parser.add_argument("--schedule-granularity", choices=GRANULARITIES, default="filter",
                        help="granularity of rsk-schedule and the sweep (default filter, the authors' code)")
    parser.add_argument("--epochs", type=_positive, default=None, help="epochs per run (default 40, --quick 8)")
    parser.add_argument("--batch-size", type=_positive, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, Keras's)")
    parser.add_argument("--seeds", type=_seeds, default=None, metavar="S1,S2",
                        help="seeds (default 0,1,2; --quick 0)")
    parser.add_argument("--train-subset", type=_positive, default=None,
                        help="train on a fixed random subset of this many images (default: all)")
    parser.add_argument("--val-subset", type=_positive, default=None,
                        help="validate on a fixed random subset of this many images (default: all)")
    parser.add_argument("--threads", type=_positive, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/train/DATASET in this checkout)")
    parser.add_argument("--authors-logs", default=None,
                        help="the authors' Keras logs (folder of N*.txt/Y*.txt) or their parsed CSV, "
                        "plotted beside ours")
    parser.add_argument("--skip-done", action="store_true", help="keep runs whose JSON log is already in OUT/runs")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rebuild the table and plots from OUT/runs")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quick", action="store_true",
                        help="8 epochs, seed 0, sweep 0.5, at most 2000 train / 1000 val images: under 2 minutes")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the defaults that depend on --quick."""
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sweep_seeds is None:
        args.sweep_seeds = args.seeds
    if args.out is None:
        # anchored at the checkout, not the working directory, as the script runs from anywhere
        args.out = os.path.join(CHECKOUT, "benchmarks", "results", "train",
                                args.dataset + ("-quick" if args.quick else ""))
    return args


def plan(args: argparse.Namespace) -> list[tuple[model.Variant, int]]:
    """(variant, seed) pairs, seed-major for the core variants so that an interrupted run still
    has every variant at its first seeds; then the sweep and the extras."""
    core = [v for v in args.variants if v in model.CORE_VARIANTS]
    extra = [v for v in args.variants if v in model.EXTRA_VARIANTS]
    if "dropblock" in extra and not model.has_torchvision():
        print("dropblock: skipped, torchvision is not installed (pip install torchvision gives "
              "torchvision.ops.DropBlock2d)", flush=True)
        extra.remove("dropblock")
    sweep = []
    for p in args.sweep:
        if p == args.keep_prob and "rsk-schedule" in core:
            print(f"sweep {p:g}: same as rsk-schedule, reported from its runs", flush=True)
            continue
        sweep.append(f"{model.SWEEP_PREFIX}{p:g}")
    runs = [(name, seed) for seed in args.seeds for name in core]
    runs += [(name, seed) for seed in args.sweep_seeds for name in sweep + extra]
    return [(model.make_variant(name, args.keep_prob, args.schedule_granularity), seed)
            for name, seed in runs]


def evaluate(net, split: data.Split, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode."""
    net.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
            logits = net(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    return loss / len(split), correct / len(split)


def train_run(variant: model.Variant, seed: int, dataset: data.Data, args, log) -> dict:
    from tqdm import tqdm

    torch.manual_seed(seed)
    net = model.paper_cnn(variant, tuple(dataset.train.x.shape[1:]), dataset.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    scheduler = None
    if variant.scheduled:
        decay = args.decay_epochs or max(1, round((1.0 - variant.keep_prob) / AUTHORS_KEEP_STEP))
        scheduler = KeepProbScheduler(net, args.schedule, decay_epochs=decay, warmup_epochs=args.warmup_epochs)
    order = model.seeded(seed)
    history = []
    for epoch in range(args.epochs):
        keep = scheduler.get_last_keep_prob()[0] if scheduler else variant.keep_prob
        net.train()
        permutation = torch.randperm(len(dataset.train), generator=order)
        loss_sum, correct = 0.0, 0
        start = time.perf_counter()
        batches = range(0, len(dataset.train), args.batch_size)
        for i in tqdm(batches, desc=f"{variant.name} s{seed} {epoch + 1}/{args.epochs}", leave=False,
                      disable=None, unit="batch"):
            index = permutation[i:i + args.batch_size]
            x, y = dataset.train.x[index], dataset.train.y[index]
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        val_loss, val_acc = evaluate(net, dataset.val)
        eval_s = time.perf_counter() - start
        row = {"epoch": epoch + 1, "keep_prob": keep, "train_loss": loss_sum / len(dataset.train),
               "train_acc": correct / len(dataset.train), "val_loss": val_loss, "val_acc": val_acc,
               "train_s": train_s, "eval_s": eval_s}
        if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
            raise RuntimeError(f"{variant.name} seed {seed}: the loss became {row['train_loss']} at epoch {epoch + 1}")
        history.append(row)
        log(f"{variant.name:>14} seed {seed} epoch {epoch + 1:>2}/{args.epochs} keep {keep:.2f} "
            f"loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} val_loss {val_loss:.4f} "
            f"val_acc {val_acc:.4f} ({train_s:.1f} s + {eval_s:.1f} s eval)")
        if scheduler:
            scheduler.step()  # the authors set the new keep at each epoch end
    return {"variant": variant.name, "description": variant.describe(), "seed": seed,
            "regulariser": variant.regulariser, "keep_prob": variant.keep_prob,
            "granularity": variant.granularity if variant.regulariser == "rsk" else None,
            "scheduled": variant.scheduled, "schedule": args.schedule if variant.scheduled else None,
            "parameters": model.count_parameters(net), "history": history}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def write_run(path_stem: str, result: dict) -> None:
    with open(path_stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result["history"][0]))
        writer.writeheader()
        writer.writerows(result["history"])
    with open(path_stem + ".json", "w") as f:
        json.dump(result, f, indent=1)


def run(args: argparse.Namespace) -> int:
    args = resolve(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs_dir = os.path.join(args.out, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    command = COMMAND + " " + shlex.join(getattr(args, "argv", sys.argv[1:]))

    def log(message: str) -> None:
        print(message, flush=True)

    if not args.report_only:
        dataset = data.load(args.dataset, args.data_dir)
        dataset = data.Data(dataset.name, dataset.train.subset(args.train_subset),
                            dataset.val.subset(args.val_subset), dataset.num_classes, dataset.source)
        log(f"{dataset.name}: {len(dataset.train)} train, {len(dataset.val)} validation images "
            f"{tuple(dataset.train.x.shape[1:])} from {dataset.source}; {torch.get_num_threads()} threads")
        settings = {k: v for k, v in vars(args).items() if k != "argv"}
        settings.update(dataset_source=dataset.source, train_images=len(dataset.train), val_images=len(dataset.val))
        started = time.time()
        for variant, seed in plan(args):
            stem = os.path.join(runs_dir, f"{variant.name}_seed{seed}")
            if args.skip_done and os.path.exists(stem + ".json"):
                log(f"{variant.name} seed {seed}: done already ({stem}.json)")
                continue
            log(f"{variant.name} seed {seed}: {variant.describe()}")
            run_start = time.time()
            result = train_run(variant, seed, dataset, args, log)
            result.update(settings=settings, command=command, machine=machine(),
                          wall_s=time.time() - run_start, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
            write_run(stem, result)
        log(f"trained in {time.time() - started:.0f} s")
    table = report.write_report(args.out, authors_logs=args.authors_logs, plots=not args.no_plots, log=log)
    print(table, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the results
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
