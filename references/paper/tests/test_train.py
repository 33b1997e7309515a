"""``references/paper/train.py``: IDX and CIFAR readers on files the tests write, the authors'
model and variants, the Keras-log parser, the report, and the command end to end (in this
process through ``train.main``, and as a script from another working directory)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import shlex
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import rskcnn
from rskcnn import RSKConv2d

# The harness is a folder of scripts, not a package: its modules import each other by bare name
# (``import data``), which works when Python runs train.py because the script's folder comes
# first on sys.path. The tests import them the same way. (No conftest.py here: tests/ imports
# its own with ``from conftest import ...``, and a second module named conftest would shadow it.)
HARNESS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HARNESS))

import data  # noqa: E402
import model  # noqa: E402
import report  # noqa: E402
import train  # noqa: E402

TRAIN_SCRIPT = HARNESS / "train.py"


@pytest.fixture(autouse=True)
def _seed(request):
    """A per-test seed (stable across runs, different between tests); restores the RNG after.
    (tests/conftest.py's fixture of the same name does not reach this folder.)"""
    state = torch.random.get_rng_state()
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
    torch.random.set_rng_state(state)


def script_env() -> dict:
    """The environment for running train.py as a script: it must import the rskcnn this
    process imported (an editable install, or the checkout through PYTHONPATH)."""
    package_parent = str(Path(rskcnn.__file__).resolve().parents[1])
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def write_idx(path, array: np.ndarray, type_code: int) -> None:
    dtype = np.dtype(data.IDX_DTYPES[type_code])
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(dtype).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def fake_idx_dir(directory, n_train=96, n_val=40, size=28, seed=0, gz=True) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (images, labels) in data.IDX_FILES.items():
        n = n_train if split == "train" else n_val
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / (images + suffix), x, 0x08)
        write_idx(directory / (labels + suffix), y, 0x08)
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("type_code", sorted(data.IDX_DTYPES))
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_read_idx_round_trips_every_type(tmp_path, type_code, gz):
    rng = np.random.default_rng(type_code)
    array = (rng.standard_normal((3, 5, 7)) * 50).astype(data.IDX_DTYPES[type_code])
    if np.dtype(data.IDX_DTYPES[type_code]).kind == "u":
        array = rng.integers(0, 256, (3, 5, 7)).astype(np.uint8)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, array, type_code)
    read = data.read_idx(str(path))
    assert read.shape == (3, 5, 7) and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 4, 4) + b"\x00" * 15)
    with pytest.raises(ValueError, match=r"declares shape \(4, 4\) \(16 bytes of data\), found 15 bytes"):
        data.read_idx(str(short))
    odd = tmp_path / "odd"
    odd.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="unknown IDX type byte 0x07"):
        data.read_idx(str(odd))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_idx_dir_scales_to_unit_range(tmp_path, gz):
    arrays = fake_idx_dir(tmp_path, gz=gz)
    dataset = data.load("mnist", str(tmp_path))
    assert dataset.train.x.shape == (96, 1, 28, 28) and dataset.val.x.shape == (40, 1, 28, 28)
    assert dataset.train.x.dtype == torch.float32 and dataset.train.y.dtype == torch.int64
    torch.testing.assert_close(dataset.train.x[:, 0], torch.from_numpy(arrays["train"][0]).float() / 255)
    assert dataset.val.y.tolist() == arrays["val"][1].tolist()


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="has neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz"):
        data.load("fashion-mnist", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        data.load("mnist", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="'mnist' needs --data-dir"):
        data.load("mnist")
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("imagenet")


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(1)
    expected = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": pixels, b"labels": labels}, f)
        expected.append((pixels, labels))
    dataset = data.load("cifar10", str(tmp_path))
    assert dataset.train.x.shape == (20, 3, 32, 32) and dataset.val.x.shape == (4, 3, 32, 32) and dataset.num_classes == 10
    first = torch.from_numpy(expected[0][0][0].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(dataset.train.x[0], first)
    assert dataset.val.y.tolist() == expected[-1][1]


def test_digits_default():
    pytest.importorskip("sklearn", reason="the digits default needs scikit-learn (pip install -e \".[paper]\")")
    dataset = data.load("digits")
    assert dataset.train.x.shape == (1438, 1, 8, 8) and dataset.val.x.shape == (359, 1, 8, 8)
    assert 0.0 <= dataset.train.x.min() and dataset.train.x.max() <= 1.0
    assert set(dataset.train.y.tolist()) == set(range(10))


def test_subset_is_fixed_per_seed():
    split = data.Split(torch.rand(50, 1, 4, 4), torch.randint(0, 10, (50,)))
    a, b = split.subset(20), split.subset(20)
    assert len(a) == 20 and torch.equal(a.x, b.x)
    assert split.subset(None) is split and split.subset(80) is split


@pytest.mark.parametrize(("shape", "hidden"), [((1, 28, 28), (128, 64)), ((3, 32, 32), (256, 128))])
def test_paper_cnn_matches_the_authors(shape, hidden):
    variant = model.make_variant("rsk-filter", 0.3)
    net = model.paper_cnn(variant, shape, 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (shape[0], 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    rsk = [m for m in net.modules() if isinstance(m, RSKConv2d)]
    assert rsk == [net.conv3] and rsk[0].granularity == "filter" and rsk[0].keep_prob == 0.3
    assert (net.fc1.in_features, net.fc1.out_features, net.fc2.out_features) == (
        128 * (shape[1] // 4) * (shape[2] // 4), *hidden)
    assert all(torch.all(m.bias == 0) for m in convs)  # Keras's zero bias init
    net.eval()
    assert net(torch.rand(2, *shape)).shape == (2, 10)


def test_variants_and_regularisers():
    assert model.make_variant("dense", 0.3).regulariser == "none"
    assert model.make_variant("rsk-element", 0.4).granularity == "element"
    scheduled = model.make_variant("sweep-0.7", 0.3)
    assert scheduled.scheduled and scheduled.keep_prob == 0.7
    dropout = model.paper_cnn(model.make_variant("dropout2d", 0.3), (1, 28, 28), 10)
    assert isinstance(dropout.dropout2d, torch.nn.Dropout2d) and dropout.dropout2d.p == pytest.approx(0.7)
    with pytest.raises(ValueError, match="variant must be one of"):
        model.make_variant("dropconnect", 0.5)


def test_plan_orders_core_seed_major_and_skips_dropblock_without_torchvision(monkeypatch, capsys):
    monkeypatch.setattr(model, "has_torchvision", lambda: False)
    args = train.resolve(train.build_parser().parse_args(["--seeds", "0,1", "--sweep", "0.3,0.6", "--sweep-seeds", "5"]))
    planned = [(v.name, s) for v, s in train.plan(args)]
    core = [(n, s) for s in (0, 1) for n in model.CORE_VARIANTS]
    assert planned == core + [("sweep-0.6", 5), ("dropout2d", 5)]
    out = capsys.readouterr().out
    assert "dropblock: skipped, torchvision is not installed" in out
    assert "sweep 0.3: same as rsk-schedule" in out


KERAS_LOG = """Epoch 1/2
469/469 [==============================] - 4s 2ms/step - loss: 0.4791 - accuracy: 0.8267 - val_loss: 0.3354 - val_accuracy: 0.8790
Epoch 2/2
469/469 [==============================] - 1s 2ms/step - loss: 0.2913 - accuracy: 0.8940 - val_loss: 0.2991 - val_accuracy: 0.8918
"""


def test_keras_log_parser_and_authors_csv_round_trip(tmp_path):
    (tmp_path / "N1.txt").write_text(KERAS_LOG)
    (tmp_path / "Y1.txt").write_text(KERAS_LOG.replace("0.8918", "0.9001"))
    authors = report.read_authors(str(tmp_path), str(tmp_path))
    assert authors["N1"] == [
        {"epoch": 1, "train_loss": 0.4791, "train_acc": 0.8267, "val_loss": 0.3354, "val_acc": 0.879},
        {"epoch": 2, "train_loss": 0.2913, "train_acc": 0.894, "val_loss": 0.2991, "val_acc": 0.8918}]
    path = tmp_path / "authors.csv"
    report.write_authors_csv(authors, str(path))
    assert report.read_authors(str(path), str(tmp_path)) == authors


def fake_run(variant, seed, finals):
    history = [{"epoch": i + 1, "keep_prob": 1.0, "train_loss": 0.5, "train_acc": acc + 0.05,
                "val_loss": 0.4, "val_acc": acc, "train_s": 2.0, "eval_s": 0.5} for i, acc in enumerate(finals)]
    return {"variant": variant, "description": variant, "seed": seed, "history": history}


def test_table_means_stds_and_delta():
    runs = [fake_run("dense", 0, [0.80, 0.90]), fake_run("dense", 1, [0.85, 0.88]),
            fake_run("rsk-filter", 0, [0.70, 0.91]), fake_run("rsk-filter", 1, [0.75, 0.93])]
    text, summary = report.tables(runs, {})
    dense = summary["variants"]["dense"]
    assert dense["final_val_acc"]["mean"] == pytest.approx(0.89)
    assert dense["final_val_acc"]["std"] == pytest.approx(np.std([0.90, 0.88], ddof=1))
    assert dense["final_gap"]["mean"] == pytest.approx(0.05)
    assert "| `rsk-filter` | rsk-filter | 2 | 2 | 92.00 ± 1.41 | 92.00 ± 1.41 | +3.00 | 5.00 ± 0.00 | 2.0 ± 0.0 |" in text
    assert text.index("`dense`") < text.index("`rsk-filter`")


def run_train(tmp_path, *extra):
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True)
    fake_idx_dir(data_dir, n_train=200, n_val=64)
    out = tmp_path / "out"
    args = ["--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--out", str(out),
            "--epochs", "2", "--batch-size", "64", "--seeds", "0,1", "--threads", "1", *extra]
    assert train.main(args) == 0
    return out


def test_train_end_to_end_on_idx_files(tmp_path, capsys):
    out = run_train(tmp_path, "--variants", "dense,rsk-schedule", "--sweep", "0.5", "--sweep-seeds", "3",
                    "--decay-epochs", "4")
    stdout = capsys.readouterr().out
    assert "fashion-mnist: 200 train, 64 validation images (1, 28, 28)" in stdout
    names = sorted(os.listdir(out / "runs"))
    assert names == sorted(f"{v}_seed{s}.{ext}" for v, s in
                           [("dense", 0), ("dense", 1), ("rsk-schedule", 0), ("rsk-schedule", 1), ("sweep-0.5", 3)]
                           for ext in ("csv", "json"))
    with open(out / "runs" / "rsk-schedule_seed1.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["keep_prob"]) for r in rows] == [1.0, pytest.approx(0.825)]  # 1 -> 0.3 over 4 epochs
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 and float(r["train_s"]) > 0 for r in rows)
    record = json.loads((out / "runs" / "dense_seed0.json").read_text())
    assert record["settings"]["epochs"] == 2 and record["machine"]["threads"] == 1
    assert record["command"].startswith("python references/paper/train.py --dataset fashion-mnist")
    results = (out / "results.md").read_text()
    for name in ("`dense`", "`rsk-schedule`", "`sweep-0.5`"):
        assert name in results
    assert json.loads((out / "results.json").read_text())["summary"]["variants"]["dense"]["n"] == 2
    if _has_matplotlib():
        assert (out / "val-acc.png").stat().st_size > 1000 and (out / "val-loss.png").exists()


def test_train_is_reproducible_per_seed(tmp_path):
    first, second = (run_train(tmp_path / name, "--variants", "rsk-element", "--sweep", "none", "--no-plots")
                     for name in ("a", "b"))

    def history(out):
        rows = json.loads((out / "runs" / "rsk-element_seed1.json").read_text())["history"]
        return [(r["train_loss"], r["val_acc"]) for r in rows]
    assert history(first) == history(second)


def test_report_only_rebuilds_from_runs_and_plots_authors(tmp_path):
    out = run_train(tmp_path, "--variants", "dense", "--sweep", "none", "--no-plots")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "N1.txt").write_text(KERAS_LOG)
    (out / "results.md").unlink()
    assert train.main(["--out", str(out), "--report-only", "--authors-logs", str(logs)]) == 0
    results = (out / "results.md").read_text()
    assert "`dense`" in results and "The authors' Keras logs" in results and "| dense (N runs) | 1 | 2 |" in results
    assert (out / "authors.csv").exists()


def test_report_only_with_no_runs_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs in"):
        train.main(["--out", str(tmp_path), "--report-only"])


@pytest.mark.parametrize(("argument", "message"), [
    (["--keep-prob", "0"], "expected a keep probability in (0, 1]"),
    (["--variants", "dense,dropconnect"], "expected a comma-separated subset of dense,"),
    (["--seeds", "1,1"], "expected distinct comma-separated ints >= 0"),
    (["--sweep", "0.5,2"], "expected comma-separated keep probabilities in (0, 1] or 'none'"),
    (["--epochs", "0"], "expected an int >= 1"),
])
def test_bad_arguments_exit_2_with_the_reason(argument, message, capsys):
    with pytest.raises(SystemExit) as error:
        train.main(list(argument))
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_script_runs_from_another_working_directory(tmp_path):
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--help"], cwd=tmp_path, env=script_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage: train.py" in result.stdout and "--authors-logs" in result.stdout


def test_default_out_is_in_the_checkout_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train.resolve(train.build_parser().parse_args(["--dataset", "mnist", "--quick"]))
    assert Path(args.out).resolve() == HARNESS.parents[1] / "benchmarks" / "results" / "train" / "mnist-quick"


@pytest.mark.slow
def test_quick_runs_under_two_minutes(tmp_path):
    pytest.importorskip("sklearn", reason="--quick's default data set, digits, needs scikit-learn")
    out = tmp_path / "out"
    options = ["--quick", "--threads", "1", "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *options],
                            cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=240,
                            check=False)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 120, f"--quick took {elapsed:.0f} s"
    record = json.loads((out / "runs" / "dense_seed0.json").read_text())
    assert record["command"] == "python references/paper/train.py " + shlex.join(options)
    results = (out / "results.md").read_text()
    variants = ["dense", "rsk-filter", "rsk-element", "rsk-schedule", "dropout2d", "sweep-0.5"]
    if model.has_torchvision():
        variants.append("dropblock")
    for name in variants:
        assert f"`{name}`" in results
    assert "digits: 1438 train, 359 validation images (1, 8, 8)" in result.stdout


def test_authors_rows_are_cut_at_our_epoch_count():
    rows = [{"epoch": i + 1, "train_loss": 0.1, "train_acc": 0.9 + 0.01 * i, "val_loss": 0.2, "val_acc": 0.85 + 0.005 * i}
            for i in range(6)]
    text, summary = report.tables([fake_run("dense", 0, [0.8, 0.82])], {"N1": rows, "Y1": rows})
    assert "| dense (N runs) | 1 | 2 | 85.50 | 85.50 | 5.50 |" in text  # epoch 2: 0.91 - 0.855
    assert "| dense (N runs) | 1 | 6 | 87.50 | 87.50 | 7.50 |" in text
    assert set(summary["authors"]) == {f"{kind}, first {cut} epochs" for cut in (2, 6) for kind in
                                       ("dense (N runs)", "RSK filter, keep 1.0 → 0.3 (Y runs)")}


def test_sweep_points_put_dense_at_one():
    runs = [fake_run("dense", 0, [0.8, 0.9]), fake_run("rsk-element", 0, [0.7, 0.75]),
            {**fake_run("rsk-schedule", 0, [0.85, 0.91]), "keep_prob": 0.3},
            {**fake_run("sweep-0.5", 0, [0.86, 0.84]), "keep_prob": 0.5}]
    points = report.sweep_points(runs)
    assert points == {1.0: {"final_val_acc": [0.9], "best_val_acc": [0.9]},
                      0.3: {"final_val_acc": [0.91], "best_val_acc": [0.91]},
                      0.5: {"final_val_acc": [0.84], "best_val_acc": [0.86]}}
