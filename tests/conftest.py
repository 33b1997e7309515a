"""Shared helpers for the rskcnn tests.

* ``_seed`` (autouse) seeds torch's RNG per test and restores the previous state after.
* ``ConvConfig`` / ``make_inputs`` build fresh random tensors for one convolution.
* ``as_layout`` gives channels_last and other non-contiguous views of the same values.
* ``BACKENDS`` / the ``backend`` fixture: the backends to test on the CPU. Every backend
  that is registered is listed; one that cannot run here is skipped with its reason
  (``rskcnn.backends.unavailable_reasons``), so a missing extension never passes silently.
  Where a backend cannot take a test's ``dtype`` the test is skipped with the backend's reason,
  and so is a test whose call the backend declares it does not serve (``compact`` serves only
  ``filter`` masks): ``rskcnn.backends.resolve`` refuses it with the backend's reasons.
* Without CUDA, Triton's interpreter is switched on (before anything imports Triton), so the
  ``triton`` backend runs its kernels on the CPU here, as CI does.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import zlib

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import rskcnn  # noqa: E402
from rskcnn import backends as rsk_backends  # noqa: E402

# --------------------------------------------------------------------------- backends

CPU = torch.device("cpu")


def _backend_params() -> list:
    available = rskcnn.available_backends(CPU)
    reasons = rsk_backends.unavailable_reasons(CPU)
    names = list(dict.fromkeys([*available, *rsk_backends.BACKENDS, "cpu"]))
    params = []
    for name in names:
        if name in available:
            params.append(pytest.param(name, id=name))
        else:
            reason = reasons.get(name, f"backend {name!r} is not registered in rskcnn.backends.BACKENDS")
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"{name}: {reason}")))
    return params


BACKENDS = _backend_params()


def cpu_ops_skip_reason() -> str | None:
    """Why the C++ ops (torch.ops.rskcnn.*) cannot be used here, or None."""
    if "cpu" in rskcnn.available_backends(CPU):
        return None
    return "cpu backend unavailable: " + rsk_backends.unavailable_reasons(CPU).get(
        "cpu", "not registered in rskcnn.backends.BACKENDS"
    )


# Tests that call the C++ ops directly (gradcheck, opcheck, error messages of the ops).
requires_cpu_ops = pytest.mark.skipif(cpu_ops_skip_reason() is not None, reason=str(cpu_ops_skip_reason()))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def dtype_reasons(backend: str, dtype: torch.dtype) -> list[str]:
    """Why ``backend`` cannot run a CPU convolution in ``dtype`` (empty when it can), asked of a
    small ungrouped call with a mask granularity the backend serves."""
    if backend == "auto":
        return []
    served = rsk_backends.get_backend(backend).granularities[0]
    weight_shape = (2, 2, 3, 3)
    call = rsk_backends.ConvCall(device=CPU, dtype=dtype, input_shape=(1, 2, 5, 5), weight_shape=weight_shape,
                                 block=rskcnn.block_shape(served, weight_shape, (2, 2)), stride=(1, 1),
                                 padding=(0, 0), dilation=(1, 1), groups=1)
    return rsk_backends.get_backend(backend).not_supported_reasons(call)


def widest_dtype(backend: str) -> torch.dtype:
    """float64 where the backend takes it, else float32."""
    return torch.float32 if dtype_reasons(backend, torch.float64) else torch.float64


@pytest.fixture(autouse=True)
def _skip_unsupported_dtype(request):
    """A test parametrised by ``backend`` and ``dtype`` is skipped, with the backend's reason,
    where that backend does not take that dtype."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if "backend" in params and "dtype" in params:
        reasons = dtype_reasons(params["backend"], params["dtype"])
        if reasons:
            pytest.skip(f"{params['backend']} does not take {params['dtype']}: {'; '.join(reasons)}")


def declared_refusal(error: BaseException, backend: str) -> str | None:
    """The reasons of ``rskcnn.backends.resolve`` refusing ``backend`` by its declarations, if
    that is what ``error`` (or an exception it was raised from, e.g. inside torch.compile) is."""
    prefix = f"rskcnn: backend {backend!r} cannot run this call: "
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, RuntimeError) and prefix in text:
            return text[text.index(prefix) + len(prefix):].splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test parametrised by ``backend`` whose call that backend declares it does not serve
    (a granularity it leaves to others, a grouped Bernoulli mask, ...) is skipped with the
    backend's own reasons, as an unsupported ``dtype`` is above. Only ``resolve``'s refusal of
    the test's own backend counts; every other error fails the test."""
    try:
        return (yield)
    except Exception as error:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        reasons = declared_refusal(error, backend) if isinstance(backend, str) and backend != "auto" else None
        if reasons is None:
            raise
        pytest.skip(f"{backend} does not serve this call: {reasons}")


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches reset before and after the test, so that it counts its own
    compilations and leaves none behind."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# --------------------------------------------------------------------------- RNG


@pytest.fixture(autouse=True)
def _seed(request):
    """A per-test seed (stable across runs, different between tests); restores the RNG after."""
    state = torch.random.get_rng_state()
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield
    torch.random.set_rng_state(state)


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    n: int = 2
    cin: int = 4
    cout: int = 6
    h: int = 7
    w: int = 9
    kernel: tuple[int, int] = (3, 3)
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True
    granularity: str = "element"
    block_size: tuple[int, int] = (4, 2)
    keep_prob: float = 0.5
    scale: float = 1.0

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin // self.groups, *self.kernel)

    @property
    def block(self) -> tuple[int, int, int, int]:
        return rskcnn.block_shape(self.granularity, self.weight_shape, self.block_size)

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def output_shape(self) -> tuple[int, int, int, int]:
        """Computed by torch on the meta device, independently of rskcnn."""
        x = torch.empty(self.n, self.cin, self.h, self.w, device="meta")
        w = torch.empty(self.weight_shape, device="meta")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Using padding='same'")
            return tuple(F.conv2d(x, w, None, **self.conv_kwargs()).shape)


@dataclasses.dataclass
class ConvInputs:
    input: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor
    bias: torch.Tensor | None
    grad_output: torch.Tensor


def make_mask(weight_shape, keep_prob: float, block, *, mixed: bool = True) -> torch.Tensor:
    """A sampled block mask. With ``mixed`` and ``keep_prob < 1`` the first block is forced kept and
    the last dropped (when there are two), so both kinds of weight are always exercised."""
    mask = rskcnn.sample_mask(weight_shape, keep_prob, block)
    if mixed and keep_prob < 1.0 and mask.numel() >= 2:
        flat = mask.view(-1)
        flat[0] = True
        flat[-1] = False
    return mask


def make_inputs(cfg: ConvConfig, dtype: torch.dtype = torch.float32, *, requires_grad: bool = True,
                mixed_mask: bool = True) -> ConvInputs:
    """Fresh ``torch.randn`` input, weight, bias and grad_output, and a sampled mask."""
    x = torch.randn(cfg.n, cfg.cin, cfg.h, cfg.w, dtype=dtype)
    w = torch.randn(cfg.weight_shape, dtype=dtype)
    b = torch.randn(cfg.cout, dtype=dtype) if cfg.bias else None
    mask = make_mask(cfg.weight_shape, cfg.keep_prob, cfg.block, mixed=mixed_mask)
    go = torch.randn(cfg.output_shape(), dtype=dtype)
    if requires_grad:
        for t in (x, w, b):
            if t is not None:
                t.requires_grad_(True)
    return ConvInputs(x, w, mask, b, go)


def leaf_copy(t: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """A detached copy (optionally cast) that requires grad like ``t``."""
    if t is None:
        return None
    out = t.detach().to(dtype or t.dtype).clone()
    return out.requires_grad_(t.requires_grad)


# --------------------------------------------------------------------------- layouts

LAYOUTS = ("contiguous", "channels_last", "permuted", "strided")


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout (keeps requires_grad for leaves).

    ``channels_last``: NHWC strides. ``permuted``: permute -> contiguous -> permute back with a
    permutation that is neither NCHW nor NHWC. ``strided``: every other element of a twice
    as wide buffer along the last dim.
    """
    requires_grad = t.requires_grad
    t = t.detach()
    if layout == "contiguous":
        out = t.contiguous()
    elif layout == "channels_last":
        assert t.dim() == 4
        out = t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        assert out.is_contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":
        perm = tuple(reversed(range(t.dim())))
        inverse = [perm.index(d) for d in range(t.dim())]
        out = t.permute(*perm).contiguous().permute(*inverse)
    elif layout == "strided":
        buffer = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        buffer.fill_(float("nan") if t.is_floating_point() else 0)
        out = buffer[..., ::2]
        out.copy_(t)
    else:
        raise ValueError(layout)
    assert torch.equal(out, t)
    return out.requires_grad_(requires_grad) if requires_grad else out


# --------------------------------------------------------------------------- tolerances


def tolerances(dtype: torch.dtype, reduction: int) -> dict:
    """rtol/atol for a result that sums ``reduction`` products of O(1) values."""
    k = max(1, int(reduction))
    if dtype == torch.float64:
        return dict(rtol=1e-9, atol=1e-10 * max(1.0, math.sqrt(k)))
    if dtype == torch.float32:
        return dict(rtol=1e-4, atol=1e-5 * max(1.0, math.sqrt(k)))
    return dict(rtol=2e-2, atol=2e-2 * max(1.0, math.sqrt(k)))


def assert_close(actual, expected, dtype: torch.dtype, reduction: int, msg: str = "") -> None:
    torch.testing.assert_close(actual.to(expected.dtype), expected, check_dtype=False,
                               msg=lambda m: f"{msg}: {m}" if msg else m, **tolerances(dtype, reduction))


# --------------------------------------------------------------------------- CUDA steps


def check_step_without_sync_in_cuda_graph(layer, x) -> None:
    """A whole step of ``layer`` (fresh mask, forward, backward) on a side stream under
    sync-debug 'error', then captured in a CUDA graph and replayed: each replay draws a new
    mask inside the graph, so outputs and weight gradients change between replays."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up: compiles or loads kernels outside capture
            layer(x).square().sum().backward()
        torch.cuda.set_sync_debug_mode("error")
        try:
            layer(x).square().sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    layer.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        out = layer(x)
        out.square().sum().backward()
    graph.replay()
    first_out, first_grad = out.clone(), layer.weight.grad.clone()
    layer.weight.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(layer.weight.grad).all()
    assert not torch.equal(first_out, out), "masks must be redrawn on replay"
    assert not torch.equal(first_grad, layer.weight.grad), "the mask did not change between replays"
