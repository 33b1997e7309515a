"""What a benchmark result names (machine, build, settings) and how it is written:
JSON for tools, Markdown for people."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from .passes import DENSE, PASSES, SHORT


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: torch.device, threads: int) -> dict:
    """The result's ``machine``: CPU, thread count, versions, the load at the start and, on
    CUDA, the GPU."""
    import rskcnn

    try:
        from rskcnn import _build_info
        built_with = _build_info.TORCH_VERSION
    except ImportError:
        built_with = None
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "rskcnn": rskcnn.__version__,
        "extension_built_with_torch": built_with,
        "load_average_start": load_average(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def now() -> str:
    """The current UTC time in ISO format, to the second: the settings' ``date``."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_result(result: dict, out_dir: str | os.PathLike, tag: str) -> tuple[Path, Path]:
    """Writes ``{out_dir}/{tag}.json`` and ``{out_dir}/{tag}.md`` (creating the folder) and
    returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{tag}.json", out / f"{tag}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


GRAPH_DENSE_TITLE = "Dense F.conv2d medians (ms), CUDA-graph replays (kernel time)"
GRAPH_RATIO_TITLE = "Ratio to dense, CUDA-graph replays (kernel time)"
EAGER_DENSE_TITLE = "Dense F.conv2d medians (ms), eager wall-clock"
EAGER_RATIO_TITLE = "Ratio to dense, eager wall-clock (median time / dense median time)"


def has_graph_times(result: dict) -> bool:
    """Whether ``result`` was timed as CUDA-graph replays (its records then carry ``graph_*`` fields)."""
    return result["settings"].get("timing") == "graph"


def markdown(result: dict) -> str:
    """A bench result as Markdown: the header, the dense medians, the ratios to dense and
    what was not measured. A graph-timed result shows the replays' tables first, then the
    eager wall-clock ones."""
    passes = [p for p in PASSES if p in result["settings"]["passes"]]
    if has_graph_times(result):
        tables = (_dense_table(result, passes, "graph_median_s", GRAPH_DENSE_TITLE)
                  + _ratio_table(result, passes, "graph_ratio", GRAPH_RATIO_TITLE)
                  + _dense_table(result, passes, "median_s", EAGER_DENSE_TITLE)
                  + _ratio_table(result, passes, "ratio", EAGER_RATIO_TITLE))
    else:
        tables = _dense_table(result, passes) + _ratio_table(result, passes)
    lines = _header(result) + tables + _notes(result)
    return "\n".join(lines) + "\n"


def _header(result: dict) -> list[str]:
    machine, settings = result["machine"], result["settings"]
    device = settings["device"]
    where = machine["cpu_model"]
    if device == "cuda":
        where = f"{machine.get('gpu', '?')} (host CPU {where})"
    tf32 = ("on" if settings["tf32"] else "off") if device == "cuda" else "n/a (CPU)"
    return [
        f"# rskcnn bench: {device}, {settings['dtype']}" + (" (quick)" if settings["quick"] else ""),
        "",
        f"- Machine: {where}; {machine['usable_cpus']} CPUs ({machine['cpu_capability']}); "
        f"**threads: {settings['threads']}**",
        f"- **dtype: {settings['dtype']}**; **TF32: {tf32}**; **memory format: {settings['memory_format']}**",
        f"- torch {machine['torch']}, rskcnn {machine['rskcnn']}; {settings['date']}; "
        f"min_run_time {settings['min_run_time']} s; the run took {result['elapsed_s']:.0f} s",
        f"- Load average (1, 5, 15 min): {machine['load_average_start']} at start, "
        f"{result.get('load_average_end')} at end; other processes used {_share(result.get('others_cpu_share'))} "
        "of the CPUs during the run",
        f"- Command: `{settings['command']}`; malloc: {settings.get('malloc', 'default')}",
        *_busy_lines(result),
        "",
        "Each number is a median time (torch.utils.benchmark, blocked_autorange after warm-up) divided by "
        "the median of dense `F.conv2d` on the same layer and pass, measured in the same run: lower is "
        "better, and a kernel that skips masked weights ideally reaches about p. `masked-dense` is the "
        "paper's way (weight * mask, then dense conv; the masking is timed too). Passes: `fwd` forward "
        "without autograd; `grad-in` / `grad-w` backward to the input / the weight only; `step` forward "
        "plus the input, weight and bias gradients. `kept` is the fraction of weights the mask keeps.",
        *_added_lines(settings),
    ]


def _added_lines(settings: dict) -> list[str]:
    """What the header says of the settings added after the first results (absent from those)."""
    lines = []
    if settings.get("timing") == "graph":
        graph = settings["graph"]
        lines += ["", f"**Timing: CUDA-graph replays (kernel time).** Each pass is captured in a CUDA graph after "
                  f"{graph['warmups']} warm-up calls on a side stream; its time is the median, over "
                  f"{graph['repeats']} rounds, of {graph['replays']} replays between CUDA events. In each round "
                  "every backend's and dense's passes of the configuration are replayed in turn, so the ratios "
                  "divide by dense timed alongside. The host's per-call work (Python, dispatch, launches) is "
                  "left out: the eager wall-clock tables below keep it."]
    if settings.get("law"):
        lines += ["", f"Masks drawn with the `{settings['law']}` law (`rskcnn.sample_mask(..., law=...)`)."]
    if settings.get("ideals"):
        lines += ["", "`compact-ideal` is dense `F.conv2d` on the kept filters alone (output channels = the "
                  "number of filters the mask keeps), with no gather or scatter: what the compaction path of "
                  "`filter` masks would take if its gathers and scatters were free."]
    return lines


DRIFT = 1.2  # a dense median this far from the layer's usual one marks its ratios


def _busy_configs(result: dict) -> tuple[set, set]:
    """Configurations timed more than once, and those still busy on their last attempt."""
    retried, busy = set(), set()
    limit = result["settings"].get("busy_share", 1.0)
    for r in result["records"]:
        key = (r["layer"], r["granularity"], r["keep_prob"])
        if r.get("attempt", 1) > 1:
            retried.add(key)
        if (r.get("others_cpu_share") or 0) > limit:
            busy.add(key)
    return retried, busy


def _busy_lines(result: dict) -> list[str]:
    retried, busy = _busy_configs(result)
    if not retried and not busy:
        return []
    return [f"- Other processes were busy: {len(retried)} configurations were timed again; {len(busy)} were "
            f"still busy on their last attempt (marked ‡)"]


def _dense_medians(result: dict, field: str = "median_s") -> dict[tuple, float]:
    """(layer, granularity, keep_prob, pass) -> the dense median (of ``field``) that a ratio divides by."""
    return {(r["layer"], r["granularity"], r["keep_prob"], r["pass"]): r[field]
            for r in result["records"] if r["backend"] == DENSE and r.get(field) is not None}


def _typical_dense(dense: dict[tuple, float]) -> dict[tuple[str, str], float]:
    """(layer, pass) -> the median over the run of its dense medians."""
    groups: dict[tuple[str, str], list[float]] = {}
    for (layer, _, _, pass_name), median in dense.items():
        groups.setdefault((layer, pass_name), []).append(median)
    return {key: statistics.median(values) for key, values in groups.items()}


def _dense_table(result: dict, passes: list[str], field: str = "median_s",
                 title: str = "Dense F.conv2d medians (ms)") -> list[str]:
    dense = _dense_medians(result, field)
    typical = _typical_dense(dense)
    lines = ["", f"## {title}", "",
             _row(["layer", "input", "weight", "GFLOP fwd", *(SHORT[p] for p in passes), "spread"]),
             _row(["---"] * (5 + len(passes)))]
    worst = 1.0
    for layer in result["layers"]:
        name = layer["name"]
        spreads = []
        for p in passes:
            values = [v for (n, _, _, q), v in dense.items() if n == name and q == p]
            if values:
                spreads.append(max(values) / min(values))
        spread = max(spreads, default=1.0)
        worst = max(worst, spread)
        lines.append(_row([
            name, "x".join(map(str, (layer["batch"], layer["in_channels"], layer["size"], layer["size"]))),
            f"{layer['out_channels']}x{layer['in_channels']}x{layer['kernel']}x{layer['kernel']}",
            f"{layer['forward_flops'] / 1e9:.2f}",
            *(_ms(typical[(name, p)]) if (name, p) in typical else "—" for p in passes),
            f"{spread:.2f}",
        ]))
    lines += ["", "Dense is timed again just before each (granularity, p), and each ratio divides by that "
              "dense median. This table shows the median of a layer's dense medians; `spread` is the "
              "largest max/min of them for one pass."]
    others = result.get("others_cpu_share")
    if worst > DRIFT or (others or 0) > 0.1:
        lines += ["", f"**Note: dense timings of one layer and pass varied by up to {worst:.2f}x during the run, "
                  f"and other processes used {_share(others)} of the CPUs. The machine's speed changed (other "
                  "work, or the host of a virtual machine). Ratios marked † divide by a dense median more "
                  f"than {DRIFT}x away from the layer's usual one; rerun before trusting them.**"]
    return lines


def _ratio_table(result: dict, passes: list[str], field: str = "ratio",
                 title: str = "Ratio to dense (median time / dense median time)") -> list[str]:
    settings = result["settings"]
    columns = [(b, p) for b in [*settings["backends"], *settings.get("ideals", [])] if b != DENSE for p in passes]
    dense = _dense_medians(result, "graph_median_s" if field == "graph_ratio" else "median_s")
    typical = _typical_dense(dense)
    layer_order = [layer["name"] for layer in result["layers"]]
    granularity_order = settings["granularities"]
    _, busy = _busy_configs(result)
    rows: dict[tuple, dict] = {}
    for item in result["records"] + result.get("skipped", []) + result.get("errors", []):
        if item["backend"] == DENSE:
            continue
        key = (item["layer"], item["granularity"], item["keep_prob"])
        row = rows.setdefault(key, {"kept": item["kept_fraction"]})
        if item.get(field) is not None:
            base = dense.get((*key, item["pass"]))
            usual = typical.get((item["layer"], item["pass"]))
            drifted = base is not None and usual and not 1 / DRIFT <= base / usual <= DRIFT
            marks = (" †" if drifted else "") + (" ‡" if key in busy else "")
            row[(item["backend"], item["pass"])] = _ratio(item[field]) + marks
    order = sorted(rows, key=lambda k: (layer_order.index(k[0]), granularity_order.index(k[1]), k[2]))
    lines = ["", f"## {title}", "",
             _row(["layer", "granularity", "p", "kept", *(f"{b} {SHORT[p]}" for b, p in columns)]),
             _row(["---"] * (4 + len(columns)))]
    for key in order:
        row = rows[key]
        lines.append(_row([*key, f"{row['kept']:.2f}", *(row.get(c, "—") for c in columns)]))
    return lines


def _notes(result: dict) -> list[str]:
    skipped: dict[tuple[str, str], int] = {}
    for item in result.get("skipped", []):
        key = (item["backend"], item["reason"])
        skipped[key] = skipped.get(key, 0) + 1
    notes = [f"- {backend}: skipped in {count} configurations: {reason}"
             for (backend, reason), count in skipped.items()]
    notes += [f"- {e['layer']} {e['granularity']} p={e['keep_prob']} {e['backend']} {e['pass']}: FAILED, {e['error']}"
              for e in result.get("errors", [])]
    uncaptured: dict[tuple[str, str, str], int] = {}
    for r in result["records"]:
        if r.get("graph_error"):
            key = (r["backend"], r["pass"], r["graph_error"])
            uncaptured[key] = uncaptured.get(key, 0) + 1
    notes += [f"- {backend} {SHORT[pass_name]}: no CUDA-graph time in {count} configurations (eager time only): {why}"
              for (backend, pass_name, why), count in uncaptured.items()]
    return ["", "## Not measured", "", *notes] if notes else []
