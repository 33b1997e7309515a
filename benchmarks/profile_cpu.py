"""Profiles one pass of the rskcnn ``cpu`` backend (and dense F.conv2d) on a bench layer.

The data, the mask and the timed callables are the bench's own (rskcnn.bench.bench_tensors,
rskcnn.bench.make_pass), so a profile here is of exactly what ``python -m rskcnn bench`` times.

  # time one configuration (and dense, same pass, same process), one thread
  python benchmarks/profile_cpu.py run --layer vgg16 --granularity element --keep 0.5 --pass forward

  # the same under `perf record` (cpu-clock samples with DWARF call chains), then the share
  # of the samples in each phase of the kernel, written to --out
  python benchmarks/profile_cpu.py perf --layer vgg16 --granularity element --keep 0.5 --pass forward

  # every granularity x {paper, vgg16} x {forward, grad-input, grad-weight} at keep 0.5,
  # plus dense: writes benchmarks/results/cpu-profile/{phases.md,phases.json,top-frames.txt,torch-ops.txt}
  python benchmarks/profile_cpu.py all

Phases come from the innermost frame of each sample that names one (inlined frames of the
extension are recovered with addr2line from its debug info; oneDNN's JIT code is named
through its perf map, ONEDNN_JIT_PROFILE=2). Only samples taken while the timed loop ran
are counted (perf -k mono and the loop's CLOCK_MONOTONIC window).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "cpu-profile"
GRANULARITIES = ("element", "tap", "filter", "block")
PROFILED_PASSES = ("forward", "grad-input", "grad-weight")


# ----------------------------------------------------------------------------- run


def build(layer_name: str, granularity: str, keep: float, pass_name: str, backend: str,
          seed: int = 0, block_size=(32, 32), batch: int | None = None):
    """The bench's callable for one (layer, granularity, keep, pass, backend) and what it computes."""
    import torch

    from rskcnn import block_shape, expand_mask, sample_mask
    from rskcnn.bench import LAYERS, backend_conv, bench_tensors, dense_conv, make_pass

    layer = LAYERS[layer_name]
    batch = batch or layer.batch
    x, w, b, grad_output = bench_tensors(layer, batch, seed=seed, dtype="float32", device="cpu")
    block = block_shape(granularity, layer.weight_shape, tuple(block_size))
    generator = torch.Generator().manual_seed(seed)  # as the bench draws it
    mask = sample_mask(layer.weight_shape, keep, block, generator=generator, device="cpu")
    kept = expand_mask(mask, block, layer.weight_shape).float().mean().item()
    if backend == "dense":
        conv = dense_conv(layer.stride, layer.padding)
    else:
        conv = backend_conv(backend, mask, block, layer.stride, layer.padding)
    flops = layer.forward_flops(batch) * (3 if pass_name == "step" else 1)
    info = {"layer": layer_name, "batch": batch, "granularity": granularity, "keep_prob": keep,
            "block": list(block), "kept_fraction": round(kept, 4), "pass": pass_name,
            "backend": backend, "dense_gflop": flops / 1e9}
    return make_pass(conv, pass_name, x, w, b, grad_output), info


def time_loop(fn, seconds: float, min_calls: int = 3) -> tuple[list[float], list[float]]:
    """Wall-clock and this process's CPU time of each call. With one thread the CPU time is the
    time on a core: it leaves out the time other processes took the core, which on this shared
    2-core machine is most of the wall-clock noise."""
    walls, cpus = [], []
    start = time.perf_counter()
    while len(walls) < min_calls or time.perf_counter() - start < seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
    return walls, cpus


def cmd_run(args) -> dict:
    import torch

    from rskcnn.bench import steady_malloc

    torch.set_num_threads(args.threads)
    malloc = steady_malloc()
    result = {"threads": torch.get_num_threads(), "malloc": malloc,
              "loadavg_start": list(os.getloadavg())}
    if args.compare_dense and args.backend != "dense":
        dense_fn, _ = build(args.layer, args.granularity, args.keep, args.pass_name, "dense", args.seed)
        dense_fn()
        dense_walls, dense_cpus = time_loop(dense_fn, args.dense_seconds)
        result["dense_wall_median_s"] = statistics.median(dense_walls)
        result["dense_median_s"] = statistics.median(dense_cpus)
        del dense_fn
    fn, info = build(args.layer, args.granularity, args.keep, args.pass_name, args.backend, args.seed)
    result.update(info)
    for _ in range(args.warmup):
        fn()
    cpu0 = time.process_time()
    result["window_monotonic"] = [time.monotonic(), None]
    walls, times = time_loop(fn, args.seconds)
    result["window_monotonic"][1] = time.monotonic()
    result["process_cpu_share"] = round((time.process_time() - cpu0) / (result["window_monotonic"][1]
                                                                          - result["window_monotonic"][0]), 3)
    median = statistics.median(times)
    useful = info["dense_gflop"] * (1.0 if args.backend == "dense" else info["kept_fraction"])
    result.update(calls=len(times), median_s=median, min_s=min(times), max_s=max(times),
                  wall_median_s=statistics.median(walls),
                  useful_gflop=useful, useful_gflops_per_s=useful / median)
    if "dense_median_s" in result:
        result["ratio_to_dense"] = median / result["dense_median_s"]
        result["dense_gflops_per_s"] = info["dense_gflop"] / result["dense_median_s"]
    if args.torch_ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.torch_ops):
                fn()
        result["torch_ops"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14,
                                                        max_name_column_width=44)
    result["loadavg_end"] = list(os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "torch_ops"}, indent=1))
        if "torch_ops" in result:
            print(result["torch_ops"])
    return result


# ----------------------------------------------------------------------------- phases

# (label, regex on a function name): the first frame, innermost first, whose function
# matches one of these names the sample's phase. Inlined frames of the extension count.
RSKCNN_PHASES = [
    ("multiply micro-kernel (sparse rows x columns)", r"sparse_rows_times_columns"),
    ("dot micro-kernel (sampled rows . columns)", r"sampled_row_column_dots"),
    ("column gather: copy (gather_planes)", r"gather_planes"),
    ("column gather: offsets", r"gather_input_columns|gather_grad_output_columns"),
    ("grad_output row gather", r"gather_rows"),
    ("scatter to NCHW (+bias)", r"scatter_rows"),
    ("row-group loop", r"multiply_chunk|correlate_chunk"),
    ("kept-weight gather", r"gather_kept_values"),
    ("plan + sparse-row build", r"build_plan|build_row_plan|build_column_plan|plan_row|plan_column|"
                                r"group_rows|output_channel_rows|input_channel_rows|decode_entry"),
    ("partial-sum reduction", r"grad_weight_kernel"),
    ("compacted: cell list", r"kept_cells"),
]
# Frames outside the extension, matched on "symbol (dso)".
# Whole-chain matches first: the ATen op a sample is under says more than its leaf (index_add_
# runs one add_kernel per kept filter).
OP_PHASES = [
    ("ATen index_select / index_add / index_copy (compaction)",
     r"index_select|index_add|index_copy|index_put|cpu_index_kernel|index_reduce"),
    ("ATen constant_pad_nd", r"constant_pad"),
]
OTHER_PHASES = [
    ("oneDNN primitive lookup / creation", r"primitive_hashing|primitive_cache|primitive_desc|"
                                          r"create_primitive|ideep.*attr|dnnl_primitive_desc"),
    ("ATen slow_conv2d / slow_conv_transpose2d own loops (im2col, col2im)",
     r"slow_conv|im2col|col2im|Unfold|unfolded"),
    ("oneDNN reorder / transpose", r"reorder|tr_src|trans_|jit_trans|transpose_"),
    ("oneDNN / MKL compute", r"jit_|dnnl|brgemm|brg_|mkl_|gemm|_conv_fwd|_conv_bwd|\[JIT\]|perf-\d+\.map"),
    ("ATen zeros / fill / pad / add / copy", r"fill_|zero_|constant_pad|copy_|add_kernel|add_out|"
                                            r"add_stub|_to_copy|contiguous|clone|mul_kernel|"
                                            r"cpu_kernel_vec|vectorized_loop|TensorIterator"),
    ("allocation (malloc/free, page faults)", r"malloc|free|_int_|memalign|mmap|munmap|page_fault|"
                                             r"clear_page|do_anonymous|alloc_pages|memcg|"
                                             r"CPUCachingAllocator|DefaultCPUAllocator|alloc_cpu|"
                                             r"_Znwm|_ZdlPv|operator new|operator delete"),
    ("Python interpreter", r"\(libpython|\(python3|_PyEval|PyObject_"),
    ("torch dispatch / autograd", r"libtorch_python|Dispatcher|autograd|OperatorHandle|"
                                  r"BoxedKernel|\(libc10\.so|VariableType|ADInplaceOrView|"
                                  r"TensorImpl|intrusive_ptr|Tensor[0-9A-Za-z_]*D[12]Ev"),
]
RSKCNN_RES = [(label, re.compile(p)) for label, p in RSKCNN_PHASES]
OP_RES = [(label, re.compile(p)) for label, p in OP_PHASES]
OTHER_RES = [(label, re.compile(p)) for label, p in OTHER_PHASES]
GENERIC = re.compile(r"memcpy|memmove|memset|__memcpy|__memset|libc\.so|ld-linux|\[unknown\]|kallsyms")
NOT_GENERIC = re.compile(r"page_fault|clear_page|_int_|malloc|free|memalign|do_anonymous|alloc_pages")


def _symbol_table(so: str) -> dict[str, int]:
    out = subprocess.run(["nm", "--defined-only", so], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            table[parts[2]] = int(parts[0], 16)
    return table


class InlineResolver:
    """Inline chains (innermost first) of addresses in the extension's .so, via addr2line."""

    def __init__(self, so: str):
        self.so = so
        self.symbols = _symbol_table(so)
        self.cache: dict[int, list[str]] = {}

    def resolve(self, addresses) -> None:
        todo = sorted({a for a in addresses if a not in self.cache})
        if not todo:
            return
        out = subprocess.run(["addr2line", "-i", "-f", "-C", "-a", "-e", self.so, *map(hex, todo)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        current = None
        i = 0
        while i < len(out):
            line = out[i]
            if line.startswith("0x") and re.fullmatch(r"0x[0-9a-f]+", line):
                current = int(line, 16)
                self.cache[current] = []
                i += 1
                continue
            self.cache[current].append(line)  # function name; the next line is file:line
            i += 2

    def chain(self, symbol: str, offset: int) -> list[str] | None:
        base = self.symbols.get(symbol)
        return None if base is None else self.cache.get(base + offset)


FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def parse_perf_script(text: str) -> list[list[tuple[str, int, str]]]:
    """Samples as lists of (symbol, offset, dso) frames, innermost first."""
    samples, frames = [], []
    for line in text.splitlines():
        if not line.strip():
            if frames:
                samples.append(frames)
                frames = []
            continue
        m = FRAME.match(line)
        if not m:
            continue  # the sample's header line
        sym, dso = m.group(2), m.group(3)
        off = 0
        mo = re.match(r"^(.*)\+0x([0-9a-f]+)$", sym)
        if mo:
            sym, off = mo.group(1), int(mo.group(2), 16)
        frames.append((sym, off, dso))
    if frames:
        samples.append(frames)
    return samples


def classify(samples, so_name: str, resolver: InlineResolver):
    """Phase per sample, and the innermost named function per sample (for the top-frames list)."""
    resolver.resolve(resolver.symbols[s] + o for frames in samples for s, o, d in frames
                     if d.endswith(so_name) and s in resolver.symbols)
    phases, leaves = collections.Counter(), collections.Counter()
    for frames in samples:
        phase = None
        leaf = _leaf(frames[0], so_name, resolver)
        first_ext = next((i for i, f in enumerate(frames) if f[2].endswith(so_name)), len(frames))
        for sym, _, dso in frames[:first_ext]:  # ATen ops called by the extension count as its own
            for label, rx in OP_RES:
                if "libtorch" in dso and rx.search(sym):
                    phase = label
                    break
            if phase:
                break
        for sym, off, dso in ([] if phase else frames):
            if dso.endswith(so_name):
                chain = resolver.chain(sym, off) or [sym]
                for fn in chain:
                    for label, rx in RSKCNN_RES:
                        if rx.search(fn):
                            phase = label
                            break
                    if phase:
                        break
                if phase is None:
                    phase = "other rskcnn code"
                break
            name = f"{sym} ({os.path.basename(dso)})"
            if GENERIC.search(name) and not NOT_GENERIC.search(name):
                continue  # memcpy / memset: the caller says what it is for
            for label, rx in OTHER_RES:
                if rx.search(name):
                    phase = label
                    break
            if phase:
                break
        if phase is None:
            sym, _, dso = frames[0]
            phase = ("memcpy / memset (caller not unwound)" if GENERIC.search(f"{sym} ({dso})")
                     and "unknown" not in sym else "other / unresolved")
        phases[phase] += 1
        leaves[leaf or "?"] += 1
    return phases, leaves


def _leaf(frame, so_name: str, resolver: InlineResolver) -> str:
    sym, off, dso = frame
    if dso.endswith(so_name):
        chain = resolver.chain(sym, off) or [_demangle(sym)]
        return f"{_short(chain[0])} [rskcnn, in {_short(chain[-1], 60)}]"
    return _short(f"{_demangle(sym)} [{os.path.basename(dso)}]")


def _short(name: str, width: int = 110) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


@functools.lru_cache(maxsize=None)
def _demangle(sym: str) -> str:
    if not sym.startswith("_Z"):
        return sym
    out = subprocess.run(["c++filt", "-p", sym], capture_output=True, text=True).stdout.strip()
    return out or sym


def cmd_perf(args) -> dict:
    import rskcnn._C as ext  # noqa: F401  (the .so whose inline frames are resolved)

    so = ext.__file__
    with tempfile.TemporaryDirectory() as tmp:
        data, result_json = Path(tmp) / "perf.data", Path(tmp) / "run.json"
        run_args = [sys.executable, str(Path(__file__).resolve()), "run", "--layer", args.layer,
                    "--granularity", args.granularity, "--keep", str(args.keep), "--pass", args.pass_name,
                    "--backend", args.backend, "--seconds", str(args.seconds), "--threads", str(args.threads),
                    "--seed", str(args.seed), "--json", str(result_json), "--dense-seconds",
                    str(args.dense_seconds), "--torch-ops", str(args.torch_ops)]
        if not args.compare_dense:
            run_args.append("--no-compare-dense")
        env = {**os.environ, "ONEDNN_JIT_PROFILE": "2", "DNNL_JIT_PROFILE": "2"}
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(args.rate), "-k", "mono",
                        "--call-graph", "dwarf,16384", "-o", str(data), "--", *run_args],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        result = json.loads(result_json.read_text())
        t0, t1 = result["window_monotonic"]
        script = subprocess.run(["perf", "script", "-i", str(data), "--time", f"{t0:.6f},{t1:.6f}",
                                 "--no-inline", "--no-demangle", "-F", "ip,sym,symoff,dso"], capture_output=True, text=True, check=True).stdout
    samples = parse_perf_script(script)
    phases, leaves = classify(samples, os.path.basename(so), InlineResolver(so))
    total = sum(phases.values())
    result["samples"] = total
    result["phases"] = {k: round(v / total, 4) for k, v in phases.most_common()}
    result["top_frames"] = [(k, round(v / total, 4)) for k, v in leaves.most_common(args.top)]
    if not args.quiet:
        print(format_one(result))
    return result


def format_one(r: dict) -> str:
    head = (f"{r['layer']} {r['granularity']} p={r['keep_prob']} (kept {r['kept_fraction']}) {r['backend']} "
            f"{r['pass']}: {r['median_s'] * 1e3:.1f} ms CPU/call (median of {r['calls']}; wall "
            f"{r['wall_median_s'] * 1e3:.1f} ms), "
            f"{r['useful_gflops_per_s']:.1f} useful GFLOP/s")
    if "ratio_to_dense" in r:
        head += f"; dense {r['dense_median_s'] * 1e3:.1f} ms ({r['dense_gflops_per_s']:.0f} GFLOP/s), ratio {r['ratio_to_dense']:.2f}"
    lines = [head, f"  {r.get('samples', 0)} samples in the timed window"]
    for k, v in r.get("phases", {}).items():
        lines.append(f"  {v:6.1%}  {k}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- all


def cmd_all(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    configs = [(layer, "dense", g, p) for layer in args.layers for p in PROFILED_PASSES for g in ("filter",)]
    configs += [(layer, "cpu", g, p) for layer in args.layers for g in args.granularities for p in PROFILED_PASSES]
    for layer, backend, granularity, pass_name in configs:
        sub = argparse.Namespace(**{**vars(args), "layer": layer, "backend": backend,
                                    "granularity": granularity, "pass_name": pass_name, "quiet": True,
                                    "compare_dense": backend != "dense",
                                    "torch_ops": args.torch_ops})
        r = cmd_perf(sub)
        if backend == "dense":
            r["granularity"] = "-"
        print(format_one(r), flush=True)
        results.append(r)
    (out / "phases.json").write_text(json.dumps(results, indent=1))
    write_reports(results, out)


def write_reports(results: list[dict], out: Path) -> None:
    labels = []
    for r in results:
        for k in r["phases"]:
            if k not in labels:
                labels.append(k)
    lines = ["# perf phase shares (cpu-clock samples in the timed loop, 1 thread)", "",
             "Generated by `python benchmarks/profile_cpu.py all`. Each row: one (layer, granularity, "
             "pass) at keep 0.5, the share of its samples per phase. Times are this process's CPU "
             "time per call (1 thread, so time on a core; the machine was shared), median over the "
             "sampled loop; `useful GFLOP/s` = kept fraction x dense FLOPs / that time; `ratio` = "
             "it / dense's median CPU time for the same pass, timed just before in the same process.", ""]
    for r in results:
        lines.append(format_one(r))
        lines.append(f"  load average {r['loadavg_start']} -> {r['loadavg_end']}, this process's CPU share "
                     f"in the window {r['process_cpu_share']}")
        lines.append("")
    (out / "phases.md").write_text("\n".join(lines))
    top = []
    for r in results:
        top.append(f"== {r['layer']} {r['granularity']} {r['backend']} {r['pass']} ({r['samples']} samples): "
                   "innermost frame, share of samples")
        top += [f"  {v:6.1%}  {k}" for k, v in r["top_frames"]]
        top.append("")
    (out / "top-frames.txt").write_text("\n".join(top))
    ops = [f"== {r['layer']} {r['granularity']} {r['backend']} {r['pass']}\n{r['torch_ops']}"
           for r in results if r.get("torch_ops")]
    if ops:
        (out / "torch-ops.txt").write_text("\n".join(ops))


# ----------------------------------------------------------------------------- cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, one=True):
        if one:
            p.add_argument("--layer", default="vgg16")
            p.add_argument("--granularity", default="element", choices=GRANULARITIES)
            p.add_argument("--pass", dest="pass_name", default="forward",
                           choices=("forward", "grad-input", "grad-weight", "step"))
            p.add_argument("--backend", default="cpu", help="cpu (default), dense, or another rskcnn backend")
        p.add_argument("--keep", type=float, default=0.5)
        p.add_argument("--seconds", type=float, default=4.0, help="length of the timed (sampled) loop")
        p.add_argument("--dense-seconds", type=float, default=1.5)
        p.add_argument("--no-compare-dense", dest="compare_dense", action="store_false",
                       help="do not time dense F.conv2d first (outside the sampled window)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--torch-ops", type=int, default=0,
                       help="after the window, profile this many calls with torch.profiler (op table)")

    p_run = sub.add_parser("run", help="time one configuration (what perf samples)")
    common(p_run)
    p_run.add_argument("--json", help="write the result here instead of printing it")

    p_perf = sub.add_parser("perf", help="one configuration under perf record, phase shares")
    common(p_perf)
    p_perf.add_argument("--rate", type=int, default=400, help="samples per second")
    p_perf.add_argument("--top", type=int, default=15)
    p_perf.add_argument("--quiet", action="store_true")

    p_all = sub.add_parser("all", help="every granularity x layer x pass, plus dense; writes --out")
    common(p_all, one=False)
    p_all.add_argument("--layers", nargs="+", default=["vgg16", "paper"])
    p_all.add_argument("--granularities", nargs="+", default=list(GRANULARITIES))
    p_all.add_argument("--rate", type=int, default=400)
    p_all.add_argument("--top", type=int, default=15)
    p_all.add_argument("--out", default=str(DEFAULT_OUT))

    args = parser.parse_args(argv)
    {"run": cmd_run, "perf": cmd_perf, "all": cmd_all}[args.command](args)


if __name__ == "__main__":
    main()
