"""Deployment: ``revert(model)`` gives plain ``nn.Conv2d`` layers that export with
``torch.export`` and, where the ``onnx`` package is installed, to ONNX."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import rskcnn

from conftest import assert_close


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    model = rskcnn.convert(model, keep_prob=0.4, which="all", granularity="filter")
    model[3].scale_mode = "inverted"
    # a little training, so BatchNorm's statistics and the weights are not their initial values
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 10, 10)).square().mean().backward()
        optimizer.step()
    return model.eval()


def test_revert_leaves_only_conv2d():
    reverted = rskcnn.revert(_model())
    assert not any(isinstance(m, rskcnn.RSKConv2d) for m in reverted.modules())
    convs = [m for m in reverted.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(type(m) is nn.Conv2d for m in convs)


def test_reverted_model_exports_with_torch_export():
    model = _model()
    reverted = rskcnn.revert(model)
    x = torch.randn(3, 3, 10, 10)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(reverted, (x,), dynamic_shapes=({0: batch},))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("rskcnn" in t for t in targets), targets
    assert any("conv2d" in t for t in targets), targets
    for n in (3, 7):
        xi = torch.randn(n, 3, 10, 10)
        with torch.no_grad():
            expected = model(xi)
            assert_close(program.module()(xi), expected, torch.float32, 144, msg=f"exported, batch {n}")
            assert_close(reverted(xi), expected, torch.float32, 144, msg=f"reverted, batch {n}")


def test_eval_mode_rsk_model_also_exports():
    """Without revert, eval mode is a dense conv on the scaled weight: it exports as well."""
    model = _model()
    x = torch.randn(2, 3, 10, 10)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close(program.module()(x), model(x), torch.float32, 144)


def test_reverted_model_exports_to_onnx(tmp_path):
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"ONNX export needs the {' and '.join(missing)} package(s), which rskcnn does not depend on "
                    f"(pip install {' '.join(missing)})")
    import onnx

    reverted = rskcnn.revert(_model())
    x = torch.randn(2, 3, 10, 10)
    path = tmp_path / "model.onnx"
    torch.onnx.export(reverted, (x,), str(path), dynamo=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {node.op_type for node in proto.graph.node} >= {"Conv"}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(out), reverted(x), torch.float32, 144)
