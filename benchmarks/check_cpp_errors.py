"""Checks that the extension's C++ argument checks reach Python as exceptions on this
machine's build (a toolchain whose C++ exceptions cannot unwind through the extension
crashes the process instead). Each probe runs in its own process, so a crash is reported
rather than fatal. Part of benchmarks/gpu_suite.sh.

    python benchmarks/check_cpp_errors.py [--devices cpu,cuda]
Exits non-zero if a probe crashed or did not raise.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

PROBES = {
    # op, arguments built in the child (DEVICE is substituted), the message expected
    "plan_tiles: groups": (
        "torch.ops.rskcnn.plan_tiles(torch.ones(6, 2, 3, 2, dtype=torch.bool, device=DEVICE), "
        "[12, 6, 3, 2], 5, [2, 3, 1, 1], [4, 2, 2, 3], True)",
        "must divide Cout"),
    "masked_conv2d: mask shape": (
        "torch.ops.rskcnn.masked_conv2d(torch.randn(1, 4, 5, 5, device=DEVICE), "
        "torch.randn(6, 4, 3, 3, device=DEVICE), torch.ones(6, 4, 3, 2, dtype=torch.bool, device=DEVICE), "
        "None, [1, 1], [1, 1], [1, 1], 1, [1, 1, 1, 1], 1.0)",
        "mask must have shape"),
}

CHILD = """
import torch, rskcnn
DEVICE = {device!r}
try:
    {call}
except RuntimeError as error:
    print("raised RuntimeError:", str(error).splitlines()[0][:160])
    raise SystemExit(0 if {expected!r} in str(error) else 3)
print("did not raise")
raise SystemExit(4)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda")
    args = parser.parse_args()
    bad = 0
    for device in args.devices.split(","):
        for name, (call, expected) in PROBES.items():
            code = CHILD.format(device=device, call=call, expected=expected)
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
            lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
            said = lines[-1][:160] if lines else ""
            if proc.returncode < 0:
                verdict = f"CRASHED ({signal.Signals(-proc.returncode).name})"
            elif proc.returncode == 0:
                verdict = "ok"
            else:
                verdict = f"FAILED (exit {proc.returncode})"
            bad += verdict != "ok"
            print(f"{device:5s} {name:28s} {verdict:22s} {said}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
