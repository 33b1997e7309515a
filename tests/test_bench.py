"""rskcnn.bench as a library: its data, its config checks, a run without the optional tqdm,
and results whose JSON fields and Markdown match the committed ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rskcnn.bench import (DENSE, LAYERS, MASKED_DENSE, BenchConfig, bench_tensors, markdown, plot_result,
                          run_bench)

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
    for key in ("settings", "machine"):
        assert list(result[key]) == list(committed[key])
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
