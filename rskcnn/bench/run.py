"""One bench run from start to end: what it is asked for (:class:`BenchConfig`), the device,
threads, malloc, timing and backends it runs with, and the result dict it returns (the JSON
that ``rskcnn bench`` writes, schema ``rskcnn-bench/1``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .layers import LAYERS, QUICK_LAYERS
from .graphs import REPEATS, REPLAYS, WARMUPS
from .passes import COMPACT_IDEAL, COMPACT_IDEAL_GRANULARITY, DENSE, IDEALS, MASKED_DENSE, PASSES
from .sweep import DTYPES

# What a full and a quick run default to when the config leaves it open.
FULL = {"keep_probs": (0.25, 0.5, 0.75), "min_run_time": 0.5, "retries": 2}
QUICK = {"keep_probs": (0.5,), "min_run_time": 0.05, "retries": 0}
DEVICES = ("cpu", "cuda")
TIMINGS = ("graph", "eager")  # CUDA-graph replays (kernel time, CUDA only) or eager wall-clock
DEFAULT_COMMAND = "rskcnn.bench.run_bench"  # the settings' "command" of a run started from Python


class BenchConfigError(ValueError):
    """A bench run asked for something this machine cannot do: an unknown or unusable
    backend (unless ``skip_unavailable``), CUDA where there is none, TF32 on the CPU."""


def _check(ok: bool, field: str, expected: str, value) -> None:
    if not ok:
        raise ValueError(f"BenchConfig.{field}: expected {expected}, got {value!r}")


def _subset(names, choices) -> bool:
    return names is not None and len(names) > 0 and all(n in choices for n in names)


@dataclass(frozen=True)
class BenchConfig:
    """What a bench run times and how; ``None`` means the default of a full or a quick run.

    Fields mirror ``rskcnn bench``'s options (see ``python -m rskcnn bench --help``). Values
    are checked when the config is made: a wrong one raises ValueError naming the field.
    ``command`` is recorded in the result's settings as the way the run was started.

    ``timing``: ``"graph"`` (the default on CUDA) times each pass as CUDA-graph replays
    (:mod:`rskcnn.bench.graphs`, ``graph_replays`` per sample, ``graph_repeats`` rounds) and
    the eager wall-clock beside it; ``"eager"`` (the CPU's only timing) the wall-clock alone.
    ``law`` is the masks' law (:data:`rskcnn.LAWS`). ``backends`` may name ``compact-ideal``
    (dense conv on the kept filters alone, filter masks only); with ``skip_unavailable`` a
    named backend this build lacks or cannot use on the device is recorded as skipped, with
    the reason, instead of stopping the run.
    """

    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    tf32: bool = False
    threads: int | None = None
    layers: tuple[str, ...] | None = None
    batch: int | None = None
    granularities: tuple[str, ...] | None = None  # None: all of rskcnn.GRANULARITIES
    block_size: tuple[int, int] = (32, 32)
    keep_probs: tuple[float, ...] | None = None
    passes: tuple[str, ...] = PASSES
    backends: tuple[str, ...] | None = None  # None: masked-dense and every available backend but reference
    min_run_time: float | None = None
    retries: int | None = None
    busy_share: float = 0.05
    seed: int = 0
    quick: bool = False
    default_malloc: bool = False
    progress: bool = True
    command: str = DEFAULT_COMMAND
    timing: str | None = None  # None: graph on cuda, eager on cpu
    graph_replays: int = REPLAYS
    graph_repeats: int = REPEATS
    law: str = "bernoulli"
    skip_unavailable: bool = False

    def __post_init__(self) -> None:
        from rskcnn import GRANULARITIES, LAWS

        _check(self.device in DEVICES, "device", f"one of {DEVICES}", self.device)
        _check(self.dtype in DTYPES, "dtype", f"one of {tuple(DTYPES)}", self.dtype)
        _check(self.layers is None or _subset(self.layers, LAYERS), "layers",
               f"None or a non-empty subset of {tuple(LAYERS)}", self.layers)
        _check(self.granularities is None or _subset(self.granularities, GRANULARITIES), "granularities",
               f"None or a non-empty subset of {GRANULARITIES}", self.granularities)
        _check(_subset(self.passes, PASSES), "passes", f"a non-empty subset of {PASSES}", self.passes)
        _check(self.keep_probs is None or (len(self.keep_probs) > 0 and all(0.0 < p <= 1.0 for p in self.keep_probs)),
               "keep_probs", "None or keep probabilities in (0, 1]", self.keep_probs)
        _check(len(self.block_size) == 2 and all(isinstance(v, int) and v >= 1 for v in self.block_size),
               "block_size", "two ints >= 1", self.block_size)
        for field in ("threads", "batch"):
            value = getattr(self, field)
            _check(value is None or (isinstance(value, int) and value >= 1), field, "None or an int >= 1", value)
        _check(self.min_run_time is None or self.min_run_time > 0, "min_run_time",
               "None or seconds > 0", self.min_run_time)
        _check(self.retries is None or (isinstance(self.retries, int) and self.retries >= 0), "retries",
               "None or an int >= 0", self.retries)
        _check(0.0 <= self.busy_share <= 1.0, "busy_share", "a share in [0, 1]", self.busy_share)
        _check(self.timing is None or self.timing in TIMINGS, "timing", f"None or one of {TIMINGS}", self.timing)
        _check(not (self.timing == "graph" and self.device != "cuda"), "timing",
               "'eager' or None on device cpu (CUDA graphs need device cuda)", self.timing)
        for field_name in ("graph_replays", "graph_repeats"):
            value = getattr(self, field_name)
            _check(isinstance(value, int) and value >= 1, field_name, "an int >= 1", value)
        _check(self.law in LAWS, "law", f"one of {LAWS}", self.law)

    @property
    def resolved_timing(self) -> str:
        """``timing`` with its default filled in: graph on cuda, eager on cpu."""
        return self.timing or ("graph" if self.device == "cuda" else "eager")


@dataclass(frozen=True)
class Lineup:
    """What a run times besides dense: ``backends`` (masked-dense and rskcnn backends, in
    order), ``ideals`` (pseudo-backends such as compact-ideal, which auto never chooses) and
    ``unavailable`` (backends asked for that this build lacks or cannot use on the device,
    with why; only with ``skip_unavailable``)."""

    backends: list[str]
    ideals: list[str]
    unavailable: dict[str, str]


def resolve_lineup(requested, device: torch.device, granularities=(), skip_unavailable: bool = False) -> Lineup:
    """What to time besides dense (:class:`Lineup`).

    ``requested`` None: masked-dense and every available backend but reference (Triton's CPU
    interpreter only when named), and on the CPU compact-ideal when ``granularities`` include
    filter. Otherwise the names given: ``reference`` stands for masked-dense, ``dense`` is
    dropped (it is always measured), ``compact-ideal`` goes to the ideals. A name that is no
    backend of this build, or one not usable on ``device``, raises :class:`BenchConfigError`
    saying why, or with ``skip_unavailable`` is listed in ``unavailable`` with that reason."""
    import rskcnn
    from rskcnn.backends import BACKENDS, unavailable_reasons

    available = [b for b in rskcnn.available_backends(device) if b != "reference"]
    if requested is None:
        # Triton on the CPU is its interpreter, a test tool: timed only when asked for.
        backends = [MASKED_DENSE, *(b for b in available if not (b == "triton" and device.type == "cpu"))]
        ideals = [COMPACT_IDEAL] if device.type == "cpu" and COMPACT_IDEAL_GRANULARITY in granularities else []
        return Lineup(backends, ideals, {})
    lineup = Lineup([], [], {})
    for name in requested:
        name = MASKED_DENSE if name == "reference" else name
        if name == DENSE or name in lineup.backends or name in lineup.ideals:
            continue  # dense is always measured
        if name in IDEALS:
            lineup.ideals.append(name)
            continue
        why = None
        if name != MASKED_DENSE and name not in BACKENDS:
            why = f"unknown backend {name!r}; choose from {MASKED_DENSE}, {', '.join(IDEALS)}, {', '.join(BACKENDS)}"
        elif name != MASKED_DENSE and name not in available:
            why = f"backend {name!r} is not usable on {device.type}: {unavailable_reasons(device).get(name)}"
        if why is None:
            lineup.backends.append(name)
        elif skip_unavailable:
            lineup.unavailable[name] = why
        else:
            raise BenchConfigError(why)
    return lineup


def resolve_backends(requested, device: torch.device) -> list[str]:
    """masked-dense plus the rskcnn backends to time: :func:`resolve_lineup`'s ``backends``
    (ideals such as compact-ideal left out). Raises :class:`BenchConfigError` naming an
    unknown or unusable backend and why."""
    return resolve_lineup(requested, device).backends


def configure_device(config: BenchConfig) -> torch.device:
    """The device to time on. On CUDA it turns on cuDNN's autotuner and sets TF32 as asked
    (process-wide flags). Raises :class:`BenchConfigError` for CUDA without CUDA, or TF32 on
    the CPU."""
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise BenchConfigError("device cuda, but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = config.tf32
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        return torch.device("cuda", torch.cuda.current_device())
    if config.tf32:
        raise BenchConfigError("tf32 applies to device cuda only")
    return torch.device("cpu")


def default_tag(config: BenchConfig) -> str:
    """The result files' default name: ``{device}-{dtype}[-channels_last][-tf32][-quick]``."""
    tag = f"{config.device}-{config.dtype}"
    if config.channels_last:
        tag += "-channels_last"
    if config.tf32:
        tag += "-tf32"
    return tag + ("-quick" if config.quick else "")


def bench_settings(config: BenchConfig, device: torch.device, threads: int, backends: list[str] | Lineup,
                   malloc: str) -> dict:
    """The result's ``settings``: the config with its defaults filled in and the flags in force.

    Fields added after the first committed results come last, so older readers keep working:
    ``timing`` (graph or eager), ``graph`` (replays, repeats, warm-ups; None when eager),
    ``law``, ``ideals`` (the pseudo-backends timed besides ``backends``; auto's calibration
    reads ``backends`` only) and ``unavailable`` (backends asked for but skipped, with why)."""
    from rskcnn import GRANULARITIES

    from . import report

    defaults = QUICK if config.quick else FULL
    lineup = backends if isinstance(backends, Lineup) else Lineup(list(backends), [], {})
    timing = config.resolved_timing
    return {
        "device": device.type, "dtype": config.dtype,
        "tf32": bool(config.tf32) if device.type == "cuda" else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark if device.type == "cuda" else None,
        "tf32_flags": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                       "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        if device.type == "cuda" else None,
        "memory_format": "channels_last" if config.channels_last else "contiguous (NCHW)",
        "threads": threads, "malloc": malloc, "quick": config.quick,
        "min_run_time": config.min_run_time or defaults["min_run_time"], "seed": config.seed,
        "retries": defaults["retries"] if config.retries is None else config.retries,
        "busy_share": config.busy_share,
        "layers": list(config.layers or (QUICK_LAYERS if config.quick else tuple(LAYERS))),
        "batch": config.batch, "granularities": list(config.granularities or GRANULARITIES),
        "block_size": list(config.block_size),
        "keep_probs": list(config.keep_probs or defaults["keep_probs"]),
        "passes": [p for p in PASSES if p in config.passes], "backends": [DENSE, *lineup.backends],
        "date": report.now(),
        "command": config.command,
        "timing": timing,
        "graph": {"replays": config.graph_replays, "repeats": config.graph_repeats, "warmups": WARMUPS}
        if timing == "graph" else None,
        "law": config.law,
        "ideals": list(lineup.ideals),
        "unavailable": dict(lineup.unavailable),
    }


def run_bench(config: BenchConfig) -> dict:
    """Times dense, masked-dense and the rskcnn backends as ``config`` asks and returns the
    result (``schema``, ``machine``, ``settings``, ``layers``, ``records``, ``skipped``,
    ``errors``, ...), which :func:`~rskcnn.bench.report.write_result` writes as JSON and
    Markdown. A timing that fails is recorded in ``errors``, not raised.

    Each record has the eager wall-clock ``median_s``, ``iqr_s`` and ``ratio``; in graph timing
    also ``graph_median_s``, ``graph_iqr_s`` and ``graph_ratio`` (None where the pass could not
    be captured) and ``graph_error`` (None, or why not).

    Process-wide effects: ``torch.set_num_threads(config.threads)`` when given, glibc's
    malloc thresholds raised on the CPU unless ``config.default_malloc``, and on CUDA the
    cuDNN/TF32 flags of :func:`configure_device`. Raises :class:`BenchConfigError` for what
    this machine cannot run.
    """
    from rskcnn import GRANULARITIES

    from . import report
    from .sweep import time_all
    from .timing import Timed, cpu_counters, others_cpu_share, steady_malloc

    started, counters = time.perf_counter(), cpu_counters()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    device = configure_device(config)
    malloc = "default" if config.default_malloc or device.type != "cpu" else steady_malloc()
    granularities = config.granularities or GRANULARITIES
    lineup = resolve_lineup(config.backends, device, granularities, config.skip_unavailable)
    settings = bench_settings(config, device, threads, lineup, malloc)
    plan = [(LAYERS[name], config.batch or (LAYERS[name].quick_batch if config.quick else LAYERS[name].batch))
            for name in settings["layers"]]
    result = {"schema": "rskcnn-bench/1", "machine": report.machine_info(device, threads), "settings": settings,
              "layers": [layer.to_dict(batch) for layer, batch in plan], "records": [], "skipped": [], "errors": []}

    per_layer = (len(settings["passes"]) * len(settings["granularities"]) * len(settings["keep_probs"])
                 * (len(settings["backends"]) + len(settings["ideals"])))
    timed = Timed(per_layer * len(plan), threads, settings["min_run_time"], device, not config.progress)
    try:
        for point in time_all(plan, settings, device, timed):
            for key in ("records", "skipped", "errors"):
                result[key] += point[key]
    finally:
        timed.close()

    result["load_average_end"] = report.load_average()
    result["others_cpu_share"] = others_cpu_share(counters, cpu_counters())
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result
