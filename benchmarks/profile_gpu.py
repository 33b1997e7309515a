"""Where a GPU training step's time goes: the CUDA kernels of one step of each backend and
granularity, from torch.profiler, so that packing, planning and the convolution kernels
can be told apart. Part of benchmarks/gpu_suite.sh.

    python benchmarks/profile_gpu.py [--layer vgg16] [--batch 32] [--keep 0.5] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import rskcnn
from rskcnn.bench import LAYERS, backend_conv, make_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="vgg16", choices=tuple(LAYERS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--backends", default="cuda,triton")
    parser.add_argument("--rows", type=int, default=8, help="kernels listed per profile")
    args = parser.parse_args()

    torch.manual_seed(0)
    layer, dtype = LAYERS[args.layer], getattr(torch, args.dtype)
    x = torch.randn(layer.input_shape(args.batch), device="cuda", dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(layer.weight_shape, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(layer.out_channels, device="cuda", dtype=dtype)
    out_shape = (args.batch, layer.out_channels, layer.out_size, layer.out_size)
    grad_output = torch.ones(out_shape, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    for granularity in rskcnn.GRANULARITIES:
        if granularity not in ("filter", "tap", "block", "element"):
            continue
        block = rskcnn.block_shape(granularity, w.shape, (32, 32))
        mask = rskcnn.sample_mask(w.shape, args.keep, block, device="cuda")
        for backend in ["reference", *args.backends.split(",")]:
            try:
                conv = backend_conv(backend, mask, block, layer.stride, layer.padding)
                step = make_pass(conv, "step", x, w, b, grad_output)
                for _ in range(3):  # warm-up: JIT, autotuning, allocator
                    step()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        step()
                    torch.cuda.synchronize()
            except Exception as error:  # report and go on: one backend's failure must not hide the rest
                print(f"### {args.layer} {granularity} keep {args.keep} {backend}: {type(error).__name__}: {error}")
                continue
            events = [e for e in prof.key_averages() if e.device_time_total > 0]
            total = sum(e.self_device_time_total for e in events) / 5 / 1e3
            print(f"### {args.layer} b{args.batch} {args.dtype} {granularity} keep {args.keep} {backend}: "
                  f"{total:.3f} ms of kernels per step")
            for e in sorted(events, key=lambda e: -e.self_device_time_total)[: args.rows]:
                print(f"  {e.self_device_time_total / 5 / 1e3:8.3f} ms {e.count // 5:3d}x  {e.key[:100]}")


if __name__ == "__main__":
    main()
