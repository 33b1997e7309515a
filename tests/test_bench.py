"""rskcnn.bench as a library: its data, its config checks, a run without the optional tqdm,
results whose JSON fields and Markdown match the committed ones, compact-ideal, the mask law,
and graph timing as far as the CPU can run it (its rounds, statistics, records and Markdown,
with the capture and the CUDA events replaced; the capture itself needs a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn.backends import calibration
from rskcnn.bench import (COMPACT_IDEAL, DENSE, LAYERS, MASKED_DENSE, BenchConfig, bench_tensors,
                          compact_ideal_tensors, graphs, kept_filters, markdown, plot_result, resolve_lineup,
                          run_bench, series, time_all)
from rskcnn.bench.report import EAGER_RATIO_TITLE, GRAPH_RATIO_TITLE, machine_info
from rskcnn.bench.run import bench_settings

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
COMMITTED = RESULTS / "cpu-float32"


def test_imports_without_the_optional_dependencies():
    # None in sys.modules makes "import tqdm" raise ImportError, as if it were not installed.
    code = ("import sys; sys.modules.update(tqdm=None, matplotlib=None); import rskcnn.bench, rskcnn.cli.bench, "
            "rskcnn.cli.plot; print('imported')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "imported"


def test_bench_tensors_are_seeded_and_shaped_like_the_layer():
    layer = LAYERS["resnet18"]  # no bias
    x, w, b, grad_output = bench_tensors(layer, 2, seed=3)
    assert x.shape == layer.input_shape(2) and w.shape == layer.weight_shape and b is None
    assert grad_output.shape == (2, layer.out_channels, layer.out_size, layer.out_size)
    again = bench_tensors(layer, 2, seed=3)
    assert torch.equal(x, again[0]) and torch.equal(w, again[1])
    assert not torch.equal(x, bench_tensors(layer, 2, seed=4)[0])

    x16, *_ = bench_tensors(LAYERS["paper"], 1, dtype="bfloat16", channels_last=True)
    assert x16.dtype == torch.bfloat16 and x16.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="dtype"):
        bench_tensors(layer, 1, dtype="int8")


@pytest.mark.parametrize("field, value", [
    ("device", "tpu"), ("dtype", "int8"), ("layers", ("nope",)), ("layers", ()), ("granularities", ("row",)),
    ("passes", ("backward",)), ("keep_probs", (0.0,)), ("keep_probs", (1.5,)), ("block_size", (32,)),
    ("threads", 0), ("batch", -1), ("min_run_time", 0.0), ("retries", -1), ("busy_share", 2.0),
    ("timing", "wall"), ("timing", "graph"), ("graph_replays", 0), ("graph_repeats", 0), ("law", "uniform"),
])
def test_config_names_a_bad_field(field, value):
    with pytest.raises(ValueError, match=f"BenchConfig.{field}"):
        BenchConfig(**{field: value})


def test_run_without_tqdm_draws_no_bar_and_keeps_the_committed_fields(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    result = run_bench(BenchConfig(layers=("paper",), batch=1, granularities=("filter",), keep_probs=(0.5,),
                                   passes=("forward",), backends=(MASKED_DENSE,), min_run_time=0.005,
                                   retries=0, default_malloc=True, progress=True))
    assert not result["errors"]
    assert {r["backend"] for r in result["records"]} == {DENSE, MASKED_DENSE}

    committed = json.loads(COMMITTED.with_suffix(".json").read_text())
    assert list(result) == list(committed)
    assert list(result["machine"]) == list(committed["machine"])
    # New settings come after the committed ones, which keep their place and meaning.
    assert list(result["settings"])[:len(committed["settings"])] == list(committed["settings"])
    added = {key: result["settings"][key] for key in list(result["settings"])[len(committed["settings"]):]}
    assert added == {"timing": "eager", "graph": None, "law": "bernoulli", "ideals": [], "unavailable": {}}
    # On the CPU (eager timing) a record has exactly the committed fields.
    assert [list(r) for r in result["records"]] == [list(committed["records"][0])] * len(result["records"])
    assert result["settings"]["command"] == "rskcnn.bench.run_bench"
    assert "| paper | filter | 0.5 |" in markdown(result)


def test_markdown_of_the_committed_result_is_the_committed_markdown():
    result = json.loads(COMMITTED.with_suffix(".json").read_text())
    assert markdown(result) == COMMITTED.with_suffix(".md").read_text()


def test_plot_result_refuses_a_pass_without_records_before_needing_matplotlib(tmp_path):
    data = {"settings": {}, "records": [dict(layer="paper", granularity="tap", keep_prob=0.5, backend="cpu",
                                             ratio=1.0, **{"pass": "step"})]}
    with pytest.raises(ValueError, match="no 'forward' records"):
        plot_result(data, "forward", tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_timing_defaults_to_graph_on_cuda_and_eager_on_cpu():
    # Making a config checks no device, so this runs without CUDA.
    assert BenchConfig(device="cuda").resolved_timing == "graph"
    assert BenchConfig(device="cuda", timing="eager").resolved_timing == "eager"
    assert BenchConfig().resolved_timing == "eager"
    with pytest.raises(ValueError, match="BenchConfig.timing.*CUDA graphs need device cuda"):
        BenchConfig(device="cpu", timing="graph")


# ----------------------------------------------------------------------------- compact-ideal

def test_compact_ideal_keeps_only_the_kept_filters_in_their_memory_format():
    layer = LAYERS["paper"]
    x, w, b, grad_output = bench_tensors(layer, 2, seed=1, channels_last=True)
    block = rskcnn.block_shape("filter", layer.weight_shape)
    mask = rskcnn.sample_mask(layer.weight_shape, 0.25, block, seed=2, law="exact")
    kept = kept_filters(mask)
    assert kept.numel() == rskcnn.exact_keep_count(0.25, layer.out_channels) == 32

    x_c, w_c, b_c, go_c = compact_ideal_tensors(mask, x, w, b, grad_output)
    assert x_c is x
    assert w_c.shape == (32, layer.in_channels, layer.kernel, layer.kernel) and b_c.shape == (32,)
    assert go_c.shape == (2, 32, layer.out_size, layer.out_size)
    assert w_c.is_contiguous(memory_format=torch.channels_last) and go_c.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(w_c, w[kept]) and torch.equal(go_c, grad_output[:, kept])
    # Its forward is the kept channels of the full dense conv.
    torch.testing.assert_close(F.conv2d(x_c, w_c, b_c, 1, 1), F.conv2d(x, w, b, 1, 1)[:, kept])


def test_compact_ideal_refuses_other_masks_and_a_mask_keeping_nothing():
    layer = LAYERS["paper"]
    tensors = bench_tensors(layer, 1)
    tap_mask = torch.ones(rskcnn.mask_shape(layer.weight_shape, rskcnn.block_shape("tap", layer.weight_shape)),
                          dtype=torch.bool)
    with pytest.raises(ValueError, match=r"filter mask of shape \(C_out, 1, 1, 1\)"):
        compact_ideal_tensors(tap_mask, *tensors)
    with pytest.raises(ValueError, match="keeps no filter"):
        compact_ideal_tensors(torch.zeros(layer.out_channels, 1, 1, 1, dtype=torch.bool), *tensors)


def test_compact_ideal_is_a_default_on_the_cpu_for_filter_masks_and_apart_from_the_backends():
    cpu = torch.device("cpu")
    assert resolve_lineup(None, cpu, ("filter", "tap")).ideals == [COMPACT_IDEAL]
    assert resolve_lineup(None, cpu, ("tap",)).ideals == []
    assert COMPACT_IDEAL not in resolve_lineup(None, cpu, ("filter",)).backends
    named = resolve_lineup(("dense", COMPACT_IDEAL, MASKED_DENSE, COMPACT_IDEAL), cpu)
    assert named.backends == [MASKED_DENSE] and named.ideals == [COMPACT_IDEAL] and named.unavailable == {}


def test_a_run_times_compact_ideal_on_filter_masks_and_skips_it_elsewhere_with_the_reason():
    result = run_bench(BenchConfig(layers=("paper",), batch=1, granularities=("filter", "tap"), keep_probs=(0.5,),
                                   passes=("forward", "grad-weight"), backends=(COMPACT_IDEAL,), min_run_time=0.005,
                                   retries=0, default_malloc=True, progress=False))
    assert not result["errors"]
    assert result["settings"]["backends"] == [DENSE] and result["settings"]["ideals"] == [COMPACT_IDEAL]
    ideal = [r for r in result["records"] if r["backend"] == COMPACT_IDEAL]
    assert {(r["granularity"], r["pass"]) for r in ideal} == {("filter", "forward"), ("filter", "grad-weight")}
    assert all(r["median_s"] > 0 and r["ratio"] > 0 for r in ideal)
    [skip] = result["skipped"]
    assert skip["backend"] == COMPACT_IDEAL and skip["granularity"] == "tap" and "only filter masks" in skip["reason"]
    text = markdown(result)
    assert "compact-ideal fwd | compact-ideal grad-w |" in text and "`compact-ideal` is dense `F.conv2d`" in text


def test_a_missing_backend_is_skipped_with_its_reason_when_asked():
    with pytest.raises(ValueError, match="unknown backend 'no-such-backend'"):
        run_bench(BenchConfig(layers=("paper",), batch=1, granularities=("filter",), keep_probs=(0.5,),
                              passes=("forward",), backends=("no-such-backend",), progress=False))
    result = run_bench(BenchConfig(layers=("paper",), batch=1, granularities=("filter",), keep_probs=(0.5,),
                                   passes=("forward",), backends=(MASKED_DENSE, "no-such-backend"),
                                   skip_unavailable=True, min_run_time=0.005, retries=0, default_malloc=True,
                                   progress=False))
    assert not result["errors"] and result["settings"]["backends"] == [DENSE, MASKED_DENSE]
    assert "no-such-backend" in result["settings"]["unavailable"]
    [skip] = result["skipped"]
    assert skip["backend"] == "no-such-backend" and "unknown backend" in skip["reason"]
    assert "- no-such-backend: skipped in 1 configurations: unknown backend" in markdown(result)


# ----------------------------------------------------------------------------- mask law

@pytest.mark.parametrize("law", ["bernoulli", "exact"])
def test_the_law_draws_the_masks_and_is_recorded(law):
    layer = LAYERS["paper"]
    result = run_bench(BenchConfig(layers=("paper",), batch=1, granularities=("filter",), keep_probs=(0.3,),
                                   passes=("forward",), backends=(MASKED_DENSE,), min_run_time=0.005, retries=0,
                                   default_malloc=True, progress=False, law=law, seed=5))
    assert result["settings"]["law"] == law
    block = rskcnn.block_shape("filter", layer.weight_shape)
    mask = rskcnn.sample_mask(layer.weight_shape, 0.3, block, generator=torch.Generator().manual_seed(5), law=law)
    kept = {r["kept_fraction"] for r in result["records"] if r["backend"] == MASKED_DENSE}
    assert kept == {round(mask.float().mean().item(), 4)}
    if law == "exact":
        assert kept == {round(rskcnn.exact_keep_count(0.3, layer.out_channels) / layer.out_channels, 4)}


# ----------------------------------------------------------------------------- graph timing, device calls replaced

def test_rounds_turn_the_order_and_read_after_each_synchronization():
    events = []

    def starter(key):
        def start():
            events.append(("start", key))
            return lambda: events.append(("read", key)) or float(len(events))
        return start

    samples = graphs.interleaved_rounds({k: starter(k) for k in "abc"}, 4, lambda: events.append(("sync",)))
    starts = [e[1] for e in events if e[0] == "start"]
    assert starts == list("abc" "bca" "cab" "abc")
    rounds = "".join("|" if e[0] == "sync" else "s" if e[0] == "start" else "r" for e in events)
    assert rounds == "sss|rrr" * 4  # every read after its round's synchronization
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_summary_is_the_median_and_interquartile_range():
    assert graphs.summary([3.0, 1.0, 2.0, 5.0, 4.0]) == {"graph_median_s": 3.0, "graph_iqr_s": 2.0}
    assert graphs.summary([2.0]) == {"graph_median_s": 2.0, "graph_iqr_s": 0.0}
    with pytest.raises(ValueError, match="no samples"):
        graphs.summary([])


class _WallClockCapture:
    """Stands in for a captured graph on the CPU: each "replay" calls the pass once."""

    def __init__(self, fn):
        self.fn = fn

    def start(self, replays):
        import time
        begin = time.perf_counter()
        for _ in range(replays):
            self.fn()
        elapsed = time.perf_counter() - begin
        return lambda: elapsed / replays


def _warm_up_and_wrap(build, warmups):
    """A capture on the CPU: builds the pass and calls it ``warmups`` times, as :func:`graphs.capture` does."""
    fn = build()
    for _ in range(warmups):
        fn()
    return _WallClockCapture(fn)


def _capture_failing_on_steps_after_the_first():
    """A CPU capture that fails, as a host sync would, for every step but the first one
    (dense's, which the sweep captures first)."""
    steps = []

    def capture(build, warmups):
        captured = _warm_up_and_wrap(build, warmups)
        if captured.fn.__name__ == "step":
            steps.append(captured)
            if len(steps) > 1:
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return captured
    return capture


def test_graph_times_record_a_pass_that_cannot_be_captured_and_time_the_others():
    times = graphs.graph_times({"ok": lambda: (lambda: None), "bad": lambda: (lambda: 1 / 0)}, replays=2,
                               repeats=3, warmups=1, capture_pass=_warm_up_and_wrap, synchronize=lambda: None)
    assert set(times["ok"]) == {"graph_median_s", "graph_iqr_s"} and times["ok"]["graph_median_s"] >= 0
    assert times["bad"] == {"graph_error": "capture failed: ZeroDivisionError: division by zero"}

    def replay_fails(build, warmups):
        captured = _warm_up_and_wrap(build, warmups)
        captured.start = lambda replays: (lambda: (_ for _ in ()).throw(RuntimeError("illegal memory access")))
        return captured

    broken = graphs.graph_times({"a": lambda: (lambda: None)}, replays=1, repeats=1, warmups=0,
                                capture_pass=replay_fails, synchronize=lambda: None)
    assert broken == {"a": {"graph_error": "replay failed: RuntimeError: illegal memory access"}}


def test_graph_timed_records_markdown_and_plot(monkeypatch):
    """The sweep in graph timing, with the capture replaced by wall-clock calls on the CPU:
    the records get graph fields, a step that cannot be captured gets its error, and the
    Markdown shows the graph tables first."""
    monkeypatch.setattr(graphs, "capture", _capture_failing_on_steps_after_the_first())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    config = BenchConfig(layers=("paper",), batch=1, granularities=("filter",), keep_probs=(0.5,),
                         passes=("forward", "step"), backends=(MASKED_DENSE, COMPACT_IDEAL), min_run_time=0.005,
                         retries=0, progress=False, law="exact")
    cpu = torch.device("cpu")
    settings = bench_settings(config, cpu, torch.get_num_threads(),
                              resolve_lineup(config.backends, cpu, ("filter",)), "default")
    settings.update(timing="graph", graph={"replays": 2, "repeats": 3, "warmups": 1})
    timed = _Timed()
    [point] = time_all([(LAYERS["paper"], 1)], settings, cpu, timed)
    records = {(r["backend"], r["pass"]): r for r in point["records"]}
    assert set(records) == {(b, p) for b in (DENSE, MASKED_DENSE, COMPACT_IDEAL) for p in ("forward", "step")}
    for (backend, pass_name), r in records.items():
        assert {"median_s", "ratio", "graph_median_s", "graph_iqr_s", "graph_ratio", "graph_error"} <= set(r)
        if pass_name == "step" and backend != DENSE:
            assert r["graph_median_s"] is None and r["graph_ratio"] is None
            assert "not permitted when stream is capturing" in r["graph_error"]
        else:
            assert r["graph_error"] is None and r["graph_median_s"] > 0
            dense = records[(DENSE, pass_name)]["graph_median_s"]
            assert r["graph_ratio"] == pytest.approx(r["graph_median_s"] / dense)

    result = {"schema": "rskcnn-bench/1", "machine": machine_info(cpu, 1), "settings": settings,
              "layers": [LAYERS["paper"].to_dict(1)], "records": point["records"], "skipped": [], "errors": [],
              "elapsed_s": 1.0}
    text = markdown(result)
    assert text.index(GRAPH_RATIO_TITLE) < text.index(EAGER_RATIO_TITLE)
    assert "**Timing: CUDA-graph replays (kernel time).**" in text and "of 2 replays" in text
    graph_table = text.split(GRAPH_RATIO_TITLE)[1].split("\n## ")[0]
    [row] = [line for line in graph_table.splitlines() if line.startswith("| paper |")]
    cells = [c.strip().split(" ")[0] for c in row.strip("|").split("|")]
    ratio = records[(MASKED_DENSE, "forward")]["graph_ratio"]
    # masked-dense fwd, masked-dense step, compact-ideal fwd, compact-ideal step
    assert float(cells[4]) == pytest.approx(ratio, rel=0.01) and cells[5] == cells[7] == "—"
    assert "- masked-dense step: no CUDA-graph time in 1 configurations (eager time only): capture failed" in text
    # The plot draws graph ratios and leaves out the step that has none.
    assert series(result, "step") == {}  # no backend's step was captured
    assert series(result, "forward")["filter"][("paper", MASKED_DENSE)] == [(0.5, ratio)]


class _Timed:
    """timing.Timed without the clock's minimum run time or the progress bar."""

    def __call__(self, label, build):
        from rskcnn.bench.timing import measure
        return measure(build(), 1, 0.001, torch.device("cpu"))

    def skip(self, count):
        pass

    def again(self, count, why):
        pass


# ----------------------------------------------------------------------------- calibration reads graph times

def _calibration_result(records, ideals=()):
    return {"machine": {"gpu": "Test GPU"},
            "settings": {"device": "cuda", "dtype": "bfloat16", "timing": "graph",
                         "backends": [DENSE, MASKED_DENSE, "cuda"], "ideals": list(ideals)},
            "records": [dict(granularity="filter", layer="a", **{"pass": "step"}, **r) for r in records]}


def test_calibration_uses_graph_times_where_present():
    records = []
    for keep in (0.25, 0.5, 0.75):
        # Eager wall-clock: host-bound, cuda always slower. Kernel time: cuda faster up to 0.5.
        records += [dict(keep_prob=keep, backend=MASKED_DENSE, median_s=1.0, graph_median_s=1.0),
                    dict(keep_prob=keep, backend="cuda", median_s=2.0, graph_median_s=2 * keep)]
    assert calibration.thresholds_from_bench(_calibration_result(records)) == {"cuda": {"filter": 0.5}}
    eager = [{k: v for k, v in r.items() if k != "graph_median_s"} for r in records]
    assert calibration.thresholds_from_bench(_calibration_result(eager)) == {"cuda": {"filter": 0.0}}
    # A step that could not be captured has no kernel time: it is not taken on that evidence.
    uncaptured = [dict(r, graph_median_s=None) if r["backend"] == "cuda" else r for r in records]
    assert calibration.thresholds_from_bench(_calibration_result(uncaptured)) == {"cuda": {"filter": 0.0}}


def test_calibration_ignores_compact_ideal():
    records = []
    for keep in (0.25, 0.5):
        records += [dict(keep_prob=keep, backend=MASKED_DENSE, median_s=1.0, graph_median_s=1.0),
                    dict(keep_prob=keep, backend="cuda", median_s=1.0, graph_median_s=0.6),
                    dict(keep_prob=keep, backend=COMPACT_IDEAL, median_s=0.1, graph_median_s=0.1)]
    table = calibration.thresholds_from_bench(_calibration_result(records, ideals=[COMPACT_IDEAL]))
    assert table == {"cuda": {"filter": 0.5}}
