"""``python -m rskcnn calibrate RESULTS.json ...``: turns bench results of one machine class
(a GPU, or a CPU's vector ISA) into the table that ``auto`` reads there
(rskcnn/backends/calibration.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "calibrate",
        help="write auto's table of where each kernel backend is the fast choice",
        description="Reads `rskcnn bench` results of one machine class (a GPU, or a CPU's vector ISA; one file "
        "per dtype/TF32 setting) and writes, for each dtype, backend and granularity, the largest measured keep "
        "probability up to which the backend's training step stayed within the tolerance of the fastest option "
        "auto has (masked-dense, the fallback, and the other backends) on every layer.",
    )
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json", help="bench result files")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the table (default: rskcnn/backends/calibration/<machine class>.json)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="how much slower than the fastest option still counts as fast (default: 1.05)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rskcnn.backends import auto_priority, calibration

    results = []
    for path in args.results:
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"rskcnn calibrate: cannot read {path}: {error}")
    tolerance = calibration.TOLERANCE if args.tolerance is None else args.tolerance
    if tolerance < 1.0:
        raise SystemExit(f"rskcnn calibrate: --tolerance must be >= 1, got {tolerance}")
    devices = {r.get("settings", {}).get("device", "cuda") for r in results}
    # Each backend is held against what auto would run if it declined: the ones after it.
    order = list(auto_priority(devices.pop())) if len(devices) == 1 else None
    try:
        table = calibration.calibration_from_benches(results, tolerance, order)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"rskcnn calibrate: {error}")
    out = args.out or calibration.TABLE_DIR / f"{table['machine_class']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    for dtype, backends in table["faster_below"].items():
        for backend, bounds in backends.items():
            line = ", ".join(f"{g} <= {b:.2f}" for g, b in bounds.items())
            print(f"{table['device']} {dtype} {backend}: fast choice up to keep {line}")
    print(f"rskcnn calibrate: wrote {out}", file=sys.stderr)
    return 0
