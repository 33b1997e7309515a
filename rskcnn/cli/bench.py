"""``python -m rskcnn bench``: the options of :func:`rskcnn.bench.run_bench`; writes
``{out}/{tag}.json`` and ``{out}/{tag}.md`` and prints the Markdown."""

from __future__ import annotations

import argparse
import shlex
import sys

from rskcnn.bench import (COMPACT_IDEAL, DTYPES, FULL, LAYERS, MASKED_DENSE, PASSES, QUICK, QUICK_LAYERS, TIMINGS,
                          BenchConfig, BenchConfigError, default_tag, markdown, run_bench, write_result)
from rskcnn.bench.graphs import REPEATS, REPLAYS

from .arguments import add_command, comma_separated, keep_probs, names, non_negative_int, positive, positive_pair, share


def add_parser(commands) -> None:
    from rskcnn import GRANULARITIES, LAWS

    parser = add_command(
        commands, "bench", run,
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
    parser.add_argument("--threads", type=positive(int), default=None,
                        help="torch.set_num_threads (default: torch.get_num_threads())")
    parser.add_argument("--layers", type=names(tuple(LAYERS)), default=None,
                        help=f"comma-separated subset of {', '.join(LAYERS)} (default: all; --quick: "
                        f"{', '.join(QUICK_LAYERS)})")
    parser.add_argument("--batch", type=positive(int), default=None,
                        help="batch for every layer (default: each layer's own)")
    parser.add_argument("--granularities", type=names(GRANULARITIES), default=GRANULARITIES,
                        help=f"comma-separated subset of {', '.join(GRANULARITIES)} (default: all)")
    parser.add_argument("--block-size", type=positive_pair, default=(32, 32), metavar="BO,BI",
                        help="block size of the 'block' granularity (default: 32,32)")
    parser.add_argument("--keep-probs", type=keep_probs, default=None,
                        help="comma-separated keep probabilities (default: 0.25,0.5,0.75; --quick: 0.5)")
    parser.add_argument("--passes", type=names(PASSES), default=PASSES,
                        help=f"comma-separated subset of {', '.join(PASSES)} (default: all)")
    parser.add_argument("--backends", type=comma_separated, default=None,
                        help=f"comma-separated list of {MASKED_DENSE}, {COMPACT_IDEAL} (dense conv on the kept "
                        f"filters alone: the compaction path without gathers or scatters; filter masks only) "
                        f"and rskcnn backend names (default: {MASKED_DENSE} and every available backend but "
                        f"reference, plus {COMPACT_IDEAL} on the CPU for filter masks); dense is always measured")
    parser.add_argument("--skip-unavailable", action="store_true",
                        help="record a backend named in --backends that this build lacks or cannot use on the "
                        "device as skipped, with the reason, instead of stopping")
    parser.add_argument("--law", choices=LAWS, default="bernoulli",
                        help="the masks' law (rskcnn.sample_mask's law): bernoulli (the paper's, default) or exact "
                        "(every row keeps exactly max(1, round(p * n)) of its n entries)")
    parser.add_argument("--timing", choices=TIMINGS, default=None,
                        help="graph (default on cuda): each pass as CUDA-graph replays between CUDA events, "
                        "interleaved with dense (kernel time), with the eager wall-clock beside it; eager (the "
                        "only timing on cpu): the wall-clock alone")
    parser.add_argument("--graph-replays", type=positive(int), default=REPLAYS,
                        help=f"replays between one pair of CUDA events in graph timing (default: {REPLAYS})")
    parser.add_argument("--graph-repeats", type=positive(int), default=REPEATS,
                        help=f"rounds of graph timing; a pass's time is the median over them (default: {REPEATS})")
    parser.add_argument("--min-run-time", type=positive(float), default=None,
                        help=f"seconds per timing (default: {FULL['min_run_time']}; --quick: {QUICK['min_run_time']})")
    parser.add_argument("--retries", type=non_negative_int, default=None,
                        help="times a configuration is timed again when other processes were busy "
                        f"(default: {FULL['retries']}; --quick: {QUICK['retries']})")
    parser.add_argument("--busy-share", type=share, default=0.05,
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
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr (there is none either when the optional tqdm "
                        "is not installed; the bench runs the same)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run the options ask for; the command line is recorded in the result."""
    return BenchConfig(
        device=args.device, dtype=args.dtype, channels_last=args.channels_last, tf32=args.tf32,
        threads=args.threads, layers=args.layers, batch=args.batch, granularities=tuple(args.granularities),
        block_size=tuple(args.block_size), keep_probs=args.keep_probs, passes=tuple(args.passes),
        backends=args.backends, min_run_time=args.min_run_time, retries=args.retries,
        busy_share=args.busy_share, seed=args.seed, quick=args.quick, default_malloc=args.default_malloc,
        progress=not args.no_progress, timing=args.timing, graph_replays=args.graph_replays,
        graph_repeats=args.graph_repeats, law=args.law, skip_unavailable=args.skip_unavailable,
        command="python -m rskcnn " + shlex.join(getattr(args, "argv", None) or ["bench"]),
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as error:  # options that contradict each other, e.g. --timing graph on cpu
        raise SystemExit(f"rskcnn bench: {error}") from None
    try:
        result = run_bench(config)
    except BenchConfigError as error:
        raise SystemExit(f"rskcnn bench: {error}") from None
    json_path, md_path = write_result(result, args.out, args.tag or default_tag(config))
    print(markdown(result))
    print(f"rskcnn bench: wrote {json_path} and {md_path} in {result['elapsed_s']:.0f} s", file=sys.stderr)
    if result["errors"]:
        print(f"rskcnn bench: {len(result['errors'])} timings failed; see 'Not measured' above", file=sys.stderr)
        return 1
    return 0
