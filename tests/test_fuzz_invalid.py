"""Fuzzing beyond tests/test_parity_fuzz.py (which covers named granularities on contiguous
tensors): raw block shapes, larger than the weight in any dimension, memory layouts of every
operand, the module with its padding modes and scale modes; and random invalid arguments,
each of which must raise ValueError, TypeError or RuntimeError naming the argument, and
neither crash nor hang. Also the int32 guard of the cpu backend.

Hypothesis is derandomized with modest example counts (CI has 2 cores) and no deadline;
each example runs under a wall-clock alarm, so a hang in Python code fails instead of stalling.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn import backends as rsk_backends
from rskcnn.backends import reference_conv2d

from conftest import BACKENDS, LAYOUTS, as_layout, assert_close

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e .[test])")
st = hypothesis.strategies

MODULE_BACKENDS = [*BACKENDS, pytest.param("auto", id="auto")]
SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck))
EXAMPLE_SECONDS = 60


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fails an example that runs longer than ``seconds`` (main thread, POSIX only)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _runs(backend: str, dtype: torch.dtype) -> bool:
    if backend == "auto":
        return True
    call = rsk_backends.ConvCall(device=torch.device("cpu"), dtype=dtype, input_shape=(1, 1, 1, 1),
                                 weight_shape=(1, 1, 1, 1), block=(1, 1, 1, 1), stride=(1, 1), padding=(0, 0),
                                 dilation=(1, 1), groups=1)
    return not rsk_backends.get_backend(backend).not_supported_reasons(call)


# --------------------------------------------------------------------------- valid: functional


@st.composite
def functional_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_kind = draw(st.sampled_from(["ints", "ints", "same", "valid"]))
    stride = (1, 1) if padding_kind == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if padding_kind == "ints" else padding_kind
    pads = padding if isinstance(padding, tuple) else (0, 0)
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if padding != "same":
        hypothesis.assume(h + 2 * pads[0] >= dilation[0] * (kernel[0] - 1) + 1)
        hypothesis.assume(w + 2 * pads[1] >= dilation[1] * (kernel[1] - 1) + 1)
    weight_shape = (cout, cin // groups, *kernel)
    # raw blocks: each dimension from 1 to beyond the weight's extent
    block = tuple(draw(st.integers(1, s + 2)) for s in weight_shape)
    return dict(
        n=draw(st.integers(0, 3)), cin=cin, h=h, w=w, weight_shape=weight_shape, block=block,
        conv=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
        bias=draw(st.booleans()), keep_prob=draw(st.sampled_from([0.2, 0.6, 1.0])),
        scale=draw(st.sampled_from([1.0, 0.5, 2.5])),
        input_layout=draw(st.sampled_from(LAYOUTS)), weight_layout=draw(st.sampled_from(LAYOUTS)),
        grad_layout=draw(st.sampled_from(LAYOUTS)),
    )


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    # an empty tensor has no meaningful layout (conftest's as_layout asserts one)
    return t.clone() if t.numel() == 0 else as_layout(t, layout)


def check_functional_case(backend: str, case: dict, dtype: torch.dtype) -> None:
    x = torch.randn(case["n"], case["cin"], case["h"], case["w"], dtype=dtype)
    w = torch.randn(case["weight_shape"], dtype=dtype)
    b = torch.randn(case["weight_shape"][0], dtype=dtype) if case["bias"] else None
    mask = rskcnn.sample_mask(w.shape, case["keep_prob"], case["block"])
    kwargs = dict(**case["conv"], block=case["block"], scale=case["scale"])

    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    br = None if b is None else b.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using padding='same'")
        expected = reference_conv2d(xr, wr, mask, br, **kwargs)
    go = torch.randn_like(expected)
    expected.backward(go)

    xb = _layout(x, case["input_layout"]).requires_grad_()
    wb = _layout(w, case["weight_layout"]).requires_grad_()
    bb = None if b is None else b.clone().requires_grad_()
    out = rskcnn.rsk_conv2d(xb, wb, mask, bb, **kwargs, backend=backend)
    assert out.shape == expected.shape and out.dtype == dtype
    if case["input_layout"] == "channels_last" and out.numel() > 0 and out.shape[1] > 1 and out[0, 0].numel() > 1:
        assert out.is_contiguous(memory_format=torch.channels_last), f"output strides {out.stride()}"
    out.backward(_layout(go, case["grad_layout"]))

    cin_g, kh, kw = case["weight_shape"][1:]
    cout_g = case["weight_shape"][0] // case["conv"]["groups"]
    red_out = max(1, cin_g * kh * kw)
    assert_close(out, expected, dtype, red_out, msg="forward")
    assert_close(xb.grad, xr.grad, dtype, max(1, cout_g * kh * kw), msg="grad_input")
    assert_close(wb.grad, wr.grad, dtype, max(1, go[:, :1].numel()), msg="grad_weight")
    full = rskcnn.expand_mask(mask, case["block"], w.shape)
    assert (wb.grad[~full] == 0).all(), "a masked weight got a gradient"
    if b is not None:
        assert_close(bb.grad, br.grad, dtype, max(1, go[:, :1].numel()), msg="grad_bias")


@pytest.mark.slow
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_fuzz_raw_blocks_and_layouts(backend):
    dtype = torch.float64 if _runs(backend, torch.float64) else torch.float32
    examples = 12 if backend == "triton" else 40  # Triton runs in its (slow) interpreter on the CPU

    @hypothesis.settings(max_examples=examples, **SETTINGS)
    @hypothesis.given(case=functional_cases())
    def check(case):
        with time_limit(EXAMPLE_SECONDS):
            check_functional_case(backend, case, dtype)

    check()


# --------------------------------------------------------------------------- valid: module


@st.composite
def module_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, (1, 0)]))
    stride = 1 if padding == "same" else draw(st.sampled_from([1, 2, (2, 1)]))
    h, w = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    return dict(
        args=(cin, cout, kernel),
        kwargs=dict(stride=stride, padding=padding, dilation=draw(st.sampled_from([1, (1, 2)])), groups=groups,
                    bias=draw(st.booleans()), padding_mode=padding_mode,
                    keep_prob=draw(st.sampled_from([0.3, 0.7, 1.0])),
                    granularity=draw(st.sampled_from(["element", "tap", "filter", "block"])),
                    block_size=(draw(st.integers(1, 5)), draw(st.integers(1, 5))),
                    scale_mode=draw(st.sampled_from(["paper", "inverted"])), mask_seed=draw(st.integers(0, 2**64 - 1))),
        input_shape=(draw(st.integers(1, 2)), cin, h, w), channels_last=draw(st.booleans()),
    )


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_fuzz_module_against_conv2d(backend):
    """RSKConv2d in train mode equals nn.Conv2d on weight * mask (/ keep_prob when inverted)."""
    examples = 8 if backend == "triton" else 25

    @hypothesis.settings(max_examples=examples, **SETTINGS)
    @hypothesis.given(case=module_cases())
    def check(case):
        kwargs = dict(case["kwargs"])
        try:
            conv = torch.nn.Conv2d(*case["args"], **{k: kwargs[k] for k in
                                                     ("stride", "padding", "dilation", "groups", "bias",
                                                      "padding_mode")})
            conv(torch.randn(case["input_shape"]))
        except (ValueError, RuntimeError):
            hypothesis.assume(False)  # a configuration nn.Conv2d itself rejects
        with time_limit(EXAMPLE_SECONDS):
            m = rskcnn.RSKConv2d(*case["args"], **kwargs, backend=backend)
            m.load_state_dict(conv.state_dict())
            x = torch.randn(case["input_shape"])
            if case["channels_last"]:
                x = x.to(memory_format=torch.channels_last)
            mask = rskcnn.sample_mask(m.weight.shape, m.keep_prob, m.block, seed=kwargs["mask_seed"], step=0)
            y = m.train()(x)
            full = rskcnn.expand_mask(mask, m.block, m.weight.shape)
            w = conv.weight * full
            if kwargs["scale_mode"] == "inverted":
                w = w / kwargs["keep_prob"]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Using padding='same'")
                expected = conv._conv_forward(x, w, conv.bias)
            assert_close(y, expected, torch.float32, m.weight[0].numel(), msg=str(case))
            y.sum().backward()
            assert (m.weight.grad[~full] == 0).all()

    check()


# --------------------------------------------------------------------------- invalid


def _base():
    x = torch.randn(2, 4, 7, 6)
    w = torch.randn(6, 2, 3, 3)
    return dict(input=x, weight=w, mask=rskcnn.sample_mask(w.shape, 0.5, (1, 1, 1, 1)), bias=torch.randn(6),
                stride=1, padding=1, dilation=1, groups=2, block=(1, 1, 1, 1), scale=1.0)


# (name, corruption applied to the base call, regex the message must match)
def _functional_corruptions():
    w = torch.randn(6, 2, 3, 3)
    return [
        *[(f"stride={v!r}", {"stride": v}, "stride") for v in (0, -1, (1,), (1, 2, 3), 1.5, "2", True, (1, 0))],
        *[(f"padding={v!r}", {"padding": v}, "padding") for v in (-1, (1, -1), "full", 1.5, (1,), None)],
        ("padding='same' with stride 2", {"padding": "same", "stride": 2}, "same"),
        *[(f"dilation={v!r}", {"dilation": v}, "dilation") for v in (0, (0, 1), 1.5, (1, 1, 1), False)],
        *[(f"groups={v!r}", {"groups": v}, "groups") for v in (0, -2, 1.5, True, "2", 3)],
        *[(f"block={v!r}", {"block": v}, "block") for v in
          ((0, 1, 1, 1), (1, 1, 1), (1, 1, 1, -2), (1.0, 1, 1, 1), "1111", torch.ones(4, dtype=torch.int64),
           (1, 1, 1, True))],
        *[(f"scale={v!r}", {"scale": v}, "scale") for v in ("x", None, True, torch.tensor(1.0), 1j)],
        *[(f"backend={v!r}", {"backend": v}, "backend") for v in ("nope", 3, None)],
        ("mask of the wrong shape", {"mask": torch.ones(6, 2, 3, 2, dtype=torch.bool)}, "mask"),
        ("mask of a block mismatch", {"block": (2, 1, 1, 1)}, "mask"),
        ("float mask", {"mask": torch.ones(6, 2, 3, 3)}, "mask"),
        ("mask not a tensor", {"mask": [[True]]}, "mask"),
        ("integer input", {"input": torch.randint(0, 3, (2, 4, 7, 6))}, "input"),
        ("5-D input", {"input": torch.randn(1, 2, 4, 7, 6)}, "input"),
        ("2-D input", {"input": torch.randn(7, 6)}, "input"),
        ("input not a tensor", {"input": [[1.0]]}, "input"),
        ("input channel mismatch", {"input": torch.randn(2, 5, 7, 6)}, "channels"),
        ("float64 weight", {"weight": w.double()}, "weight"),
        ("3-D weight", {"weight": torch.randn(6, 2, 3), "mask": torch.ones(6, 2, 3, dtype=torch.bool)}, "weight"),
        ("weight not a tensor", {"weight": 1.0}, "weight"),
        ("bias of the wrong shape", {"bias": torch.randn(5)}, "bias"),
        ("float64 bias", {"bias": torch.randn(6, dtype=torch.float64)}, "bias"),
        ("bias not a tensor", {"bias": [0.0] * 6}, "bias"),
        ("kernel larger than the padded input", {"input": torch.randn(2, 4, 1, 6), "padding": 0}, "kernel"),
        ("cout not divisible by groups", {"weight": torch.randn(5, 2, 3, 3), "bias": torch.randn(5),
                                          "mask": torch.ones(5, 2, 3, 3, dtype=torch.bool)}, "groups"),
    ]


FUNCTIONAL_CORRUPTIONS = _functional_corruptions()


def _call_functional(args: dict, backend: str):
    args = dict(args)
    backend = args.pop("backend", backend)
    return rskcnn.rsk_conv2d(args.pop("input"), args.pop("weight"), args.pop("mask"), args.pop("bias"),
                             args.pop("stride"), args.pop("padding"), args.pop("dilation"), args.pop("groups"),
                             block=args.pop("block"), scale=args.pop("scale"), backend=backend)


def test_base_call_of_the_invalid_fuzz_is_valid():
    """So that each corruption alone is what makes a call invalid."""
    assert _call_functional(_base(), "auto").shape == (2, 6, 7, 6)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_fuzz_invalid_functional_arguments(backend):
    """Every corruption alone, and random pairs of them (the message must then name one of the two)."""

    @hypothesis.settings(max_examples=60, **SETTINGS)
    @hypothesis.given(picks=st.lists(st.sampled_from(range(len(FUNCTIONAL_CORRUPTIONS))), min_size=1, max_size=2,
                                     unique=True))
    def check(picks):
        args = _base()
        names, patterns = [], []
        for i in picks:
            name, change, pattern = FUNCTIONAL_CORRUPTIONS[i]
            args.update(change)
            names.append(name)
            patterns.append(pattern)
        with time_limit(EXAMPLE_SECONDS), pytest.raises((ValueError, TypeError, RuntimeError)) as info:
            _call_functional(args, backend)
        message = str(info.value)
        assert any(p in message for p in patterns), f"{names}: message {message!r} names none of {patterns}"

    check()


@pytest.mark.parametrize("index", range(len(FUNCTIONAL_CORRUPTIONS)),
                         ids=[c[0] for c in FUNCTIONAL_CORRUPTIONS])
def test_each_invalid_functional_argument(index):
    name, change, pattern = FUNCTIONAL_CORRUPTIONS[index]
    args = _base()
    args.update(change)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        _call_functional(args, "auto")


MODULE_CORRUPTIONS = [
    *[({"keep_prob": v}, "keep_prob") for v in (0.0, -0.5, 1.5, "0.5", True, None, float("nan"))],
    *[({"granularity": v}, "granularity") for v in ("weights", None, 3)],
    *[({"granularity": "block", "block_size": v}, "block_size") for v in ((0, 1), (1,), (1, 2, 3), (1.5, 2), "ab")],
    *[({"scale_mode": v}, "scale_mode") for v in ("dropout", None)],
    *[({"backend": v}, "backend") for v in ("gpu", None)],
    ({"generator": 1}, "generator"),
    *[({"mask_seed": v}, "mask_seed") for v in (-1, 2**64, 0.5, "1")],
]


@pytest.mark.parametrize("change, pattern", MODULE_CORRUPTIONS, ids=[repr(c[0]) for c in MODULE_CORRUPTIONS])
def test_invalid_module_options(change, pattern):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=pattern):
        rskcnn.RSKConv2d(4, 6, 3, **change)


@pytest.mark.parametrize("value", [0.0, 1.0001, "1", float("nan"), float("inf")])
def test_invalid_keep_prob_assignment(value):
    m = rskcnn.RSKConv2d(4, 6, 3, keep_prob=0.5)
    with pytest.raises((ValueError, TypeError), match="keep_prob"):
        m.keep_prob = value
    assert m.keep_prob == 0.5 and float(m.keep_prob_tensor) == 0.5


# --------------------------------------------------------------------------- invalid: the C++ ops


OP_CORRUPTIONS = {
    "stride": lambda c: c.update(stride=[0, 1] if c["stride"][0] > 1 else [-1, 1]),
    "stride length": lambda c: c.update(stride=c["stride"][:1]),
    "padding": lambda c: c.update(padding=[-1, 0]),
    "padding length": lambda c: c.update(padding=c["padding"] * 2),
    "dilation": lambda c: c.update(dilation=[1, 0]),
    "groups": lambda c: c.update(groups=-c["groups"] if c["groups"] > 1 else 0),
    "groups mismatch": lambda c: c.update(groups=c["groups"] + 1),
    "block": lambda c: c.update(block=[0, *c["block"][1:]]),
    "block length": lambda c: c.update(block=c["block"][:3]),
    "mask shape": lambda c: c.update(mask_size=[c["mask_size"][0] + 1, *c["mask_size"][1:]]),
    "mask dtype": lambda c: c.update(mask_dtype=torch.uint8),
    "bias": lambda c: c.update(bias="wrong"),
    "channels": lambda c: c.update(input_size=[c["input_size"][0], c["input_size"][1] + 1, *c["input_size"][2:]]),
    "kernel": lambda c: c.update(input_size=[*c["input_size"][:2], 1, 1], padding=[0, 0],
                                 weight_size=[*c["weight_size"][:2], 2, 2]),
}


@st.composite
def op_calls(draw):
    """Direct calls of rskcnn::masked_conv2d: a valid call (zero-size batch and channels
    included) with up to two corruptions; the op validates everything and never crashes."""
    groups = draw(st.integers(1, 3))
    # Cin/groups = 0 is refused by its own test (test_cpp_op_with_no_input_channels_does_not_crash)
    cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    kernel = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    stride, padding, dilation = ([draw(st.integers(lo, 2)), draw(st.integers(lo, 2))] for lo in (1, 0, 1))
    size = [dilation[d] * (kernel[d] - 1) + 1 - 2 * padding[d] + draw(st.integers(0, 3)) for d in (0, 1)]
    weight_size = [cout_g * groups, cin_g, *kernel]
    block = [draw(st.integers(1, 4)) for _ in range(4)]
    call = dict(input_size=[draw(st.integers(0, 2)), cin_g * groups, *(max(1, v) for v in size)],
                weight_size=weight_size, mask_size=[-(-s // b) for s, b in zip(weight_size, block)],
                stride=stride, padding=padding, dilation=dilation, groups=groups, block=block,
                mask_dtype=torch.bool, bias=draw(st.sampled_from([None, "right"])))
    for name in draw(st.lists(st.sampled_from(sorted(OP_CORRUPTIONS)), max_size=2, unique=True)):
        OP_CORRUPTIONS[name](call)
    return call


def test_fuzz_cpp_op_arguments():
    if "cpu" not in rskcnn.available_backends("cpu"):
        pytest.skip("the C++ ops are not built: " + rsk_backends.unavailable_reasons("cpu").get("cpu", "?"))
    op = torch.ops.rskcnn.masked_conv2d

    @hypothesis.settings(max_examples=200, **SETTINGS)
    @hypothesis.given(call=op_calls())
    def check(call):
        x = torch.randn(call["input_size"])
        w = torch.randn(call["weight_size"])
        mask = torch.randint(0, 2, call["mask_size"]).to(call["mask_dtype"])
        bias = {"right": torch.randn(max(call["weight_size"][0], 0)), "wrong": torch.randn(7), None: None}[call["bias"]]
        with time_limit(EXAMPLE_SECONDS):
            try:
                out = op(x, w, mask, bias, call["stride"], call["padding"], call["dilation"], call["groups"],
                         call["block"], 1.0)
            except RuntimeError as error:
                assert str(error).startswith("rskcnn"), str(error)
                return
        # Accepted: then it must be a valid convolution whose result matches the reference.
        try:
            expected = reference_conv2d(x, w, mask, bias, call["stride"], call["padding"], call["dilation"],
                                        call["groups"], block=tuple(call["block"]))
        except RuntimeError:
            assert w.shape[0] == 0 and out.numel() == 0  # F.conv2d refuses Cout = 0; the op returns nothing
            return
        assert out.shape == expected.shape
        assert_close(out, expected, torch.float32, max(1, w[0].numel()))

    check()


def test_fuzz_cpp_grad_op_arguments():
    """The gradient ops with grad_output shapes and input/weight sizes off by a little."""
    if "cpu" not in rskcnn.available_backends("cpu"):
        pytest.skip("the C++ ops are not built: " + rsk_backends.unavailable_reasons("cpu").get("cpu", "?"))
    ops = torch.ops.rskcnn
    offsets = st.lists(st.integers(-2, 2), min_size=4, max_size=4)

    @hypothesis.settings(max_examples=150, **SETTINGS)
    @hypothesis.given(call=op_calls(), which=st.sampled_from(["grad_input", "grad_weight"]), size_offset=offsets,
                      grad_offset=st.lists(st.integers(-1, 1), min_size=4, max_size=4))
    def check(call, which, size_offset, grad_offset):
        x, w = torch.randn(call["input_size"]), torch.randn(call["weight_size"])
        mask = torch.randint(0, 2, call["mask_size"]).to(call["mask_dtype"])
        conv = (call["stride"], call["padding"], call["dilation"], call["groups"], call["block"], 1.0)
        try:
            y = ops.masked_conv2d(x, w, mask, None, *conv)
        except RuntimeError:
            hypothesis.assume(False)
        go = torch.randn([max(0, a + b) for a, b in zip(y.shape, grad_offset)])
        with time_limit(EXAMPLE_SECONDS):
            try:
                if which == "grad_input":
                    size = [a + b for a, b in zip(x.shape, size_offset)]
                    out = ops.masked_conv2d_grad_input(go, w, mask, size, *conv)
                else:
                    size = [a + b for a, b in zip(w.shape, size_offset)]
                    out = ops.masked_conv2d_grad_weight(go, x, mask, size, *conv)
            except RuntimeError as error:
                assert str(error).startswith("rskcnn"), str(error)
                return
        assert list(out.shape) == size

    check()


def test_cpu_backend_refuses_weights_without_input_channels():
    """Cin/groups = 0 is a valid convolution (torch returns an empty result) that the C++
    kernels mishandle; the cpu backend refuses it by name, auto takes reference."""
    x, w = torch.randn(1, 0, 3, 3), torch.randn(2, 0, 1, 1)
    mask = torch.ones(2, 0, 1, 1, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="Cin/groups = 0"):
        rskcnn.rsk_conv2d(x, w, mask, backend="cpu")
    torch.testing.assert_close(rskcnn.rsk_conv2d(x, w, mask), F.conv2d(x, w))


def test_cpp_op_with_no_input_channels_does_not_crash():
    """The op raises a clear error. Run in a child process, so that a return of the old
    segfault (an out-of-bounds access in the kernels) fails this test instead of killing pytest."""
    if "cpu" not in rskcnn.available_backends("cpu"):
        pytest.skip("the C++ ops are not built: " + rsk_backends.unavailable_reasons("cpu").get("cpu", "?"))
    code = ("import torch, rskcnn\n"
            "x, w = torch.randn(1, 0, 3, 3), torch.randn(2, 0, 1, 1)\n"
            "m = torch.ones(2, 0, 1, 1, dtype=torch.bool)\n"
            "try:\n"
            "    torch.ops.rskcnn.masked_conv2d(x, w, m, None, [1, 1], [0, 0], [1, 1], 1, [1, 1, 1, 1], 1.0)\n"
            "except RuntimeError as e:\n"
            "    assert 'Cin/groups, KH and KW all >= 1' in str(e), e\n"
            "    print('raised', e)\n"
            "else:\n"
            "    raise SystemExit('no error')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"child exited with {result.returncode}: {result.stderr[-500:]}"


# --------------------------------------------------------------------------- int32 guard


def _big_call(weight_shape, block=(1, 1, 1, 1), groups=1):
    return rsk_backends.ConvCall(device=torch.device("cpu"), dtype=torch.float32,
                                 input_shape=(1, weight_shape[1] * groups, 2**16, 2**16), weight_shape=weight_shape,
                                 block=block, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=groups)


@pytest.mark.parametrize("weight_shape, block, groups, what", [
    ((8, 2**16, 2**8, 2**7), (1, 1, 1, 1), 1, "Cin/groups*KH*KW"),
    ((2**16, 8, 2**8, 2**7), (1, 8, 1, 1), 1, "Cout/groups*KH*KW"),
    ((2**16, 8, 2**8, 2**7), (1, 8, 1, 1), 8, "mask column"),
])
def test_cpu_backend_rejects_int32_overflowing_calls(weight_shape, block, groups, what):
    """The C++ CPU kernels index plan entries and sparse-row columns with int32 (csrc/block_mask.h,
    csrc/cpu/sparse_rows.h); pixel, channel and element offsets are int64. A configuration whose
    lists would pass 2**31 - 1 is refused by the cpu backend before any tensor is touched (so
    the test costs nothing): an explicit backend='cpu' raises naming the count, auto takes the
    reference backend instead. Checked on ConvCalls, as such tensors would need > 8 GB."""
    call = _big_call(weight_shape, block, groups)
    with pytest.raises(RuntimeError, match=re.escape(what) + ".*int32"):
        rsk_backends.resolve("cpu", call)
    assert rsk_backends.choose(call)[0].name == "reference"


def test_int32_guard_accepts_the_largest_fitting_filter():
    cpu = rsk_backends.get_backend("cpu")
    fits = _big_call((1, 2**31 - 2, 1, 1))
    assert not [r for r in cpu.not_supported_reasons(fits) if "int32" in r]
    over = _big_call((1, 2**31 - 1, 1, 1))
    assert [r for r in cpu.not_supported_reasons(over) if "int32" in r]
