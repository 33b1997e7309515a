"""Issue 3's two side targets on the CPU backend: per-call overhead on a small layer, and the
peak memory of a training step, each against dense F.conv2d (oneDNN) in the same run.

Overhead: a layer whose dense forward takes about 1 ms. The `cpu` backend's fixed per-call
cost (argument checks, turning the mask into index lists, gathering the kept weights,
dispatch, allocation) is its time with the same weight and a keep-0.5 mask on a one-pixel
input, where the arithmetic is negligible. Also timed: a mask that keeps nothing on the real
input (what a call costs whatever the mask keeps), and keep 0.5.

Memory: each (granularity, keep) runs in a fresh process: a warm-up step (libraries, thread
pools, oneDNN primitives), then the resident high-water mark is reset to the current
resident size (Linux: writing 5 to /proc/self/clear_refs) and one more step runs. Its peak
extra memory is VmHWM after it minus VmRSS before it. glibc serves blocks over 128 KiB with
mmap and returns them on free when its threshold is fixed (MALLOC_MMAP_THRESHOLD_, set for
the child; left dynamic, glibc keeps freed blocks in the heap and a step reuses them
unseen), so the mark follows large temporaries.

    python benchmarks/cpu_overhead_memory.py [--threads 2] [--out benchmarks/results/cpu-overhead-memory.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

GRANULARITIES = ("filter", "block", "tap", "element")
# (N, Cin, Cout, H): a small layer, dense forward about 1 ms on 2 cores (checked in the output)
SMALL = (8, 96, 96, 14)
# the memory layer: VGG-16 conv3_3 at batch 8
MEMORY = (8, 256, 256, 28)

STEP_CHILD = r"""
import json, re, torch, rskcnn
from rskcnn.bench import backend_conv, dense_conv, make_pass
def kib(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1))
torch.set_num_threads({threads})
n, cin, cout, h = {shape}
granularity, keep = {granularity!r}, {keep!r}
torch.manual_seed(0)
x, w, b = torch.randn(n, cin, h, h), torch.randn(cout, cin, 3, 3), torch.randn(cout)
if granularity == "dense":
    conv = dense_conv(1, 1)
else:
    block = rskcnn.block_shape(granularity, w.shape, (32, 32))
    conv = backend_conv("cpu", rskcnn.sample_mask(w.shape, keep, block, seed=1), block, 1, 1)
step = make_pass(conv, "step", x, w, b, torch.randn(n, cout, h, h))
step()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kib("VmRSS")
step()
print(json.dumps({{"peak_extra_mib": (kib("VmHWM") - before) / 1024}}))
"""


def step_peak_mib(threads: int, shape, granularity: str, keep: float) -> float:
    code = STEP_CHILD.format(threads=threads, shape=shape, granularity=granularity, keep=keep)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]


def overhead_rows(threads: int) -> list[dict]:
    import rskcnn
    from rskcnn.bench import measure

    def median_ms(fn) -> float:
        return measure(fn, threads, 1.0, torch.device("cpu"))["median_s"] * 1e3

    torch.manual_seed(0)
    n, cin, cout, h = SMALL
    x, w, b = torch.randn(n, cin, h, h), torch.randn(cout, cin, 3, 3), torch.randn(cout)
    rows = []
    for granularity in GRANULARITIES:
        block = rskcnn.block_shape(granularity, w.shape, (32, 32))
        masks = {"none kept": torch.zeros(rskcnn.mask_shape(w.shape, block), dtype=torch.bool),
                 "keep 0.5": rskcnn.sample_mask(w.shape, 0.5, block, seed=1)}
        dense = median_ms(lambda: F.conv2d(x, w, b, 1, 1))
        times = {k: median_ms(lambda m=m: rskcnn.rsk_conv2d(x, w, m, b, 1, 1, block=block, backend="cpu"))
                 for k, m in masks.items()}
        pixel = x[:1, :, :1, :1].contiguous()
        times["fixed"] = median_ms(lambda: rskcnn.rsk_conv2d(pixel, w, masks["keep 0.5"], b, 1, 1,
                                                             block=block, backend="cpu"))
        dense_after = median_ms(lambda: F.conv2d(x, w, b, 1, 1))
        dense = (dense + dense_after) / 2
        rows.append({"granularity": granularity, "dense_ms": dense, **{f"{k}_ms": v for k, v in times.items()}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/cpu-overhead-memory.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lines = [
        "# CPU backend: per-call overhead and training-step peak memory",
        "",
        f"- {datetime.now(timezone.utc).isoformat(timespec='seconds')}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads, float32, NCHW",
        "- Command: `python benchmarks/cpu_overhead_memory.py`" + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "",
        f"## Per-call overhead: forward of a {SMALL[1]}->{SMALL[2]} 3x3 conv on {SMALL[0]}x{SMALL[1]}x{SMALL[3]}x{SMALL[3]}",
        "",
        "Target: the per-call overhead stays under 10% of dense's time. `fixed` is the `cpu` backend",
        "with the keep-0.5 mask on a one-pixel input (checks, mask -> index lists, kept-weight gather,",
        "dispatch): the overhead. `none kept` is a mask that keeps nothing on the real input: what a",
        "call costs whatever the mask keeps (for `block`/`element`, mostly the im2col chunk gathers).",
        "",
        "| granularity | dense ms | fixed ms | fixed / dense | none kept ms | none kept / dense | keep 0.5 ms | keep 0.5 / dense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in overhead_rows(args.threads):
        lines.append(f"| {r['granularity']} | {r['dense_ms']:.3f} | {r['fixed_ms']:.3f} | "
                     f"{r['fixed_ms'] / r['dense_ms']:.1%} | {r['none kept_ms']:.3f} | "
                     f"{r['none kept_ms'] / r['dense_ms']:.1%} | {r['keep 0.5_ms']:.3f} | "
                     f"{r['keep 0.5_ms'] / r['dense_ms']:.2f} |")
        print(lines[-1], flush=True)
    n, cin, cout, h = MEMORY
    input_mib = n * cin * h * h * 4 / 2**20
    lines += [
        "",
        f"## Peak memory of one training step: {cin}->{cout} 3x3 conv on {n}x{cin}x{h}x{h} "
        f"(input {input_mib:.1f} MiB; a whole-input im2col would be {9 * input_mib:.0f} MiB)",
        "",
        "Target: no more than dense's peak plus O(mask) index lists. Peak resident memory of",
        "one step above the resident size before it, after a warm-up step, each in a fresh process.",
        "",
        "| granularity | keep | peak extra MiB | minus dense's MiB |",
        "| --- | --- | --- | --- |",
    ]
    dense_peak = step_peak_mib(args.threads, MEMORY, "dense", 1.0)
    lines.append(f"| dense | 1.0 | {dense_peak:.1f} | 0 |")
    print(lines[-1], flush=True)
    for granularity in GRANULARITIES:
        for keep in (0.25, 0.5, 0.75):
            peak = step_peak_mib(args.threads, MEMORY, granularity, keep)
            lines.append(f"| {granularity} | {keep} | {peak:.1f} | {peak - dense_peak:+.1f} |")
            print(lines[-1], flush=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
