"""The benchmark machinery behind ``python -m rskcnn bench`` and ``plot``, as a library.

Run a bench and write it as the CLI does::

    from rskcnn.bench import BenchConfig, run_bench, write_result, markdown
    result = run_bench(BenchConfig(layers=("paper",), granularities=("filter",), quick=True))
    write_result(result, "benchmarks/results", "mine")   # mine.json and mine.md
    print(markdown(result))

Time or profile one pass exactly as the bench does::

    import rskcnn
    from rskcnn.bench import LAYERS, backend_conv, bench_tensors, make_pass, measure
    layer = LAYERS["vgg16"]
    x, w, b, grad_output = bench_tensors(layer, layer.batch, seed=0)
    block = rskcnn.block_shape("element", layer.weight_shape, (32, 32))
    mask = rskcnn.sample_mask(layer.weight_shape, 0.5, block, seed=1)
    conv = backend_conv("cpu", mask, block, layer.stride, layer.padding)
    step = make_pass(conv, "step", x, w, b, grad_output)
    measure(step, threads=2, min_run_time=0.5, device=x.device)   # {"median_s", "iqr_s", ...}

One job per module:

- :mod:`.layers`: the benchmarked convolutions (:class:`Layer`, :data:`LAYERS`, :data:`QUICK_LAYERS`).
- :mod:`.passes`: the timed callables: :func:`dense_conv`, :func:`masked_dense_conv` (the
  paper's weight * mask), :func:`backend_conv` (one rskcnn backend), :func:`compact_ideal_tensors`
  (the kept filters alone, which ``compact-ideal`` runs dense conv on), and :func:`make_pass`
  (forward, grad-input, grad-weight or a training step of one of them; :data:`PASSES`).
- :mod:`.sweep`: the data (:func:`bench_tensors`) and what is timed in which order, with
  configurations timed again while other processes were busy (:func:`time_all`).
- :mod:`.graphs`: kernel time on CUDA: passes captured in CUDA graphs and replayed between
  CUDA events, interleaved (:func:`graph_times`, :func:`capture`).
- :mod:`.timing`: timing one callable (eager wall-clock, :func:`measure`), the malloc settings
  (:func:`steady_malloc`), how busy the other processes were (:func:`cpu_counters`,
  :func:`others_cpu_share`) and the progress bar (tqdm, optional).
- :mod:`.report`: the result's machine description, JSON and Markdown (:func:`write_result`,
  :func:`markdown`).
- :mod:`.plot`: ratio-to-dense plots (:func:`plot_result`; matplotlib, optional, imported
  when drawing).
- :mod:`.run`: one whole run (:class:`BenchConfig`, :func:`run_bench`, :func:`default_tag`,
  :func:`resolve_lineup`).

The result dict and its JSON (schema ``rskcnn-bench/1``) are read by other code, e.g.
``rskcnn.backends.calibration``: their fields are kept as they are, and new ones are added
(graph timing's ``graph_*`` record fields; the settings' ``timing``, ``graph``, ``law``,
``ideals`` and ``unavailable``).
"""

from .layers import LAYERS, QUICK_LAYERS, Layer
from .graphs import capture, graph_times
from .passes import (COMPACT_IDEAL, DENSE, IDEALS, MASKED_DENSE, PASSES, backend_conv, compact_ideal_tensors,
                     dense_conv, kept_filters, make_pass, masked_dense_conv)
from .plot import TARGETS, plot_result, series
from .report import machine_info, markdown, write_result
from .run import (FULL, QUICK, TIMINGS, BenchConfig, BenchConfigError, Lineup, default_tag, resolve_backends,
                  resolve_lineup, run_bench)
from .sweep import DTYPES, bench_tensors, time_all
from .timing import Timed, cpu_counters, measure, others_cpu_share, steady_malloc

__all__ = [
    "COMPACT_IDEAL", "DENSE", "DTYPES", "FULL", "IDEALS", "LAYERS", "MASKED_DENSE", "PASSES", "QUICK", "QUICK_LAYERS",
    "TARGETS", "TIMINGS",
    "BenchConfig", "BenchConfigError", "Layer", "Lineup", "Timed",
    "backend_conv", "bench_tensors", "capture", "compact_ideal_tensors", "cpu_counters", "default_tag", "dense_conv",
    "graph_times", "kept_filters", "machine_info", "make_pass", "markdown", "masked_dense_conv", "measure",
    "others_cpu_share", "plot_result", "resolve_backends", "resolve_lineup", "run_bench", "series", "steady_malloc",
    "time_all", "write_result",
]
