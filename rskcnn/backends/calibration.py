"""Where each GPU backend is the fast choice, as measured by ``python -m rskcnn bench`` on a
card. ``auto`` on CUDA reads it; ``python -m rskcnn calibrate`` writes it.

A table maps (dtype, backend, granularity) to ``faster_below``: the largest measured keep
probability p such that, on every benchmarked layer and at every measured keep up to p, the
backend's training step took at most ``tolerance`` (1.05) times the fastest option ``auto``
had (the other rskcnn backends and masked-dense cuDNN, the reference fallback). ``auto``
takes a backend for a call whose kept fraction is known and at most that bound.

Tables live in ``rskcnn/backends/calibration/<device slug>.json`` (shipped) or the file
named by ``$RSKCNN_CALIBRATION``; without one for the card, ``auto`` keeps cuDNN.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..masks import granularity_of
from .base import ConvCall

TOLERANCE = 1.05
TABLE_DIR = Path(__file__).with_name("calibration")
SCHEMA = "rskcnn-calibration/1"
FALLBACK = "masked-dense"  # the bench's name for the reference backend's work


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def dtype_key(dtype: torch.dtype | str, tf32: bool | None) -> str:
    name = str(dtype).removeprefix("torch.")
    return f"{name}+tf32" if name == "float32" and tf32 else name


def thresholds_from_bench(result: dict, tolerance: float = TOLERANCE) -> dict[str, dict[str, float]]:
    """{backend: {granularity: faster_below}} from one ``rskcnn bench`` result (a dict as
    written to its JSON). Uses the ``step`` pass, else ``forward``."""
    records = [r for r in result["records"] if r.get("median_s") is not None]
    passes = {r["pass"] for r in records}
    chosen_pass = "step" if "step" in passes else "forward"
    times: dict[tuple, float] = {}
    for r in records:
        if r["pass"] == chosen_pass:
            times[(r["granularity"], r["keep_prob"], r["layer"], r["backend"])] = r["median_s"]
    options = [b for b in result["settings"]["backends"] if b != "dense"]
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
                    measured = {b: times.get((granularity, keep, layer, b)) for b in options}
                    mine = measured[backend]
                    known = [t for t in measured.values() if t is not None]
                    if mine is None or not known or mine > tolerance * min(known):
                        ok = False
                        break
                if not ok:
                    break
                bound = keep
            table.setdefault(backend, {})[granularity] = bound
    return table


def calibration_from_benches(results: list[dict], tolerance: float = TOLERANCE) -> dict:
    """A calibration table (the JSON ``auto`` reads) from bench results of one card, one per
    dtype/TF32 setting."""
    devices = {r["machine"].get("gpu") or r["machine"].get("cpu_model") for r in results}
    if len(devices) != 1:
        raise ValueError(f"bench results must come from one device, got {sorted(map(str, devices))}")
    table = {"schema": SCHEMA, "device": devices.pop(), "tolerance": tolerance, "faster_below": {}}
    for result in results:
        settings = result["settings"]
        key = dtype_key(settings["dtype"], settings.get("tf32"))
        table["faster_below"][key] = thresholds_from_bench(result, tolerance)
        table.setdefault("sources", []).append(settings.get("command", ""))
    return table


# Loaded once per device index. Under torch.compile the loading runs once at trace time and
# its result is a constant of the graph: Dynamo can trace neither torch.cuda.get_device_name
# (it returns a str) nor the file reads, and fullgraph=True would fail on them.
_TABLES: dict[int | None, tuple[str, dict | None]] = {}


@torch.compiler.assume_constant_result
def _load(index: int | None) -> tuple[str, dict | None]:
    if index not in _TABLES:
        name = torch.cuda.get_device_name(index)
        path = Path(os.environ.get("RSKCNN_CALIBRATION") or TABLE_DIR / f"{device_slug(name)}.json")
        table = json.loads(path.read_text()) if path.is_file() else None
        if table is not None and table.get("device") != name:
            table = None
        _TABLES[index] = (name, table)
    return _TABLES[index]


def faster_than_dense_reasons(backend: str, call: ConvCall) -> list[str]:
    """Why ``auto`` should not take ``backend`` for ``call`` on its GPU (empty: take it)."""
    name, table = _load(call.device.index)
    if table is None:
        return [f"not calibrated on {name} (no {device_slug(name)}.json in {TABLE_DIR.name}/ or "
                "$RSKCNN_CALIBRATION; run benchmarks/gpu_suite.sh and python -m rskcnn calibrate)"]
    key = dtype_key(call.dtype, call.dtype == torch.float32 and torch.backends.cudnn.allow_tf32)
    granularity = granularity_of(call.block, call.weight_shape)
    bound = table["faster_below"].get(key, {}).get(backend, {}).get(granularity)
    if bound is None:
        return [f"{granularity} masks in {key} were not calibrated on {name}"]
    if call.kept_fraction is None:
        return [f"kept fraction unknown (pass expected_keep= or a module's keep_prob), and {backend} is "
                f"the fast choice on {name} only up to keep {bound:.2f}"]
    if call.kept_fraction > bound:
        return [f"measured on {name}: {backend} is the fast choice for {granularity} masks in {key} only up to "
                f"keep {bound:.2f}, this one keeps {call.kept_fraction:.2f}"]
    return []
