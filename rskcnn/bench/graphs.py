"""Kernel time on CUDA: each pass of one configuration captured once in a CUDA graph, then
replayed between CUDA events, the passes (dense among them) timed in turn, round after round.

Why: at the bench's layer sizes an eager GPU pass is host-bound. On the H200 an eager dense
training step of VGG-16's conv5_3 at batch 32 took about 0.24 ms of wall time for about
0.17 ms of kernels (benchmarks/results/gpu-h200, run 3's bench and profile), so a kernel
that does a fraction p of the work cannot show a ratio near p in wall time. A replayed graph
launches the whole pass at once: what the events measure is the kernels and the gaps between
them on the GPU.

How (torch.cuda.graphs' rules): the pass is built and called ``warmups`` times on a side
stream (cuDNN's autotuner, Triton's compiler and the caching allocator settle there, and the
forward that a grad-input or grad-weight pass back-propagates through is recorded on that
stream, so its backward runs on the capturing stream), then one call is captured on the same
stream. Its inputs are static: the bench's tensors, never re-drawn. Gradients come from
``torch.autograd.grad``, so nothing accumulates into ``.grad`` between replays. A pass that
synchronizes with the host (``.item()``, ``nonzero``...) cannot be captured: its error is
returned for that pass, and the other passes are timed all the same.

The CUDA parts are :func:`capture` and :meth:`CapturedPass.start`; the order of the rounds,
the statistics and the error handling (:func:`interleaved_rounds`, :func:`summary`,
:func:`graph_times`) take their device calls as arguments, so the CPU tests run them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

WARMUPS = 3  # calls on the side stream before the capture, as torch.cuda.graphs' examples do
REPLAYS = 20  # timed replays between one pair of events
REPEATS = 11  # rounds; each pass's time is the median over them
ERROR_CHARS = 400  # the part of an error's text a record keeps


@dataclass
class CapturedPass:
    """One pass captured in a CUDA graph. ``fn`` is the pass itself, kept alive: its closure
    holds the static inputs and the autograd graph that the replays read."""

    graph: object  # torch.cuda.CUDAGraph
    fn: Callable[[], object]

    def start(self, replays: int) -> Callable[[], float]:
        """Enqueues one untimed replay (so that the GPU is busy while the timed ones are
        launched), then ``replays`` replays between two CUDA events, on the current stream.
        Returns a function that gives the seconds per replay once the stream is synchronized."""
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.graph.replay()
        begin.record()
        for _ in range(replays):
            self.graph.replay()
        end.record()
        return lambda: begin.elapsed_time(end) / 1e3 / replays


def capture(build: Callable[[], Callable[[], object]], warmups: int = WARMUPS) -> CapturedPass:
    """Builds a pass with ``build()`` (e.g. ``lambda: make_pass(conv, "step", x, w, b, grad_output)``)
    on a new side stream, calls it ``warmups`` times there and captures one call in a CUDA graph
    on that stream. Raises what building, warming up or capturing raises (a host sync in the
    pass makes the capture fail); the caller's stream is the current one again either way."""
    caller = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(caller)  # the inputs were made on the caller's stream
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(side):
            fn = build()
            for _ in range(warmups):
                fn()
        with torch.cuda.graph(graph, stream=side):
            fn()
    finally:
        # torch.cuda.graph does not restore the stream when ending a failed capture raises.
        torch.cuda.set_stream(caller)
    caller.wait_stream(side)
    return CapturedPass(graph, fn)


def interleaved_rounds(starters: dict[Hashable, Callable[[], Callable[[], float]]], repeats: int,
                       synchronize: Callable[[], None]) -> dict[Hashable, list[float]]:
    """Times every entry once per round for ``repeats`` rounds and returns each entry's samples.

    ``starters[key]()`` enqueues one timing and returns the function that reads it;
    ``synchronize()`` waits for the device at the end of each round. The order turns by one
    entry each round, so that no entry is always the first one after the synchronization
    (when the GPU starts from idle), and a drift of the card's speed during the run moves
    dense and the others alike."""
    keys = list(starters)
    samples: dict[Hashable, list[float]] = {key: [] for key in keys}
    for round_index in range(repeats):
        shift = round_index % len(keys) if keys else 0
        reads = [(key, starters[key]()) for key in keys[shift:] + keys[:shift]]
        synchronize()
        for key, read in reads:
            samples[key].append(read())
    return samples


def summary(samples: list[float]) -> dict:
    """``{"graph_median_s", "graph_iqr_s"}`` of per-replay seconds: the median over rounds and
    the spread between their quartiles (linear interpolation; 0 for one sample)."""
    if not samples:
        raise ValueError("summary: no samples")
    iqr = 0.0
    if len(samples) > 1:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        iqr = q3 - q1
    return {"graph_median_s": statistics.median(samples), "graph_iqr_s": iqr}


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


def graph_times(builds: dict[Hashable, Callable[[], Callable[[], object]]], replays: int = REPLAYS,
                repeats: int = REPEATS, warmups: int = WARMUPS, *, capture_pass=None,
                synchronize: Callable[[], None] | None = None) -> dict[Hashable, dict]:
    """Captures the pass of every build and times them all interleaved (:func:`interleaved_rounds`).

    Returns, per key, :func:`summary`'s dict, or ``{"graph_error": "Type: message"}`` for a
    pass that could not be captured (or whose replays failed). ``capture_pass`` (default
    :func:`capture`) and ``synchronize`` (default ``torch.cuda.synchronize``) are the device
    calls, to be replaced only by tests."""
    capture_pass = capture_pass or capture
    synchronize = synchronize or torch.cuda.synchronize
    captured, out = {}, {}
    for key, build in builds.items():
        try:
            captured[key] = capture_pass(build, warmups)
        except Exception as error:  # recorded for this pass; the others are still timed
            out[key] = {"graph_error": f"capture failed: {_error_text(error)}"}
    try:
        samples = interleaved_rounds({key: (lambda c=c: c.start(replays)) for key, c in captured.items()},
                                     repeats, synchronize)
    except Exception as error:  # a replay failed: none of this round's timings can be trusted
        return {**out, **{key: {"graph_error": f"replay failed: {_error_text(error)}"} for key in captured}}
    return {**out, **{key: summary(values) for key, values in samples.items()}}
