"""auto's speed rules: one mechanism for every device (rskcnn/backends/calibration.py).

A table per machine class, written by ``python -m rskcnn calibrate`` from bench results,
compares each kernel backend with the options auto actually chooses between (masked-dense,
the reference fallback, and the other backends), not with plain dense. Runs anywhere: the
GPU cases use synthetic tables and calls, never a device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rskcnn
from rskcnn.__main__ import main
from rskcnn.backends import ConvCall, calibration, choose

ROOT = Path(__file__).resolve().parents[1]
CPU_BENCH = ROOT / "benchmarks" / "results" / "cpu-float32.json"


def bench_result(times: dict, gpu="Test GPU", dtype="bfloat16", tf32=None, device="cuda") -> dict:
    """A minimal `rskcnn bench` result: times[(granularity, keep, layer, backend)] = seconds."""
    backends = sorted({k[3] for k in times})
    records = [dict(granularity=g, keep_prob=p, layer=layer, backend=b, median_s=t, **{"pass": "step"})
               for (g, p, layer, b), t in times.items()]
    machine = {"gpu": gpu} if device == "cuda" else {"cpu_model": "Test CPU", "cpu_capability": "AVX2"}
    return {"machine": machine, "settings": {"device": device, "dtype": dtype, "tf32": tf32,
                                             "backends": ["dense", *backends], "command": "python -m rskcnn bench"},
            "records": records}


def synthetic_times(kernel="cuda") -> dict:
    times = {}
    for layer in ("a", "b"):
        for keep in (0.25, 0.5, 0.75):
            times[("filter", keep, layer, "masked-dense")] = 1.0
            times[("filter", keep, layer, kernel)] = 1.2 * keep + 0.1      # 0.4, 0.7, 1.0
            if kernel == "cuda":
                times[("filter", keep, layer, "triton")] = 1.3 * keep + 0.1 + (0.2 if layer == "b" else 0.0)
            times[("element", keep, layer, "masked-dense")] = 1.0
            times[("element", keep, layer, kernel)] = 2.0
    return times


def test_thresholds_take_the_largest_keep_within_tolerance_on_every_layer():
    table = calibration.thresholds_from_bench(bench_result(synthetic_times()))
    assert table["cuda"]["filter"] == 0.75  # 1.0 <= 1.05 * 1.0 at keep 0.75
    # triton is more than 5% slower than cuda on layer b from keep 0.25 on
    assert table["triton"]["filter"] == 0.0
    assert table["cuda"]["element"] == 0.0


def test_a_backend_is_held_against_what_auto_would_run_instead():
    """With auto's order (cuda, then triton, then the fallback), triton is only ever taken when
    cuda declined, so it is held against masked-dense alone, and cuda against both."""
    table = calibration.thresholds_from_bench(bench_result(synthetic_times()), order=["cuda", "triton", "reference"])
    assert table["cuda"]["filter"] == 0.75
    assert table["triton"]["filter"] == 0.5  # 1.075 > 1.05 * 1.0 on layer a at keep 0.75
    assert calibration.rivals("cuda", ["masked-dense", "cuda", "triton"], ["cuda", "triton"]) == \
        ["masked-dense", "triton"]


def test_a_kernel_slower_than_dense_but_faster_than_masked_dense_is_taken():
    """The rule compares with masked-dense (what auto would otherwise run), not with dense."""
    times = {}
    for keep in (0.25, 0.5, 0.75):
        times[("block", keep, "a", "dense")] = 1.0
        times[("block", keep, "a", "masked-dense")] = 1.3
        times[("block", keep, "a", "cpu")] = 1.2  # slower than dense, faster than masked-dense
    result = bench_result(times, device="cpu", dtype="float32")
    assert calibration.thresholds_from_bench(result)["cpu"]["block"] == 0.75


def test_pooled_results_of_one_dtype_and_comparison_only_columns():
    """A later bench of a new backend adds to an earlier one; dense and compact-ideal are
    timed for comparison and never count as an option auto has."""
    first = bench_result(synthetic_times("cpu"), device="cpu", dtype="float32")
    later_times = {}
    for layer in ("a", "b"):
        for keep in (0.25, 0.5, 0.75):
            later_times[("filter", keep, layer, "masked-dense")] = 1.0
            later_times[("filter", keep, layer, "compact")] = 0.9 * keep + 0.1
            later_times[("filter", keep, layer, "compact-ideal")] = 0.01  # would beat everything
    later = bench_result(later_times, device="cpu", dtype="float32")
    table = calibration.calibration_from_benches([first, later])["faster_below"]["float32"]
    assert table["compact"]["filter"] == 0.75
    assert table["cpu"]["filter"] == 0.0  # 0.4 against compact's 0.325 at keep 0.25: over 1.05x
    assert table["cpu"]["element"] == 0.0
    assert "compact-ideal" not in table


def gpu_call(granularity="filter", kept=0.5, dtype=torch.bfloat16, groups=1) -> ConvCall:
    weight = (64, 32 // groups, 3, 3)
    return ConvCall(device=torch.device("cuda", 0), dtype=dtype, input_shape=(8, 32, 14, 14), weight_shape=weight,
                    block=rskcnn.block_shape(granularity, weight), stride=(1, 1), padding=(1, 1),
                    dilation=(1, 1), groups=groups, kept_fraction=kept)


def cpu_call(granularity="filter", kept=0.5, groups=1) -> ConvCall:
    weight = (64, 32 // groups, 3, 3)
    return ConvCall(device=torch.device("cpu"), dtype=torch.float32, input_shape=(8, 32, 14, 14),
                    weight_shape=weight, block=rskcnn.block_shape(granularity, weight), stride=(1, 1),
                    padding=(1, 1), dilation=(1, 1), groups=groups, kept_fraction=kept)


def test_auto_reasons_follow_the_table(monkeypatch):
    table = calibration.calibration_from_benches([bench_result(synthetic_times())])
    monkeypatch.setitem(calibration._TABLES, ("cuda", 0), ("Test GPU", table))
    assert calibration.speed_reasons("cuda", gpu_call(kept=0.5)) == []
    assert "only up to keep 0.75" in calibration.speed_reasons("cuda", gpu_call(kept=0.9))[0]
    assert "kept fraction unknown" in calibration.speed_reasons("cuda", gpu_call(kept=None))[0]
    assert "never the fast choice" in calibration.speed_reasons("cuda", gpu_call("element"))[0]
    assert "grouped masks" in calibration.speed_reasons("cuda", gpu_call(groups=2))[0]
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert "filter masks in float32 were not calibrated" in calibration.speed_reasons(
        "cuda", gpu_call(dtype=torch.float32))[0]
    monkeypatch.setitem(calibration._TABLES, ("cuda", 0), ("Test GPU", None))
    assert "not calibrated on Test GPU" in calibration.speed_reasons("cuda", gpu_call())[0]


def test_auto_reasons_trace_under_compile_fullgraph(monkeypatch, tmp_path):
    """auto's table loading (device name, file reads) runs once at trace time: on an H200,
    torch.compile(fullgraph=True) of a default RSKConv2d failed on torch.cuda.get_device_name."""
    table = calibration.calibration_from_benches([bench_result(synthetic_times())])
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("RSKCNN_CALIBRATION", str(path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")
    monkeypatch.setattr(calibration, "_TABLES", {})
    torch._dynamo.reset()

    def reasons_count(x, kept):
        return x + len(calibration.speed_reasons("cuda", gpu_call(kept=kept)))

    for kept, count in ((0.5, 0), (0.9, 1)):  # a fresh trace each, so kept stays a constant
        torch._dynamo.reset()
        compiled = torch.compile(reasons_count, fullgraph=True, backend="eager")
        assert compiled(torch.zeros(1), kept).item() == count
    torch._dynamo.reset()


def test_a_gpu_table_of_another_card_is_ignored(monkeypatch, tmp_path):
    table = calibration.calibration_from_benches([bench_result(synthetic_times(), gpu="Other GPU")])
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("RSKCNN_CALIBRATION", str(path))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Test GPU")
    monkeypatch.setattr(calibration, "_TABLES", {})
    assert "not calibrated on Test GPU" in calibration.speed_reasons("cuda", gpu_call())[0]


# --------------------------------------------------------------------------- the CPU's committed table


# Each committed CPU table and the committed bench results it was written from.
COMMITTED_TABLES = {
    "cpu.json": ["cpu-float32.json"],  # the generic table (2 AVX-512 cores, all granularities)
    "cpu-avx2.json": ["cpu-float32-filter-exact.json", "cpu-float32-filter-exact-paper-rerun.json"],
}


@pytest.mark.parametrize("table_name", sorted(COMMITTED_TABLES))
def test_a_committed_cpu_table_is_what_calibrate_writes_from_the_committed_benches(tmp_path, table_name):
    """`python -m rskcnn calibrate BENCH.json ...` reproduces each committed table."""
    out = tmp_path / table_name
    sources = [str(CPU_BENCH.parent / name) for name in COMMITTED_TABLES[table_name]]
    assert main(["calibrate", *sources, "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    committed = json.loads((calibration.TABLE_DIR / table_name).read_text())
    assert written == committed
    assert committed["machine_class"].startswith("cpu-")
    assert sorted(p.name for p in calibration.TABLE_DIR.glob("cpu*.json")) == sorted(COMMITTED_TABLES)


def test_cpu_auto_follows_the_committed_table(monkeypatch):
    monkeypatch.delenv("RSKCNN_CALIBRATION", raising=False)
    monkeypatch.setattr(calibration, "_TABLES", {})
    monkeypatch.setattr(calibration, "cpu_machine_class", lambda: "cpu-test-isa")  # no table of its own
    table = json.loads((calibration.TABLE_DIR / "cpu.json").read_text())["faster_below"]["float32"]["cpu"]
    for granularity, bound in table.items():
        for kept in (0.25, 0.5, 0.75):
            reasons = calibration.speed_reasons("cpu", cpu_call(granularity, kept))
            assert (reasons == []) == (0 < bound and kept <= bound), (granularity, kept, bound, reasons)
    assert "grouped masks" in calibration.speed_reasons("cpu", cpu_call(groups=2))[0]


def test_cpu_machine_class_table_wins_over_the_generic_one(monkeypatch, tmp_path):
    monkeypatch.delenv("RSKCNN_CALIBRATION", raising=False)
    monkeypatch.setattr(calibration, "_TABLES", {})
    monkeypatch.setattr(calibration, "TABLE_DIR", tmp_path)
    monkeypatch.setattr(calibration, "cpu_machine_class", lambda: "cpu-avx2")
    own = calibration.calibration_from_benches([bench_result(synthetic_times("cpu"), device="cpu",
                                                             dtype="float32")])
    assert own["machine_class"] == "cpu-avx2"
    (tmp_path / "cpu-avx2.json").write_text(json.dumps(own))
    (tmp_path / "cpu.json").write_text(json.dumps({**own, "faster_below": {}}))
    assert calibration.speed_reasons("cpu", cpu_call(kept=0.5)) == []
    chosen, skipped = choose(cpu_call(kept=0.5)) if "cpu" in rskcnn.available_backends("cpu") else (None, None)
    if chosen is not None:
        assert chosen.name == "cpu"
        assert choose(cpu_call("element", kept=0.5))[0].name == "reference"


def test_calibrate_cli_writes_the_table(tmp_path, capsys):
    paths = []
    for dtype, tf32 in (("bfloat16", None), ("float32", True)):
        path = tmp_path / f"{dtype}.json"
        path.write_text(json.dumps(bench_result(synthetic_times(), dtype=dtype, tf32=tf32)))
        paths.append(str(path))
    out = tmp_path / "table.json"
    assert main(["calibrate", *paths, "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["device"] == "Test GPU" and set(table["faster_below"]) == {"bfloat16", "float32+tf32"}
    assert "Test GPU bfloat16 cuda: fast choice up to keep" in capsys.readouterr().out


def test_calibrate_rejects_results_of_two_machines(tmp_path, capsys):
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(bench_result(synthetic_times(), gpu="GPU A")))
    b.write_text(json.dumps(bench_result(synthetic_times(), gpu="GPU B")))
    with pytest.raises(SystemExit, match="one device"):
        main(["calibrate", str(a), str(b), "--out", str(tmp_path / "t.json")])
