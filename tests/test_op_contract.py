"""The op contract has one home (rskcnn/ops/schemas.py): every registered trio carries exactly
its schemas, and every trio has the shared fake kernels, autograd and autocast rules."""

from __future__ import annotations

import pytest
import torch

import rskcnn
from rskcnn.ops import schemas

from conftest import cpu_ops_skip_reason


def registered_schema(trio: schemas.OpTrio, which: str) -> str:
    """The argument list of a registered op as torch prints it (name stripped)."""
    text = str(trio.op(which)._schema)
    return text[text.index("("):]


def parsed(arguments: str) -> str:
    """``arguments`` as torch prints it after parsing (normalises spacing and defaults)."""
    return str(torch._C.parse_schema("x" + arguments))[1:]


def trio_reasons(trio: schemas.OpTrio) -> str | None:
    if trio is schemas.CPP_OPS:
        return cpu_ops_skip_reason()
    reason = rskcnn.backends.unavailable_reasons("cpu").get("triton")
    if reason is not None:
        return f"triton backend unavailable: {reason}"
    from rskcnn.ops import triton  # noqa: F401  (defines the Triton trio)
    return None


TRIOS = [pytest.param(schemas.CPP_OPS, id="cpp"), pytest.param(schemas.TRITON_OPS, id="triton")]


@pytest.fixture(params=TRIOS)
def trio(request) -> schemas.OpTrio:
    """Each trio whose ops can run here (skipped with the backend's reason otherwise)."""
    reason = trio_reasons(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


@pytest.mark.parametrize("which", schemas.PASSES)
def test_registered_schema_is_the_contract(trio, which):
    assert registered_schema(trio, which) == parsed(trio.schemas()[which])


@pytest.mark.parametrize("which", schemas.PASSES)
def test_cpp_and_triton_trios_have_the_same_schemas(which):
    for trio in (schemas.CPP_OPS, schemas.TRITON_OPS):
        reason = trio_reasons(trio)
        if reason is not None:
            pytest.skip(reason)
    assert registered_schema(schemas.CPP_OPS, which) == registered_schema(schemas.TRITON_OPS, which)


def trio_args(which: str, device="cpu", requires_grad=False):
    x = torch.randn(2, 4, 5, 5, device=device, requires_grad=requires_grad)
    w = torch.randn(6, 4, 3, 3, device=device, requires_grad=requires_grad)
    mask = torch.ones(6, 1, 1, 1, dtype=torch.bool, device=device)
    conv = ([1, 1], [1, 1], [1, 1], 1, [1, 4, 3, 3], 1.0)
    gy = torch.randn(2, 6, 5, 5, device=device, requires_grad=requires_grad)
    return {"forward": (x, w, mask, None, *conv), "grad_input": (gy, w, mask, list(x.shape), *conv),
            "grad_weight": (gy, x, mask, list(w.shape), *conv)}[which]


EXPECTED_SHAPES = {"forward": (2, 6, 5, 5), "grad_input": (2, 4, 5, 5), "grad_weight": (6, 4, 3, 3)}


@pytest.mark.parametrize("which", schemas.PASSES)
def test_every_op_has_a_fake_kernel_and_autograd(trio, which):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = trio.op(which)(*trio_args(which))
    assert tuple(out.shape) == EXPECTED_SHAPES[which]
    out = trio.op(which)(*trio_args(which, requires_grad=True))
    assert out.grad_fn is not None


def test_the_forward_follows_autocast(trio):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trio.op("forward")(*trio_args("forward"))
    assert out.dtype == torch.bfloat16


def test_plan_tiles_is_the_contract():
    reason = cpu_ops_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    text = str(torch.ops.rskcnn.plan_tiles.default._schema)
    assert text[text.index("("):] == parsed(schemas.PLAN_TILES)
