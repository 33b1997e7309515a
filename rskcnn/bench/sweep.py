"""What the bench times, in which order: per layer and (granularity, p), dense first, then
every (backend, pass), then in graph timing all of them again as CUDA-graph replays, in turn;
a configuration timed while other processes were busy is timed again. Also the data it times
on (:func:`bench_tensors`)."""

from __future__ import annotations

import torch

from .passes import COMPACT_IDEAL, COMPACT_IDEAL_GRANULARITY, DENSE, MASKED_DENSE

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def bench_tensors(layer, batch: int, *, seed: int = 0, dtype: str | torch.dtype = "float32",
                  channels_last: bool = False, device: str | torch.device = "cpu"):
    """The data the bench times ``layer`` on, drawn on the CPU from ``seed`` and then moved.

    Returns ``(x, w, b, grad_output)``: the input (batch, C_in, size, size), the weight
    (C_out, C_in, k, k) scaled by fan_in**-0.5, the bias (C_out,) or None when the layer has
    none, and the output gradient (batch, C_out, out_size, out_size). ``dtype`` is a torch
    dtype or a name in :data:`DTYPES`; ``channels_last`` sets the 4-d tensors' memory format.
    The same arguments give the same tensors, so a profile can rebuild what the bench timed.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"bench_tensors: dtype must be one of {', '.join(DTYPES)} or a torch.dtype, "
                             f"got {dtype!r}")
        dtype = DTYPES[dtype]
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"bench_tensors: batch must be an int >= 1, got {batch!r}")
    generator = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def randn(shape, scale=1.0):
        t = (torch.randn(shape, generator=generator) * scale).to(device=device, dtype=dtype)
        return t.contiguous(memory_format=fmt) if t.dim() == 4 else t

    fan_in = layer.in_channels * layer.kernel**2
    x = randn(layer.input_shape(batch))
    w = randn(layer.weight_shape, fan_in**-0.5)
    b = randn((layer.out_channels,)) if layer.bias else None
    grad_output = randn((batch, layer.out_channels, layer.out_size, layer.out_size))
    return x, w, b, grad_output


def _timings_per_config(settings: dict) -> int:
    """How many timings one (layer, granularity, p) takes: every pass of dense, the backends
    (``settings["backends"]`` lists masked-dense and the rskcnn backends) and the ideals."""
    return len(settings["passes"]) * (len(settings["backends"]) + len(settings.get("ideals", [])))


def _settings_tensors(layer, batch: int, settings: dict, device: torch.device):
    """:func:`bench_tensors` with a run's seed, dtype and memory format."""
    return bench_tensors(layer, batch, seed=settings["seed"], dtype=settings["dtype"],
                         channels_last=settings["memory_format"] == "channels_last", device=device)


def _supported(backend: str, granularity: str, layer, x, block) -> list[str]:
    """Why ``backend`` cannot run this layer and granularity (empty if it can)."""
    if backend == MASKED_DENSE:
        return []
    if backend == COMPACT_IDEAL:
        if granularity == COMPACT_IDEAL_GRANULARITY:
            return []
        return [f"{COMPACT_IDEAL} is the ideal of the compaction path, which only filter masks have"]
    from rskcnn.backends import ConvCall, get_backend

    call = ConvCall(device=x.device, dtype=x.dtype, input_shape=tuple(x.shape),
                    weight_shape=layer.weight_shape, block=block, stride=(layer.stride,) * 2,
                    padding=(layer.padding,) * 2, dilation=(1, 1), groups=1)
    return get_backend(backend).not_supported_reasons(call)


def _conv_and_tensors(backend: str, layer, mask, block, tensors):
    """The convolution ``backend`` times and the tensors it runs on: the bench's own, except
    for compact-ideal (dense conv on the kept filters' weight, bias and output gradient)."""
    from .passes import backend_conv, compact_ideal_tensors, dense_conv, masked_dense_conv

    if backend == DENSE:
        return dense_conv(layer.stride, layer.padding), tensors
    if backend == COMPACT_IDEAL:
        return dense_conv(layer.stride, layer.padding), compact_ideal_tensors(mask, *tensors)
    if backend == MASKED_DENSE:
        return masked_dense_conv(mask, block, layer.stride, layer.padding), tensors
    return backend_conv(backend, mask, block, layer.stride, layer.padding), tensors


def _builder(conv, pass_name: str, tensors):
    """A function that builds the callable of one pass (what is timed), e.g. for :func:`capture`."""
    from .passes import make_pass

    return lambda: make_pass(conv, pass_name, *tensors)


def _add_graph_times(records: list[dict], builds: dict, graph: dict) -> None:
    """Times ``builds`` ({(backend, pass): build}) as CUDA-graph replays, interleaved, and adds
    ``graph_median_s``, ``graph_iqr_s``, ``graph_ratio`` (to dense's replays of the same pass)
    and ``graph_error`` to the matching records."""
    from .graphs import graph_times

    times = graph_times(builds, graph["replays"], graph["repeats"], graph["warmups"])
    for record in records:
        timing = times.get((record["backend"], record["pass"]), {"graph_error": "not captured"})
        dense = times.get((DENSE, record["pass"]), {}).get("graph_median_s")
        median = timing.get("graph_median_s")
        record.update(graph_median_s=median, graph_iqr_s=timing.get("graph_iqr_s"),
                      graph_ratio=median / dense if median is not None and dense else None,
                      graph_error=timing.get("graph_error"))


def _time_config(layer, where: dict, mask, block, tensors, settings: dict, timed) -> dict:
    """Dense, then each (backend, pass), for one (layer, granularity, p); in graph timing then
    all of them as CUDA-graph replays, interleaved. Returns its records, skips and errors;
    dense is timed here, seconds before what is divided by it."""
    out = {"records": [], "skipped": [], "errors": []}
    builds = {}  # (backend, pass) -> build, for the graph timing
    conv, _ = _conv_and_tensors(DENSE, layer, mask, block, tensors)
    dense = {}
    for pass_name in settings["passes"]:
        builds[(DENSE, pass_name)] = _builder(conv, pass_name, tensors)
        dense[pass_name] = timed(f"{layer.name} dense {pass_name}", builds[(DENSE, pass_name)])
        out["records"].append({**where, "block": None, "kept_fraction": 1.0, "backend": DENSE,
                               "pass": pass_name, **dense[pass_name], "ratio": 1.0})
    for backend, why in settings.get("unavailable", {}).items():
        out["skipped"].append({**where, "backend": backend, "reason": why})
    for backend in settings["backends"][1:] + settings.get("ideals", []):
        reasons = _supported(backend, where["granularity"], layer, tensors[0], block)
        if not reasons:
            try:
                conv, backend_tensors = _conv_and_tensors(backend, layer, mask, block, tensors)
            except ValueError as error:  # compact-ideal of a mask that keeps no filter
                reasons = [str(error)]
        if reasons:
            out["skipped"].append({**where, "backend": backend, "reason": "; ".join(reasons)})
            timed.skip(len(settings["passes"]))
            continue
        for pass_name in settings["passes"]:
            label = f"{layer.name} {where['granularity']} p={where['keep_prob']} {backend} {pass_name}"
            build = _builder(conv, pass_name, backend_tensors)
            try:
                timing = timed(label, build)
            except Exception as error:  # record it, finish the table, exit non-zero
                out["errors"].append({**where, "backend": backend, "pass": pass_name,
                                      "error": f"{type(error).__name__}: {error}"})
                continue
            builds[(backend, pass_name)] = build
            out["records"].append({**where, "backend": backend, "pass": pass_name, **timing,
                                   "ratio": timing["median_s"] / dense[pass_name]["median_s"]})
    if settings.get("timing") == "graph":
        _add_graph_times(out["records"], builds, settings["graph"])
    return out


def _time_point(layer, tensors, granularity: str, keep_prob: float, settings: dict, timed,
                retries: int, attempts_before: int = 0) -> dict:
    """One (layer, granularity, p), timed again up to ``retries`` times while other processes
    took more than ``busy_share`` of the CPUs. Its records keep that share and the attempt."""
    from rskcnn import block_shape, expand_mask, sample_mask

    from .timing import cpu_counters, others_cpu_share

    device = tensors[0].device
    block = block_shape(granularity, layer.weight_shape, tuple(settings["block_size"]))
    generator = torch.Generator().manual_seed(settings["seed"])
    mask = sample_mask(layer.weight_shape, keep_prob, block, generator=generator, device=device,
                       law=settings.get("law", "bernoulli"))
    kept = expand_mask(mask, block, layer.weight_shape).float().mean().item()
    where = {"layer": layer.name, "granularity": granularity, "block": list(block),
             "keep_prob": keep_prob, "kept_fraction": round(kept, 4)}
    per_config = _timings_per_config(settings)
    for attempt in range(attempts_before + 1, attempts_before + retries + 2):
        counters = cpu_counters()
        out = _time_config(layer, where, mask, block, tensors, settings, timed)
        share = others_cpu_share(counters, cpu_counters())
        busy = share is not None and share > settings["busy_share"]
        if not busy or attempt > attempts_before + retries:
            break
        timed.again(per_config, f"{layer.name} {granularity} p={keep_prob}: other processes used "
                                f"{share:.0%} of the CPUs; timing it again")
    for record in out["records"]:
        record.update(others_cpu_share=share, attempt=attempt)
    return {**out, "busy": busy, "share": share, "attempts": attempt}


def time_all(plan, settings: dict, device: torch.device, timed) -> list[dict]:
    """Times every (layer, granularity, p) of ``plan`` ([(Layer, batch)]) under a run's
    ``settings`` (the JSON's ``settings``) with ``timed`` (a :class:`~rskcnn.bench.timing.Timed`);
    returns one dict of ``records``, ``skipped`` and ``errors`` per configuration.

    Every (layer, granularity, p) in order. Retrying helps against a burst of other work,
    not a long job: after two configurations in a row that stayed busy, a configuration is
    retried only once one is quiet again; at the end, those still busy get one more try."""
    points: dict[tuple, dict] = {}
    busy: list[tuple] = []
    busy_in_a_row = 0
    for index, (layer, batch) in enumerate(plan):
        tensors = _settings_tensors(layer, batch, settings, device)
        for granularity in settings["granularities"]:
            for keep_prob in settings["keep_probs"]:
                retries = settings["retries"] if busy_in_a_row < 2 else 0
                out = _time_point(layer, tensors, granularity, keep_prob, settings, timed, retries)
                busy_in_a_row = busy_in_a_row + 1 if out["busy"] else 0
                points[(index, granularity, keep_prob)] = out
                if out["busy"]:
                    busy.append((index, granularity, keep_prob))
    if busy and settings["retries"]:
        per_config = _timings_per_config(settings)
        timed.again(per_config * len(busy), f"timing the {len(busy)} configurations that stayed busy once more")
        for index, granularity, keep_prob in busy:
            layer, batch = plan[index]
            tensors = _settings_tensors(layer, batch, settings, device)
            before = points[(index, granularity, keep_prob)]
            out = _time_point(layer, tensors, granularity, keep_prob, settings, timed, 0, before["attempts"])
            if out["share"] is not None and out["share"] < before["share"]:
                points[(index, granularity, keep_prob)] = out
    return list(points.values())
