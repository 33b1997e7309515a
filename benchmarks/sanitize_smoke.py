"""A small forward and backward of every granularity on one backend, for compute-sanitizer.

Usage: compute-sanitizer --tool memcheck python benchmarks/sanitize_smoke.py [--backend cuda|triton]
Exits non-zero if a result differs from the reference backend.
"""

from __future__ import annotations

import argparse
import sys

import torch

import rskcnn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="triton")
    parser.add_argument("--dtype", default="float16", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    failures = 0
    for granularity in rskcnn.GRANULARITIES:
        # Odd sizes, so that every tile edge and mask edge is exercised.
        x = torch.randn(3, 37, 11, 9, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.randn(45, 37, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
        block = rskcnn.block_shape(granularity, w.shape, (16, 16))
        mask = rskcnn.sample_mask(w.shape, 0.5, block, device="cuda")
        results = {}
        # bias on: the forward epilogue (and a dropped filter's bias-only tile) is checked too
        bias = torch.randn(45, device="cuda", dtype=dtype, requires_grad=True)
        for backend in (args.backend, "reference"):
            out = rskcnn.rsk_conv2d(x, w, mask, bias, 2, 1, block=block, backend=backend)
            grads = torch.autograd.grad(out, (x, w), torch.ones_like(out))
            results[backend] = [t.float() for t in (out, *grads)]
        torch.cuda.synchronize()
        for name, got, want in zip(("out", "grad_input", "grad_weight"), results[args.backend], results["reference"]):
            err = ((got - want).norm() / want.norm().clamp_min(1e-12)).item()
            ok = err < 2e-2
            failures += not ok
            print(f"{granularity:8s} {name:12s} relative error {err:.2e} {'ok' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
