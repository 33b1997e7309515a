"""How one callable is timed: torch.utils.benchmark medians after warm-up, a malloc that
does not page-fault every call, how busy the other processes were, and a progress bar
(tqdm's when it is installed; it is optional)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import torch


MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30


def steady_malloc() -> str:
    """Stops glibc from handing large freed blocks back to the OS, where every call would
    page-fault its output and scratch buffers in again: on this 2-core VM that alone made dense
    F.conv2d up to 1.8x slower, by chance and changing in mid-run. Returns what was set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        ok = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1 and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        return "default (not glibc, or mallopt failed)"
    return f"glibc mallopt: M_MMAP_THRESHOLD {MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD {TRIM_THRESHOLD >> 20} MiB"


def cpu_counters() -> tuple[float, float, float] | None:
    """(all CPUs' time, their busy time, this process's CPU time), in seconds, for
    :func:`others_cpu_share`; None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    idle = fields[3] + fields[4]
    own = os.times()
    return total / tick, (total - idle) / tick, own.user + own.system


def others_cpu_share(start, end) -> float | None:
    """The share of all CPUs' time that other processes used between two counters: how
    much the run competed for the cores."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return round(max(others, 0.0) / (end[0] - start[0]), 3)


def _import_benchmark():
    """torch.utils.benchmark, without the CUDA_HOME warning its import logs on CPU-only machines."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        quiet.setLevel(level)
    return benchmark


def measure(fn, threads: int, min_run_time: float, device: torch.device) -> dict:
    """Median and IQR of ``fn`` after one warm-up call (blocked_autorange warms up again
    while it sizes its blocks), with ``threads`` intra-op threads for at least ``min_run_time``
    seconds: ``{"median_s", "iqr_s", "blocks", "calls_per_block"}``."""
    benchmark = _import_benchmark()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # Timer syncs CUDA around each block when CUDA is available; num_threads must be
    # given, since Timer otherwise runs with 1 thread.
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_s": m.median, "iqr_s": m.iqr, "blocks": len(m.times), "calls_per_block": m.number_per_run}


class _NoBar:
    """What :class:`Timed` uses instead of a tqdm bar when asked for none or tqdm is not
    installed: it counts nothing and prints only the messages."""

    def __init__(self, total: int):
        self.total = total

    def set_description(self, description: str, refresh: bool = True) -> None:
        pass

    def update(self, count: int = 1) -> None:
        pass

    def refresh(self) -> None:
        pass

    def write(self, message: str, file=None) -> None:
        print(message, file=file or sys.stderr)

    def close(self) -> None:
        pass


def progress_bar(total: int, show: bool = True):
    """A tqdm bar over ``total`` timings on stderr; without tqdm (an optional dependency) or
    with ``show`` false, an object with the same methods that draws nothing."""
    if not show:
        return _NoBar(total)
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(total)
    return tqdm(total=total, unit="timing", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)


class Timed:
    """Times what a builder returns (with :func:`measure`), with a progress bar on stderr
    when ``quiet`` is false and tqdm is installed."""

    def __init__(self, total: int, threads: int, min_run_time: float, device, quiet: bool):
        self.threads, self.min_run_time, self.device = threads, min_run_time, device
        self.progress = progress_bar(total, show=not quiet)

    def __call__(self, label: str, build) -> dict:
        """Times the callable ``build()`` returns; building it (a graph, say) is not timed."""
        self.progress.set_description(label, refresh=False)
        try:
            return measure(build(), self.threads, self.min_run_time, self.device)
        finally:
            self.progress.update()

    def skip(self, count: int) -> None:
        """Counts ``count`` timings that will not run as done."""
        self.progress.update(count)

    def again(self, count: int, why: str) -> None:
        """Says ``why`` on stderr and adds ``count`` timings to the total."""
        self.progress.write(f"rskcnn bench: {why}", file=sys.stderr)
        self.progress.total += count
        self.progress.refresh()

    def close(self) -> None:
        """Closes the bar."""
        self.progress.close()
