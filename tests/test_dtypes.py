"""Low-precision dtypes, autocast and memory formats of RSKConv2d and the rskcnn ops.

* float16/bfloat16 run wherever a backend takes them (on the CPU: ``reference``; ``auto``
  falls back to it), and a backend that does not take them says so, naming the dtype.
* Under ``torch.autocast`` the module's output has autocast's dtype, as ``nn.Conv2d``'s does;
  the C++ op gets it from its autocast rule (rskcnn/autocast.py), computing in float32.
* Masks and keep_prob scales are computed in float32 or wider, also for float16 layers whose
  mask has more entries than float16 can count (65504).
* channels_last in gives channels_last out (and channels_last input gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn import backends as rsk_backends

from conftest import BACKENDS, assert_close

MODULE_BACKENDS = [*BACKENDS, pytest.param("auto", id="auto")]
LOW = [pytest.param(torch.float16, id="float16"), pytest.param(torch.bfloat16, id="bfloat16")]
CPU = torch.device("cpu")


def _reasons(backend: str, dtype: torch.dtype, device=CPU) -> list[str]:
    """Why ``backend`` cannot run a small convolution in ``dtype`` (empty when it can)."""
    call = rsk_backends.ConvCall(device=torch.device(device), dtype=dtype, input_shape=(2, 4, 6, 5),
                                 weight_shape=(6, 4, 3, 3), block=(1, 1, 1, 1), stride=(1, 1), padding=(1, 1),
                                 dilation=(1, 1), groups=1)
    if backend == "auto":
        return []
    return rsk_backends.get_backend(backend).not_supported_reasons(call)


def _full_mask(mask, block, weight_shape):
    return rskcnn.expand_mask(mask, block, weight_shape)


# --------------------------------------------------------------------------- float16 / bfloat16


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_low_precision_module_train_and_eval(backend, low):
    """Train output and gradients against float32 math on the same low-precision values and
    mask; eval against the float32-scaled weight rounded once."""
    seed, p = 77, 0.5
    m = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=p, granularity="tap", mask_seed=seed, backend=backend,
                         dtype=low)
    x = torch.randn(2, 4, 6, 5, dtype=low, requires_grad=True)
    if _reasons(backend, low):
        with pytest.raises(RuntimeError, match=str(low).removeprefix("torch.")):
            m(x)
        return
    mask = rskcnn.sample_mask(m.weight.shape, p, m.block, seed=seed, step=0)
    y = m(x)
    assert y.dtype == low
    go = torch.randn_like(y)
    y.backward(go)

    x32 = x.detach().float().requires_grad_()
    w32 = m.weight.detach().float().requires_grad_()
    full = _full_mask(mask, m.block, m.weight.shape)
    y32 = F.conv2d(x32, w32 * full, m.bias.detach().float(), padding=1)
    y32.backward(go.float())
    assert_close(y, y32, low, 36, msg="train output")
    assert m.weight.grad.dtype == low and x.grad.dtype == low
    assert_close(x.grad, x32.grad, low, 54, msg="grad_input")
    assert_close(m.weight.grad, w32.grad, low, 60, msg="grad_weight")
    assert (m.weight.grad[~full] == 0).all(), "masked weights got a gradient"

    m.eval()
    with torch.no_grad():
        y_eval = m(x.detach())
        expected = F.conv2d(x.detach().float(), (m.weight.float() * p).to(low).float(), m.bias.float(), padding=1)
    assert y_eval.dtype == low
    assert_close(y_eval, expected, low, 36, msg="eval output")


@pytest.mark.parametrize("low", LOW)
def test_auto_takes_reference_for_low_precision_on_cpu(low):
    call = rsk_backends.ConvCall(device=CPU, dtype=low, input_shape=(2, 4, 6, 5), weight_shape=(6, 4, 3, 3),
                                 block=(1, 4, 3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
                                 kept_fraction=0.1)
    chosen, skipped = rsk_backends.choose(call)
    assert chosen.name == "reference"
    if "cpu" in rskcnn.available_backends(CPU):
        assert any(str(low) in r for r in skipped["cpu"]), skipped


# --------------------------------------------------------------------------- scales and counts


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("scale_mode", ["paper", "inverted"])
def test_keep_prob_scaling_is_computed_in_float32(low, scale_mode):
    """keep_prob = 0.3 is not a float16/bfloat16 number: the scaled weight must be the float32
    product rounded once, not the product with a rounded keep_prob."""
    p = 0.3
    m = rskcnn.RSKConv2d(8, 8, 3, keep_prob=p, scale_mode=scale_mode, dtype=low, mask_seed=1,
                         backend="reference")
    w32 = m.weight.detach().float()
    if scale_mode == "paper":
        torch.testing.assert_close(m.eval_weight(), (w32 * p).to(low), rtol=0, atol=0)
    else:
        captured = {}
        original = rskcnn.modules.rsk_conv2d

        def spy(input, weight, *args, **kwargs):
            captured["weight"] = weight.detach()
            return original(input, weight, *args, **kwargs)

        rskcnn.modules.rsk_conv2d = spy
        try:
            m.train()(torch.randn(1, 8, 5, 5, dtype=low))
        finally:
            rskcnn.modules.rsk_conv2d = original
        torch.testing.assert_close(captured["weight"], (w32 / p).to(low), rtol=0, atol=0)


@pytest.mark.parametrize("source", ["mask_seed", "global_rng"])
def test_float16_layer_whose_mask_has_more_than_65504_entries(source):
    """64 x 128 x 3 x 3 = 73728 mask entries (element granularity): the draw, the comparison
    with keep_prob and the count of kept entries must not pass through float16."""
    p = 0.25
    options = dict(mask_seed=2024) if source == "mask_seed" else {}
    m = rskcnn.RSKConv2d(128, 64, 3, padding=1, keep_prob=p, dtype=torch.float16, **options)
    assert m.weight.numel() == 73728 > 65504
    mask = m.sample_mask()
    assert mask.dtype == torch.bool and mask.numel() == 73728
    # Binomial(73728, 0.25): sd 118 entries. Both halves, so the tail past 65504 is drawn too.
    for part in (mask.flatten()[:36864], mask.flatten()[36864:]):
        kept = int(part.sum())
        assert abs(kept - p * part.numel()) < 6 * (part.numel() * p * (1 - p)) ** 0.5, kept

    x = torch.randn(1, 128, 6, 6, dtype=torch.float16)
    state = torch.random.get_rng_state()
    y = m.train()(x)
    torch.random.set_rng_state(state)
    assert torch.isfinite(y).all()
    if source == "mask_seed":
        mask = rskcnn.sample_mask(m.weight.shape, p, m.block, seed=2024, step=1)
    else:
        mask = rskcnn.sample_mask(m.weight.shape, m.keep_prob_tensor, m.block)
    full = _full_mask(mask, m.block, m.weight.shape)
    expected = F.conv2d(x.float(), m.weight.float() * full, m.bias.float(), padding=1)
    assert_close(y, expected, torch.float16, 128 * 9, msg="float16 output")


def test_uniforms_are_float32_even_when_the_default_dtype_is_float16():
    """float16 uniforms are multiples of 2**-11, so P(u < 1e-4) would be P(u == 0) ~ 4.9e-4,
    about 5x keep_prob: 360000 draws would keep ~176 entries instead of ~36 (sd 6)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        m = rskcnn.RSKConv2d(40, 40, 3, keep_prob=1e-4)
        kept = sum(int(m.sample_mask().sum()) for _ in range(25))
    finally:
        torch.set_default_dtype(previous)
    assert 25 * 40 * 40 * 9 == 360000
    assert kept < 80, f"{kept} of 360000 entries kept at keep_prob=1e-4: uniforms drawn in float16?"


# --------------------------------------------------------------------------- autocast


def _autocast_model(backend, training: bool):
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        rskcnn.RSKConv2d(8, 8, 3, padding=1, keep_prob=0.4, granularity="filter", backend=backend),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
    )
    return model.train(training)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("amp_dtype", LOW)
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_autocast_cpu_gives_autocast_dtype_like_conv2d(backend, amp_dtype, training):
    """The RSK layer's output dtype equals nn.Conv2d's under torch.autocast('cpu'); values agree
    with float32 math; parameters keep float32 gradients."""
    model = _autocast_model(backend, training)
    x = torch.randn(2, 3, 6, 6)
    seen = {}
    model[2].register_forward_hook(lambda mod, inp, out: seen.update(rsk_in=inp[0].dtype, rsk=out))
    model[0].register_forward_hook(lambda mod, inp, out: seen.update(conv=out.dtype))
    state = torch.random.get_rng_state()
    with torch.autocast("cpu", dtype=amp_dtype):
        y = model(x)
    assert seen["conv"] == amp_dtype and seen["rsk_in"] == amp_dtype
    assert seen["rsk"].dtype == amp_dtype, f"RSKConv2d under autocast returned {seen['rsk'].dtype}"
    y.float().sum().backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None and prm.grad.dtype == torch.float32, name

    torch.random.set_rng_state(state)
    with torch.no_grad():
        y32 = model(x)
    assert_close(y, y32, amp_dtype, 72, msg="autocast vs float32")


@pytest.mark.parametrize("amp_dtype", LOW)
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_functional_under_autocast_takes_mixed_dtypes_like_conv2d(backend, amp_dtype):
    """rsk_conv2d called directly with an autocast-dtype input and a float32 weight, as F.conv2d
    accepts under autocast: the output has F.conv2d's dtype and its values."""
    x = torch.randn(2, 4, 6, 5).to(amp_dtype)
    w, b = torch.randn(6, 4, 3, 3), torch.randn(6)
    mask = rskcnn.sample_mask(w.shape, 0.5, (1, 4, 1, 1))
    with torch.autocast("cpu", dtype=amp_dtype):
        y = rskcnn.rsk_conv2d(x, w, mask, b, padding=1, block=(1, 4, 1, 1), backend=backend)
        expected = F.conv2d(x, w * rskcnn.expand_mask(mask, (1, 4, 1, 1), w.shape), b, padding=1)
    assert y.dtype == expected.dtype == amp_dtype
    assert_close(y, expected.float(), amp_dtype, 36)


@pytest.mark.parametrize("amp_dtype", LOW)
def test_autocast_rule_of_the_cpp_op(amp_dtype):
    """torch.ops.rskcnn.masked_conv2d under autocast: float32 math, output in autocast's dtype;
    float64 inputs are left alone, as autocast leaves float64 ops alone."""
    if "cpu" not in rskcnn.available_backends(CPU):
        pytest.skip("the C++ ops are not built: " + rsk_backends.unavailable_reasons(CPU).get("cpu", "?"))
    x = torch.randn(2, 4, 6, 5, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    mask = rskcnn.sample_mask(w.shape, 0.5, (1, 1, 1, 1))
    args = (mask, None, (1, 1), (1, 1), (1, 1), 1, (1, 1, 1, 1), 1.0)
    with torch.autocast("cpu", dtype=amp_dtype):
        y = torch.ops.rskcnn.masked_conv2d(x, w, *args)
        y64 = torch.ops.rskcnn.masked_conv2d(x.double(), w.double(), *args)
    assert y.dtype == amp_dtype and y64.dtype == torch.float64
    expected = torch.ops.rskcnn.masked_conv2d(x, w, *args)
    torch.testing.assert_close(y, expected.to(amp_dtype), rtol=0, atol=0)  # float32 math, one rounding
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_autocast_under_torch_compile():
    model = _autocast_model("auto", training=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = compiled(torch.randn(2, 3, 6, 6))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert model[2].weight.grad.dtype == torch.float32


# --------------------------------------------------------------------------- memory format


@pytest.mark.parametrize("weight_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_channels_last_in_channels_last_out(backend, weight_format):
    torch.manual_seed(5)
    m = rskcnn.RSKConv2d(4, 6, (3, 2), stride=(2, 1), padding=1, keep_prob=0.5, granularity="element",
                         mask_seed=9, backend=backend)
    if weight_format == "channels_last":
        m = m.to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 7, 6)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    assert not x_cl.is_contiguous()

    mask = rskcnn.sample_mask(m.weight.shape, 0.5, m.block, seed=9, step=0)
    y = m.train()(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last), f"train output strides {y.stride()}"
    y.backward(torch.randn_like(y))
    assert x_cl.grad.is_contiguous(memory_format=torch.channels_last), f"grad_input strides {x_cl.grad.stride()}"
    full = _full_mask(mask, m.block, m.weight.shape)
    assert_close(y, F.conv2d(x, m.weight * full, m.bias, (2, 1), 1), torch.float32, 24, msg="train values")

    with torch.no_grad():
        y_eval = m.eval()(x_cl)
    assert y_eval.is_contiguous(memory_format=torch.channels_last), f"eval output strides {y_eval.stride()}"
    assert_close(y_eval, F.conv2d(x, m.weight * 0.5, m.bias, (2, 1), 1), torch.float32, 24, msg="eval values")


# --------------------------------------------------------------------------- CUDA


def _cuda_backends() -> list:
    if not torch.cuda.is_available():
        return [pytest.param("none", marks=pytest.mark.skip(reason="no CUDA device"))]
    return [pytest.param(name, id=name) for name in [*rskcnn.available_backends("cuda"), "auto"]]


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("cuda_backend", _cuda_backends())
def test_cuda_low_precision_and_autocast(cuda_backend, low):
    if low == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 convolution")
    if _reasons(cuda_backend, low, "cuda"):
        pytest.skip(f"{cuda_backend} does not take {low}: {_reasons(cuda_backend, low, 'cuda')}")
    m = rskcnn.RSKConv2d(16, 32, 3, padding=1, keep_prob=0.5, granularity="tap", mask_seed=4,
                         backend=cuda_backend, device="cuda")
    x = torch.randn(4, 16, 10, 10, device="cuda")
    mask = rskcnn.sample_mask(m.weight.shape, 0.5, m.block, seed=4, step=0, device="cuda")
    full = _full_mask(mask, m.block, m.weight.shape)
    expected = F.conv2d(x.to(low).float(), (m.weight * full).to(low).float(), m.bias.to(low).float(), padding=1)

    y = m.to(low)(x.to(low))
    assert y.dtype == low
    assert_close(y, expected, low, 144, msg="low-precision module")

    m = m.float()
    m.mask_step.zero_()
    with torch.autocast("cuda", dtype=low):
        y = m(x)
    assert y.dtype == low
    assert_close(y, expected, low, 144, msg="autocast")
