"""FLOPs, minimum bytes and dense throughput of each layer of a ``rskcnn bench`` result.

Usage: python benchmarks/layer_costs.py benchmarks/results/cpu-float32.json
Prints a Markdown table: per layer, the forward's multiply-add FLOPs (grad-input and
grad-weight cost the same), the fewest bytes a pass must move (each input read once, each
output written once), their ratio, and dense F.conv2d's measured GFLOP/s per pass (the median
over the run of the dense medians).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}


def pass_bytes(layer: dict, batch: int, itemsize: int) -> dict[str, int]:
    size, out = layer["size"], (layer["size"] + 2 * layer["padding"] - layer["kernel"]) // layer["stride"] + 1
    x = batch * layer["in_channels"] * size * size
    y = batch * layer["out_channels"] * out * out
    w = layer["out_channels"] * layer["in_channels"] * layer["kernel"] ** 2
    # forward: x, w -> y; grad-input: dy, w -> dx; grad-weight: dy, x -> dw
    return {p: itemsize * n for p, n in (("forward", x + w + y), ("grad-input", y + w + x),
                                          ("grad-weight", y + x + w))}


def main(path: str) -> None:
    data = json.loads(open(path).read())
    itemsize = ITEMSIZE[data["settings"]["dtype"]]
    medians = defaultdict(list)
    for r in data["records"]:
        if r["backend"] == "dense":
            medians[(r["layer"], r["pass"])].append(r["median_s"])
    print("| layer | batch | forward GFLOP | bytes / pass (MB) | FLOP/byte | dense GFLOP/s fwd | grad-in | grad-w | step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layer in data["layers"]:
        name, flops = layer["name"], layer["forward_flops"]
        batch = data["settings"].get("batch") or layer["batch"]  # --batch sets every layer's
        mb = pass_bytes(layer, batch, itemsize)["forward"] / 1e6
        rates = []
        for p in ("forward", "grad-input", "grad-weight", "step"):
            times = medians.get((name, p))
            work = 3 * flops if p == "step" else flops
            rates.append(f"{work / statistics.median(times) / 1e9:.0f}" if times else "-")
        print(f"| {name} | {batch} | {flops / 1e9:.2f} | {mb:.1f} | {flops / (mb * 1e6):.0f} | " + " | ".join(rates) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
