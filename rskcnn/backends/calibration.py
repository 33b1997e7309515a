"""Where each kernel backend is ``auto``'s fast choice, as measured by ``python -m rskcnn bench``
on a machine class. ``auto`` reads these tables on every device; ``python -m rskcnn calibrate``
writes them.

The choice ``auto`` makes is between a kernel backend and the fallback it would otherwise run:
the reference backend, whose work the bench times as ``masked-dense`` (the paper's way:
dense ``F.conv2d`` on ``W * M``, 1.0-1.4x dense). A table maps (dtype, backend, granularity)
to ``faster_below``: the largest measured keep probability p such that, on every benchmarked
layer and at every measured keep up to p, the backend's training step took at most
``tolerance`` (1.05) times the fastest option ``auto`` had there (masked-dense and the other
kernel backends). So a kernel slower than dense but faster than masked-dense is taken.
``auto`` takes a backend for a call whose kept fraction is known and at most that bound.

Tables live in ``rskcnn/backends/calibration/`` (shipped), or in the file named by
``$RSKCNN_CALIBRATION``. A machine class is a GPU's name (``nvidia-h200.json``) or a CPU's
vector ISA (``cpu-avx512.json``); a CPU without a table of its own uses ``cpu.json``, the
table measured on this project's development machine (its ``device`` field says which).
Without a table, ``auto`` keeps the fallback and says why.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .call import ConvCall

TOLERANCE = 1.05
TABLE_DIR = Path(__file__).with_name("calibration")
SCHEMA = "rskcnn-calibration/1"
FALLBACK = "masked-dense"  # the bench's name for the reference backend's work
# What the bench times for comparison only, never an option auto has: plain dense, and dense
# on the compacted shapes alone (the ideal of the compaction path).
NOT_OPTIONS = ("dense", "compact-ideal")
GENERIC_CPU_TABLE = "cpu"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def dtype_key(dtype: torch.dtype | str, tf32: bool | None) -> str:
    name = str(dtype).removeprefix("torch.")
    return f"{name}+tf32" if name == "float32" and tf32 else name


def granularity_key(call: ConvCall) -> str:
    """The table column of a call: its granularity, or ``grouped`` for grouped convolutions,
    which take other kernel paths than the benchmarked ungrouped layers."""
    return call.granularity if call.groups == 1 else "grouped"


def _cpu_class(capability: str) -> str:
    return "cpu-" + device_slug(capability)


def cpu_machine_class() -> str:
    """``cpu-<vector ISA>`` of this machine as ATen dispatches (``cpu-avx512``, ``cpu-avx2``, ...)."""
    return _cpu_class(torch.backends.cpu.get_cpu_capability())


def machine_class(result_machine: dict, device: str) -> str:
    """The machine class of a bench result's ``machine`` record."""
    if device == "cpu":
        return _cpu_class(result_machine.get("cpu_capability") or "default")
    return device_slug(result_machine.get("gpu") or "unknown-gpu")


# ----------------------------------------------------------------------------- writing tables

def rivals(backend: str, options: list[str], order: list[str] | None) -> list[str]:
    """What ``backend``'s times are held against. ``auto`` tries backends in ``order`` and takes
    the first that is not skipped, so declining ``backend`` leads to the backends after it and,
    last, the fallback (masked-dense): those are its rivals. Without an order, every option."""
    if order is None or backend not in order:
        return [o for o in options if o != backend]
    later = order[order.index(backend) + 1:]
    return [o for o in options if o in later or o == FALLBACK]


def thresholds_from_bench(result: dict, tolerance: float = TOLERANCE,
                          order: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{backend: {granularity: faster_below}} from one ``rskcnn bench`` result (a dict as
    written to its JSON). Uses the ``step`` pass, else ``forward``. ``order``: auto's order of
    the kernel backends on the device (:func:`rivals`); the calibrate CLI passes it."""
    records = [r for r in result["records"] if r.get("median_s") is not None]
    passes = {r["pass"] for r in records}
    chosen_pass = "step" if "step" in passes else "forward"
    times: dict[tuple, float] = {}
    for r in records:
        if r["pass"] == chosen_pass:
            # Graph-replay times where the bench took them (GPU), else eager wall-clock.
            times[(r["granularity"], r["keep_prob"], r["layer"], r["backend"])] = r.get("graph_median_s", r["median_s"])
    options = [b for b in result["settings"]["backends"] if b not in NOT_OPTIONS]
    table: dict[str, dict[str, float]] = {}
    for granularity in sorted({key[0] for key in times}):
        keeps = sorted({key[1] for key in times if key[0] == granularity})
        layers = sorted({key[2] for key in times if key[0] == granularity})
        for backend in options:
            if backend == FALLBACK:
                continue
            bound = 0.0
            for keep in keeps:
                ok = True
                for layer in layers:
                    mine = times.get((granularity, keep, layer, backend))
                    known = [t for b in rivals(backend, options, order)
                             if (t := times.get((granularity, keep, layer, b))) is not None]
                    if mine is None or not known or mine > tolerance * min(known):
                        ok = False
                        break
                if not ok:
                    break
                bound = keep
            table.setdefault(backend, {})[granularity] = bound
    return table


def calibration_from_benches(results: list[dict], tolerance: float = TOLERANCE,
                             order: list[str] | None = None) -> dict:
    """A calibration table (the JSON ``auto`` reads) from bench results of one machine class.
    Results of the same dtype/TF32 setting are pooled (a record measured twice keeps the later
    result's time), so a bench of new backends can be added to an earlier full one."""
    devices = {r["settings"].get("device", "cuda") for r in results}
    if len(devices) != 1:
        raise ValueError(f"bench results must come from one device type, got {sorted(devices)}")
    device = devices.pop()
    names = {r["machine"].get("gpu") or r["machine"].get("cpu_model") for r in results}
    classes = {machine_class(r["machine"], device) for r in results}
    if len(names) != 1 or len(classes) != 1:
        raise ValueError(f"bench results must come from one device, got {sorted(map(str, names | classes))}")
    table = {"schema": SCHEMA, "device": names.pop(), "machine_class": classes.pop(), "tolerance": tolerance,
             "auto_order": order, "faster_below": {}}
    # Results of one dtype (e.g. the full bench and a later one of new backends) are pooled.
    pooled: dict[str, dict] = {}
    for result in results:
        settings = result["settings"]
        key = dtype_key(settings["dtype"], settings.get("tf32"))
        into = pooled.setdefault(key, {"settings": {"backends": []}, "records": []})
        into["records"].extend(result["records"])
        into["settings"]["backends"] += [b for b in settings["backends"] if b not in into["settings"]["backends"]]
        table.setdefault("sources", []).append(
            {"command": settings.get("command", ""), "date": settings.get("date"),
             "threads": settings.get("threads"), "memory_format": settings.get("memory_format")})
    for key, result in pooled.items():
        table["faster_below"][key] = thresholds_from_bench(result, tolerance, order)
    return table


# ----------------------------------------------------------------------------- reading tables

# Loaded once per device. Under torch.compile, _lookup (which calls _load) runs once at trace
# time and its result is a constant of the graph: Dynamo can trace neither
# torch.cuda.get_device_name (it returns a str) nor the file reads, and fullgraph=True would
# fail on them.
_TABLES: dict[tuple[str, int | None], tuple[str, dict | None]] = {}


def _candidates(device_type: str, name: str) -> list[Path]:
    if os.environ.get("RSKCNN_CALIBRATION"):
        return [Path(os.environ["RSKCNN_CALIBRATION"])]
    if device_type == "cpu":
        return [TABLE_DIR / f"{name}.json", TABLE_DIR / f"{GENERIC_CPU_TABLE}.json"]
    return [TABLE_DIR / f"{device_slug(name)}.json"]


def _load(device_type: str, index: int | None) -> tuple[str, dict | None]:
    key = (device_type, index)
    if key not in _TABLES:
        name = cpu_machine_class() if device_type == "cpu" else torch.cuda.get_device_name(index)
        table = None
        for path in _candidates(device_type, name):
            if path.is_file():
                table = json.loads(path.read_text())
                break
        # A GPU table is only valid for the card it was measured on.
        if table is not None and device_type == "cuda" and table.get("device") != name:
            table = None
        _TABLES[key] = (name, table)
    return _TABLES[key]


NO_TABLE, NOT_CALIBRATED = -2.0, -1.0


@torch.compiler.assume_constant_result
def _lookup(device_type: str, index: int | None, key: str, backend: str, granularity: str) -> tuple[str, str, float]:
    """``(machine name, where the table was measured, bound)`` with a bound of ``NO_TABLE`` or
    ``NOT_CALIBRATED`` where there is none. Plain constants, so that torch.compile runs the
    lookup once at trace time and guards on nothing inside the table."""
    name, table = _load(device_type, index)
    if table is None:
        return name, name, NO_TABLE
    bound = table["faster_below"].get(key, {}).get(backend, {}).get(granularity)
    return name, table.get("device", name), NOT_CALIBRATED if bound is None else float(bound)


def speed_reasons(backend: str, call: ConvCall) -> list[str]:
    """Why ``auto`` should not take ``backend`` for ``call`` (empty: take it), from the table
    of the call's machine class."""
    tf32 = call.dtype == torch.float32 and call.device.type == "cuda" and torch.backends.cudnn.allow_tf32
    key = dtype_key(call.dtype, tf32)
    granularity = granularity_key(call)
    name, measured_on, bound = _lookup(call.device.type, call.device.index, key, backend, granularity)
    if bound == NO_TABLE:
        return [f"not calibrated on {name} (no {device_slug(name)}.json in {TABLE_DIR.name}/ or "
                "$RSKCNN_CALIBRATION; run python -m rskcnn bench and python -m rskcnn calibrate)"]
    if bound == NOT_CALIBRATED:
        return [f"{granularity} masks in {key} were not calibrated on {name}"]
    if bound <= 0.0:
        return [f"measured on {measured_on}: {backend} was never the fast choice for {granularity} "
                f"masks in {key} (masked-dense or another backend was faster at every measured keep)"]
    if call.kept_fraction is None and bound < 1.0:
        return [f"kept fraction unknown (pass expected_keep= or a module's keep_prob), and {backend} is "
                f"the fast choice on {name} only up to keep {bound:.2f}"]
    if call.kept_fraction is not None and call.kept_fraction > bound:
        return [f"measured on {measured_on}: {backend} is the fast choice for {granularity} masks "
                f"in {key} only up to keep {bound:.2f}, this one keeps {call.kept_fraction:.2f}"]
    return []
