"""``python -m rskcnn bench``: dense ``F.conv2d``, masked-dense (the paper's way) and every
available rskcnn backend, per layer, granularity, keep probability and pass, timed in one
run with ``torch.utils.benchmark``; writes ``{out}/{tag}.json`` and ``{out}/{tag}.md``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from .layers import LAYERS, QUICK_LAYERS
from .passes import DENSE, MASKED_DENSE, PASSES
from .sweep import DTYPES

FULL = {"keep_probs": (0.25, 0.5, 0.75), "min_run_time": 0.5, "retries": 2}
QUICK = {"keep_probs": (0.5,), "min_run_time": 0.05, "retries": 0}


def _names(choices):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(choices)}, got {text!r}")
        return names
    return parse


def _probs(text: str) -> tuple[float, ...]:
    try:
        probs = tuple(float(p) for p in text.split(","))
    except ValueError:
        probs = ()
    if not probs or not all(0.0 < p <= 1.0 for p in probs):
        raise argparse.ArgumentTypeError(f"expected comma-separated keep probabilities in (0, 1], got {text!r}")
    return probs


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def add_parser(commands) -> None:
    from rskcnn import GRANULARITIES

    from .info import _pair

    parser = commands.add_parser(
        "bench",
        help="time dense, masked-dense and the rskcnn backends",
        description="Times dense F.conv2d, masked-dense (weight * mask, then dense conv: the paper's way) "
        "and every available rskcnn backend on the benchmark layers, for each granularity, keep "
        "probability and pass (forward, grad-input, grad-weight, training step). Dense is measured "
        "in the same run; results go to {out}/{tag}.json and .md, and the table to stdout.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"one small layer ({', '.join(QUICK_LAYERS)}, smaller batch), p=0.5, "
                        f"min_run_time {QUICK['min_run_time']} s: under a minute on 2 cores")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--channels-last", action="store_true", help="channels_last input and weight")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 for fp32 convolutions and matmuls on CUDA (off by default)")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="torch.set_num_threads (default: torch.get_num_threads())")
    parser.add_argument("--layers", type=_names(tuple(LAYERS)), default=None,
                        help=f"comma-separated subset of {', '.join(LAYERS)} (default: all; --quick: "
                        f"{', '.join(QUICK_LAYERS)})")
    parser.add_argument("--batch", type=_positive(int), default=None,
                        help="batch for every layer (default: each layer's own)")
    parser.add_argument("--granularities", type=_names(GRANULARITIES), default=GRANULARITIES,
                        help=f"comma-separated subset of {', '.join(GRANULARITIES)} (default: all)")
    parser.add_argument("--block-size", type=_pair, default=(32, 32), metavar="BO,BI",
                        help="block size of the 'block' granularity (default: 32,32)")
    parser.add_argument("--keep-probs", type=_probs, default=None,
                        help="comma-separated keep probabilities (default: 0.25,0.5,0.75; --quick: 0.5)")
    parser.add_argument("--passes", type=_names(PASSES), default=PASSES,
                        help=f"comma-separated subset of {', '.join(PASSES)} (default: all)")
    parser.add_argument("--backends", type=lambda t: tuple(n.strip() for n in t.split(",") if n.strip()),
                        default=None,
                        help=f"comma-separated list of {MASKED_DENSE} and rskcnn backend names "
                        f"(default: {MASKED_DENSE} and every available backend but reference); "
                        f"dense is always measured")
    parser.add_argument("--min-run-time", type=_positive(float), default=None,
                        help=f"seconds per timing (default: {FULL['min_run_time']}; --quick: {QUICK['min_run_time']})")
    parser.add_argument("--retries", type=_non_negative, default=None,
                        help="times a configuration is timed again when other processes were busy "
                        f"(default: {FULL['retries']}; --quick: {QUICK['retries']})")
    parser.add_argument("--busy-share", type=_share, default=0.05,
                        help="share of all CPUs that other processes may use while a configuration is timed "
                        "before it is timed again (default: 0.05; read from /proc/stat)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the masks' generator")
    parser.add_argument("--out", default="benchmarks/results", help="output folder (default: benchmarks/results)")
    parser.add_argument("--tag", default=None,
                        help="output file name without extension (default: {device}-{dtype}"
                        "[-channels_last][-tf32][-quick])")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's default malloc thresholds (by default the bench raises them so that "
                        "freed buffers are not returned to the OS and page-faulted in again on every call)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def resolve_backends(requested, device: torch.device) -> list[str]:
    """masked-dense plus the rskcnn backends to time; exits with the reasons for an unusable one."""
    import rskcnn
    from rskcnn.backends import BACKENDS, unavailable_reasons

    available = [b for b in rskcnn.available_backends(device) if b != "reference"]
    if requested is None:
        # Triton on the CPU is its interpreter, a test tool: timed only when asked for.
        return [MASKED_DENSE, *(b for b in available if not (b == "triton" and device.type == "cpu"))]
    chosen = []
    for name in requested:
        name = MASKED_DENSE if name == "reference" else name
        if name == DENSE:
            continue  # always measured
        if name != MASKED_DENSE and name not in BACKENDS:
            raise SystemExit(f"rskcnn bench: unknown backend {name!r}; "
                             f"choose from {MASKED_DENSE}, {', '.join(BACKENDS)}")
        if name != MASKED_DENSE and name not in available:
            raise SystemExit(f"rskcnn bench: backend {name!r} is not usable on {device.type}: "
                             f"{unavailable_reasons(device).get(name)}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def configure_device(args) -> torch.device:
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("rskcnn bench: --device cuda, but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        return torch.device("cuda", torch.cuda.current_device())
    if args.tf32:
        raise SystemExit("rskcnn bench: --tf32 applies to --device cuda only")
    return torch.device("cpu")


def default_tag(args) -> str:
    tag = f"{args.device}-{args.dtype}"
    if args.channels_last:
        tag += "-channels_last"
    if args.tf32:
        tag += "-tf32"
    return tag + ("-quick" if args.quick else "")


def _settings(args, device: torch.device, threads: int, backends: list[str], malloc: str) -> dict:
    from . import report

    defaults = QUICK if args.quick else FULL
    return {
        "device": device.type, "dtype": args.dtype,
        "tf32": bool(args.tf32) if device.type == "cuda" else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        "tf32_flags": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                       "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        if device.type == "cuda" else None,
        "memory_format": "channels_last" if args.channels_last else "contiguous (NCHW)",
        "threads": threads, "malloc": malloc, "quick": args.quick,
        "min_run_time": args.min_run_time or defaults["min_run_time"], "seed": args.seed,
        "retries": defaults["retries"] if args.retries is None else args.retries, "busy_share": args.busy_share,
        "layers": list(args.layers or (QUICK_LAYERS if args.quick else tuple(LAYERS))),
        "batch": args.batch, "granularities": list(args.granularities), "block_size": list(args.block_size),
        "keep_probs": list(args.keep_probs or defaults["keep_probs"]),
        "passes": [p for p in PASSES if p in args.passes], "backends": [DENSE, *backends],
        "date": report.now(),
        "command": "python -m rskcnn " + shlex.join(getattr(args, "argv", None) or ["bench"]),
    }


def run(args: argparse.Namespace) -> int:
    from . import report
    from .sweep import time_all
    from .timing import Timed, cpu_counters, others_cpu_share, steady_malloc

    started, counters = time.perf_counter(), cpu_counters()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = configure_device(args)
    malloc = "default" if args.default_malloc or device.type != "cpu" else steady_malloc()
    settings = _settings(args, device, threads, resolve_backends(args.backends, device), malloc)
    plan = [(LAYERS[name], args.batch or (LAYERS[name].quick_batch if args.quick else LAYERS[name].batch))
            for name in settings["layers"]]
    result = {"schema": "rskcnn-bench/1", "machine": report.machine_info(device, threads), "settings": settings,
              "layers": [layer.to_dict(batch) for layer, batch in plan], "records": [], "skipped": [], "errors": []}

    per_layer = (len(settings["passes"]) * len(settings["granularities"]) * len(settings["keep_probs"])
                 * len(settings["backends"]))
    timed = Timed(per_layer * len(plan), threads, settings["min_run_time"], device, args.no_progress)
    try:
        for point in time_all(plan, settings, device, timed):
            for key in ("records", "skipped", "errors"):
                result[key] += point[key]
    finally:
        timed.close()

    result["load_average_end"] = report.load_average()
    result["others_cpu_share"] = others_cpu_share(counters, cpu_counters())
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    json_path, md_path = report.write(result, args.out, args.tag or default_tag(args))
    print(report.markdown(result))
    print(f"rskcnn bench: wrote {json_path} and {md_path} in {result['elapsed_s']:.0f} s", file=sys.stderr)
    if result["errors"]:
        print(f"rskcnn bench: {len(result['errors'])} timings failed; see 'Not measured' above", file=sys.stderr)
        return 1
    return 0
