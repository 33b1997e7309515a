"""``python -m rskcnn info``: the build, the backends usable on each device and why the
others are not, and which backend ``auto`` picks for each granularity and dtype."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform

import torch

from rskcnn.bench import LAYERS

from .arguments import add_command, positive_pair

AUTO_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def add_parser(commands) -> None:
    parser = add_command(
        commands, "info", run,
        help="show the build, the usable backends and auto's choices",
        description="Shows the torch and extension builds, which backends are usable on each device "
        "(and why not), and which backend 'auto' picks for each granularity and dtype, "
        "with the reasons it passed over the others.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--layer", choices=sorted(LAYERS), default="paper",
                        help="the convolution whose shape auto is asked about (default: paper)")
    parser.add_argument("--block-size", type=positive_pair, default=(32, 32), metavar="BO,BI",
                        help="block size of the 'block' granularity (default: 32,32)")


def triton_status() -> tuple[str | None, str | None]:
    """(version, None) when Triton imports, else (None, why not). Imported only here."""
    if importlib.util.find_spec("triton") is None:
        return None, "not installed"
    try:
        triton = importlib.import_module("triton")
    except Exception as error:  # a broken install must not break info
        return None, f"import failed: {type(error).__name__}: {error}"
    return getattr(triton, "__version__", "unknown"), None


def devices() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda", torch.cuda.current_device()))
    return found


def build_info() -> dict:
    import rskcnn
    from rskcnn import _extension

    try:
        built = importlib.import_module("rskcnn._build_info")
    except ImportError:
        built = None
    triton_version, triton_reason = triton_status()
    cuda_devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            cuda_devices.append({"index": index, "name": props.name,
                                 "capability": f"{props.major}.{props.minor}"})
    return {
        "rskcnn": rskcnn.__version__,
        "location": os.path.dirname(rskcnn.__file__),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": {
            "loaded": _extension.has_ops(),
            "load_error": _extension.load_error(),
            "built_with_torch": getattr(built, "TORCH_VERSION", None),
            "cuda_built": _extension.cuda_built(),
            "cuda_build_reason": _extension.cuda_build_reason(),
            "cuda_arch_list": getattr(built, "CUDA_ARCH_LIST", None),
        },
        "triton": {"version": triton_version, "reason": triton_reason},
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": cuda_devices,
    }


def backend_table() -> list[dict]:
    from rskcnn.backends import BACKENDS

    rows = []
    for device in devices():
        for name, backend in BACKENDS.items():
            reason = backend.unavailable_reason(device)
            rows.append({"device": device.type, "backend": name, "usable": reason is None,
                         "reason": reason, "description": backend.description})
    return rows


def _auto_cases(device: torch.device):
    """(dtype, kept fraction) pairs to show; auto reads the kept fraction of CPU masks
    in eager mode, and None stands for a mask it cannot read (under torch.compile)."""
    for dtype in AUTO_DTYPES:
        kepts = (0.25, 0.5, None) if device.type == "cpu" and dtype == torch.float32 else (None,)
        for kept in kepts:
            yield dtype, kept


def auto_table(layer_name: str, block_size: tuple[int, int]) -> list[dict]:
    from rskcnn import GRANULARITIES, block_shape
    from rskcnn.backends import ConvCall, choose

    layer = LAYERS[layer_name]
    rows = []
    for device in devices():
        for granularity in GRANULARITIES:
            block = block_shape(granularity, layer.weight_shape, block_size)
            for dtype, kept in _auto_cases(device):
                call = ConvCall(
                    device=device, dtype=dtype, input_shape=layer.input_shape(layer.batch),
                    weight_shape=layer.weight_shape, block=block, stride=(layer.stride,) * 2,
                    padding=(layer.padding,) * 2, dilation=(1, 1), groups=1, kept_fraction=kept,
                )
                row = {"device": device.type, "granularity": granularity, "block": list(block),
                       "dtype": str(dtype).removeprefix("torch."), "kept": kept}
                try:
                    chosen, skipped = choose(call)
                    row.update(backend=chosen.name, passed_over=skipped, error=None)
                except RuntimeError as error:
                    row.update(backend=None, passed_over={}, error=str(error))
                rows.append(row)
    return rows


def collect(layer_name: str = "paper", block_size: tuple[int, int] = (32, 32)) -> dict:
    layer = LAYERS[layer_name]
    return {
        **build_info(),
        "backends": backend_table(),
        "auto_layer": {"name": layer.name, "description": layer.description,
                       "input_shape": list(layer.input_shape(layer.batch)),
                       "weight_shape": list(layer.weight_shape), "stride": layer.stride,
                       "padding": layer.padding, "block_size": list(block_size)},
        "auto": auto_table(layer_name, block_size),
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    return "\n".join(lines)


def format_text(info: dict) -> str:
    ext = info["extension"]
    if ext["loaded"]:
        ext_line = f"loaded, built against torch {ext['built_with_torch']}"
    else:
        ext_line = f"NOT loaded: {ext['load_error']}"
    cuda_kernels = "built" if ext["cuda_built"] else "not built"
    if ext["cuda_built"] and ext["cuda_arch_list"]:
        cuda_kernels += f" for {ext['cuda_arch_list']}"
    triton = info["triton"]
    if info["cuda_devices"]:
        cuda_line = ", ".join(f"cuda:{d['index']} {d['name']} (sm {d['capability']})" for d in info["cuda_devices"])
    else:
        cuda_line = "none visible"
    torch_line = info["torch"] + (f" (CUDA {info['torch_cuda']} build)" if info["torch_cuda"] else " (CPU build)")
    lines = [
        f"rskcnn {info['rskcnn']} at {info['location']}",
        f"python {info['python']}, torch {torch_line}",
        f"extension rskcnn._C: {ext_line}",
        f"CUDA kernels: {cuda_kernels} ({ext['cuda_build_reason']})",
        f"triton: {triton['version'] or triton['reason']}",
        f"threads: {info['threads']} intra-op, {info['interop_threads']} inter-op; "
        f"{info['cpu_count']} CPUs, CPU capability {info['cpu_capability']}",
        f"CUDA devices: {cuda_line}",
        "",
        "Backends",
    ]
    rows = [[r["device"], r["backend"], "yes" if r["usable"] else "no",
             r["description"] if r["usable"] else r["reason"]] for r in info["backends"]]
    lines.append(_table(["device", "backend", "usable", "description / why not"], rows))

    layer = info["auto_layer"]
    lines += [
        "",
        f"auto's choice for layer {layer['name']}: input {tuple(layer['input_shape'])}, "
        f"weight {tuple(layer['weight_shape'])}, stride {layer['stride']}, padding {layer['padding']}",
    ]
    rows = []
    fallbacks = 0
    for r in info["auto"]:
        if r["error"]:
            chosen, why = "NONE", r["error"]
        else:
            chosen = r["backend"]
            why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in r["passed_over"].items())
            if r["passed_over"]:
                chosen += " (fallback)"
                fallbacks += 1
        kept = "traced/unread" if r["kept"] is None else f"{r['kept']:.2f}"
        rows.append([r["device"], r["granularity"], r["dtype"], kept, chosen, why])
    lines.append(_table(["device", "granularity", "dtype", "kept", "auto picks", "passed over"], rows))
    lines += ["", f"{fallbacks} of {len(info['auto'])} configurations fall back from auto's first choice."]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect(args.layer, args.block_size)
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0
