"""``python -m rskcnn info``, ``bench`` and ``plot``: options, exit codes, JSON and Markdown
(the library behind bench and plot is tested in test_bench.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import rskcnn
from rskcnn.__main__ import main
from rskcnn.backends import BACKENDS
from rskcnn.bench import COMPACT_IDEAL, DENSE, MASKED_DENSE, PASSES


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rskcnn", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_info_text_names_build_backends_and_auto():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"torch {torch.__version__}" in out
    assert "extension rskcnn._C:" in out and "CUDA kernels:" in out and "triton:" in out
    assert f"threads: {torch.get_num_threads()}" in out
    for name in BACKENDS:
        assert name in out
    assert "auto's choice" in out
    for granularity in rskcnn.GRANULARITIES:
        assert granularity in out


def test_info_json_lists_every_backend_and_auto_choice(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert set(info["extension"]) >= {"loaded", "load_error", "built_with_torch", "cuda_built", "cuda_build_reason"}
    assert set(info["triton"]) == {"version", "reason"}
    assert info["threads"] == torch.get_num_threads()

    cpu_rows = {row["backend"]: row for row in info["backends"] if row["device"] == "cpu"}
    assert set(cpu_rows) == set(BACKENDS)
    for name, row in cpu_rows.items():
        assert row["usable"] == (name in rskcnn.available_backends("cpu"))
        assert (row["reason"] is None) == row["usable"]

    auto = [row for row in info["auto"] if row["device"] == "cpu"]
    seen = {(row["granularity"], row["dtype"]) for row in auto}
    assert seen >= {(g, d) for g in rskcnn.GRANULARITIES for d in ("float32", "float64", "bfloat16")}
    for row in auto:
        assert row["error"] is None
        assert row["backend"] in rskcnn.available_backends("cpu")
        # What auto passed over, with reasons: a fallback is never silent.
        for name, reasons in row["passed_over"].items():
            assert name in BACKENDS and reasons and all(isinstance(r, str) and r for r in reasons)


@pytest.mark.slow
def test_bench_quick_writes_json_and_markdown(tmp_path):
    result = run_cli("bench", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads((tmp_path / "cpu-float32-quick.json").read_text())
    machine, settings = data["machine"], data["settings"]
    for key in ("cpu_model", "cpu_count", "threads", "torch", "load_average_start"):
        assert key in machine
    assert settings["dtype"] == "float32" and settings["device"] == "cpu" and settings["quick"]
    assert settings["threads"] == machine["threads"] >= 1
    assert settings["tf32"] is None and settings["memory_format"].startswith("contiguous")
    assert settings["date"] and settings["retries"] == 0

    records = data["records"]
    assert records and not data["errors"]
    for record in records:
        assert record["median_s"] > 0 and math.isfinite(record["median_s"])
        assert record["ratio"] > 0 and math.isfinite(record["ratio"])
        assert record["iqr_s"] >= 0
        assert record["pass"] in PASSES
    # Interpreted Triton is timed only when asked for; compact-ideal is timed for filter masks.
    expected_backends = {DENSE, MASKED_DENSE} | (set(rskcnn.available_backends("cpu")) - {"reference", "triton"})
    assert {r["backend"] for r in records} == expected_backends | {COMPACT_IDEAL}
    for backend in expected_backends:
        assert {r["pass"] for r in records if r["backend"] == backend} == set(PASSES)
    assert {(r["granularity"], r["pass"]) for r in records if r["backend"] == COMPACT_IDEAL} == \
        {("filter", p) for p in PASSES}
    assert settings["ideals"] == [COMPACT_IDEAL] and settings["timing"] == "eager" and settings["graph"] is None
    assert all(r["ratio"] == 1.0 for r in records if r["backend"] == DENSE)
    assert {r["granularity"] for r in records} == set(rskcnn.GRANULARITIES)

    markdown = (tmp_path / "cpu-float32-quick.md").read_text()
    assert f"threads: {settings['threads']}" in markdown
    assert "dtype: float32" in markdown and "TF32" in markdown and "memory format" in markdown
    assert "| layer | granularity | p |" in markdown
    assert markdown.strip() in result.stdout  # the table is printed too


def test_bench_subset_and_tag(tmp_path, capsys):
    code = main(["bench", "--layers", "paper", "--batch", "2", "--granularities", "filter,block",
                 "--keep-probs", "0.25,1", "--passes", "forward,step", "--backends", "masked-dense",
                 "--min-run-time", "0.005", "--threads", str(torch.get_num_threads()),
                 "--no-progress", "--default-malloc", "--out", str(tmp_path), "--tag", "mini"])
    assert code == 0
    data = json.loads((tmp_path / "mini.json").read_text())
    assert (tmp_path / "mini.md").exists()
    assert data["settings"]["backends"] == [DENSE, MASKED_DENSE]
    assert data["layers"][0]["batch"] == 2
    keys = {(r["granularity"], r["keep_prob"], r["pass"]) for r in data["records"] if r["backend"] == MASKED_DENSE}
    assert keys == {(g, p, s) for g in ("filter", "block") for p in (0.25, 1.0) for s in ("forward", "step")}
    assert "| paper | filter | 0.25 |" in capsys.readouterr().out


@pytest.mark.parametrize("shares, attempt, share", [
    ([0.5, 0.0], 2, 0.0),  # busy, then quiet on its retry
    ([0.5, 0.4, 0.0], 3, 0.0),  # busy through its retry, quiet on the last try at the end
    ([0.5, 0.2, 0.3], 2, 0.2),  # busy throughout: the least busy attempt is kept
])
def test_bench_times_a_busy_configuration_again(tmp_path, monkeypatch, shares, attempt, share):
    from rskcnn.bench import timing

    shares = iter(shares)
    monkeypatch.setattr(timing, "others_cpu_share", lambda start, end: next(shares, 0.0))
    code = main(["bench", "--layers", "paper", "--batch", "1", "--granularities", "filter", "--keep-probs", "0.5",
                 "--passes", "forward", "--backends", "masked-dense", "--min-run-time", "0.005", "--retries", "1",
                 "--no-progress", "--default-malloc", "--out", str(tmp_path), "--tag", "retry"])
    assert code == 0
    data = json.loads((tmp_path / "retry.json").read_text())
    assert len(data["records"]) == 2  # dense and masked-dense, from one attempt only
    assert all(r["attempt"] == attempt and r["others_cpu_share"] == share for r in data["records"])
    markdown = (tmp_path / "retry.md").read_text()
    assert "1 configurations were timed again" in markdown
    assert ("‡" in markdown.split("## Ratio to dense")[1]) == (share > 0.05)  # busy ratios are marked


@pytest.mark.parametrize("bad", [["--keep-probs", "1.5"], ["--granularities", "row"], ["--layers", "nope"],
                                 ["--passes", "backward"], ["--threads", "0"], ["--dtype", "int8"],
                                 ["--retries", "-1"], ["--busy-share", "2"], ["--timing", "wall"],
                                 ["--law", "uniform"], ["--graph-replays", "0"], ["--graph-repeats", "-2"]])
def test_bench_rejects_bad_options(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *bad])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bench_rejects_unknown_or_unusable_backend(tmp_path):
    with pytest.raises(SystemExit, match="unknown backend"):
        main(["bench", "--backends", "nope", "--out", str(tmp_path)])


def test_bench_options_reach_the_config():
    from rskcnn.__main__ import build_parser
    from rskcnn.cli.bench import config_from_args

    args = build_parser().parse_args(["bench", "--device", "cuda", "--law", "exact", "--graph-replays", "7",
                                      "--graph-repeats", "5", "--backends", "dense,compact-ideal,compact",
                                      "--skip-unavailable"])
    config = config_from_args(args)
    assert (config.law, config.graph_replays, config.graph_repeats, config.skip_unavailable) == ("exact", 7, 5, True)
    assert config.timing is None and config.resolved_timing == "graph"
    assert config.backends == ("dense", COMPACT_IDEAL, "compact")
    eager = config_from_args(build_parser().parse_args(["bench", "--device", "cuda", "--timing", "eager"]))
    assert eager.resolved_timing == "eager"
    assert config_from_args(build_parser().parse_args(["bench"])).resolved_timing == "eager"


def test_bench_graph_timing_on_the_cpu_says_it_needs_cuda(tmp_path):
    with pytest.raises(SystemExit, match="timing.*CUDA graphs need device cuda"):
        main(["bench", "--timing", "graph", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_bench_law_ideal_and_a_missing_backend(tmp_path, capsys):
    """The options of the GPU suite's bench-graphs step, on the CPU and small (the suite names
    `compact`, which may not exist in a build: a missing backend is skipped with its reason)."""
    code = main(["bench", "--layers", "paper", "--batch", "1", "--granularities", "filter", "--keep-probs", "0.25",
                 "--passes", "forward", "--law", "exact", "--backends", "dense,masked-dense,compact-ideal,no-such",
                 "--skip-unavailable", "--min-run-time", "0.005", "--retries", "0", "--no-progress",
                 "--default-malloc", "--out", str(tmp_path), "--tag", "suite"])
    assert code == 0
    data = json.loads((tmp_path / "suite.json").read_text())
    settings = data["settings"]
    assert settings["law"] == "exact" and settings["timing"] == "eager"
    assert settings["backends"] == [DENSE, MASKED_DENSE] and settings["ideals"] == [COMPACT_IDEAL]
    assert list(settings["unavailable"]) == ["no-such"]
    assert {r["backend"] for r in data["records"]} == {DENSE, MASKED_DENSE, COMPACT_IDEAL}
    assert {r["kept_fraction"] for r in data["records"] if r["backend"] != DENSE} == {0.25}  # 32 of 128 filters
    assert [s["backend"] for s in data["skipped"]] == ["no-such"] and not data["errors"]
    out = capsys.readouterr().out
    assert "| compact-ideal fwd |" in out and "- no-such: skipped in 1 configurations: unknown backend" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_bench_cuda_without_cuda_says_so(tmp_path):
    with pytest.raises(SystemExit, match="cuda"):
        main(["bench", "--device", "cuda", "--out", str(tmp_path)])


def _bench_json(path, records):
    settings = {"device": "cpu", "dtype": "float32", "memory_format": "contiguous (NCHW)", "threads": 2,
                "tf32": False, "date": "2026-11-25T00:00:00"}
    path.write_text(json.dumps({"settings": settings, "records": records}))


def test_plot_draws_a_png_per_pass(tmp_path):
    pytest.importorskip("matplotlib", reason="plot draws with matplotlib, an optional dependency")
    records = [dict(layer="paper", granularity=g, keep_prob=p, backend=b, ratio=r, **{"pass": "step"})
               for g in ("filter", "element") for p in (0.25, 0.5) for b, r in (("dense", 1.0), ("cpu", 2 * p))]
    _bench_json(tmp_path / "r.json", records)
    assert main(["plot", str(tmp_path / "r.json")]) == 0
    png = tmp_path / "r-step.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_refuses_a_pass_with_no_records(tmp_path):
    _bench_json(tmp_path / "r.json", [dict(layer="paper", granularity="tap", keep_prob=0.5, backend="cpu", ratio=1.0,
                                            **{"pass": "step"})])
    with pytest.raises(SystemExit, match="no 'forward' records"):
        main(["plot", str(tmp_path / "r.json"), "--pass", "forward"])
