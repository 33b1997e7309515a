"""torch.compile(fullgraph=True) of rsk_conv2d and RSKConv2d matches eager, forward and backward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch._inductor.config

import rskcnn

from conftest import BACKENDS, ConvConfig, assert_close, leaf_copy, make_inputs

CFG = ConvConfig(n=2, cin=6, cout=8, h=9, w=7, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                 dilation=(2, 1), groups=2, granularity="block", block_size=(3, 5), keep_prob=0.5)
RED = 3 * 6 * 2 * 4 * 7


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _run(fn, cfg, inp):
    x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
    y = fn(x, w, inp.mask, b)
    y.backward(inp.grad_output)
    return y.detach(), x.grad, w.grad, b.grad


def _function(cfg, backend):
    def f(x, w, mask, b):
        return rskcnn.rsk_conv2d(x, w, mask, b, cfg.stride, cfg.padding, cfg.dilation, cfg.groups,
                                 block=cfg.block, scale=cfg.scale, backend=backend)

    return f


def _check_same(compiled, eager, dtype=torch.float32):
    for name, c, e in zip(("out", "grad_input", "grad_weight", "grad_bias"), compiled, eager):
        assert c.shape == e.shape, name
        assert_close(c, e, dtype, RED, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_function_fullgraph(backend):
    inp = make_inputs(CFG, torch.float32)
    f = _function(CFG, backend)
    eager = _run(f, CFG, inp)
    compiled = _run(torch.compile(f, fullgraph=True), CFG, inp)
    _check_same(compiled, eager)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_function_fullgraph_padding_same_scaled(backend):
    cfg = dataclasses.replace(CFG, stride=1, padding="same", granularity="tap", scale=0.5)
    inp = make_inputs(cfg, torch.float32)
    f = _function(cfg, backend)
    _check_same(_run(torch.compile(f, fullgraph=True), cfg, inp), _run(f, cfg, inp))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_function_dynamic_batch(backend):
    f = _function(CFG, backend)
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for n in (2, 5):
        cfg = dataclasses.replace(CFG, n=n)
        inp = make_inputs(cfg, torch.float32)
        _check_same(_run(compiled, cfg, inp), _run(f, cfg, inp))


@pytest.mark.parametrize("scale_mode", ["paper", "inverted"])
def test_compile_module_eval(scale_mode):
    m = rskcnn.RSKConv2d(4, 6, (3, 2), stride=(2, 1), padding=1, keep_prob=0.3, scale_mode=scale_mode).eval()
    compiled = torch.compile(m, fullgraph=True)
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        assert_close(compiled(x), m(x), torch.float32, 24)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_module_train(backend):
    """Train mode samples the mask with torch.rand inside forward; that must trace in one graph.
    With inductor's fallback_random the compiled draw equals eager's for the same seed."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        m = rskcnn.RSKConv2d(4, 6, (3, 2), stride=(2, 1), padding=1, keep_prob=0.5, granularity="tap",
                             backend=backend).train()
        compiled = torch.compile(m, fullgraph=True)
        x = torch.randn(2, 4, 9, 7)
        compiled(x)  # compile once outside the seeded region

        results = []
        for fn in (compiled, m):
            m.zero_grad()
            torch.manual_seed(2024)
            xi = x.clone().requires_grad_()
            y = fn(xi)
            y.backward(torch.ones_like(y))
            results.append((y.detach(), xi.grad, m.weight.grad.clone(), m.bias.grad.clone()))
        _check_same(*results)

        torch.manual_seed(1)
        a = compiled(x)
        b = compiled(x)
    assert not torch.equal(a, b), "compiled train mode must draw a fresh mask each call"


# --------------------------------------------------------------------------- no recompilation
# A schedule sets module.keep_prob every epoch; that must change data, never the graph.
# CompileCounterWithBackend("aot_eager") counts the graphs Dynamo hands over and runs them
# through AOTAutograd (fake kernels, autograd) without inductor's compile time.

MODULE_BACKENDS = [*BACKENDS, pytest.param("auto", id="auto")]
KEEP_SEQUENCE = (1.0, 0.5, 0.25, 1.0, 0.7)  # away from 1, between values, back to 1, away again


def _small_model(backend, **options):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        rskcnn.RSKConv2d(4, 6, (3, 2), padding=(1, 0), granularity="element", backend=backend, **options),
    )


def _eager_and_compiled_step(model, compiled, x, seed):
    results = []
    for fn in (model, compiled):
        model.zero_grad()
        torch.manual_seed(seed)
        y = fn(x)
        y.backward(torch.ones_like(y))
        results.append((y.detach(), model[2].weight.grad.clone(), model[0].weight.grad.clone()))
    return results


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_setting_keep_prob_never_recompiles(backend):
    """Train and eval under fullgraph; keep_prob goes 1 -> 0.5 -> 0.25 -> 1 -> 0.7 in each mode.
    After the first call of each mode no graph is compiled again (the train/eval switch is a
    real change, as for nn.Dropout); every compiled step equals eager with the same RNG seed."""
    model = _small_model(backend).train()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x = torch.randn(2, 3, 5, 4)
    counts = []
    for i, p in enumerate(KEEP_SEQUENCE):
        model[2].keep_prob = p
        (y_e, gw_e, g0_e), (y_c, gw_c, g0_c) = _eager_and_compiled_step(model, compiled, x, seed=100 + i)
        counts.append(counter.frame_count)
        assert_close(y_c, y_e, torch.float32, 24, msg=f"train output at keep_prob={p}")
        assert_close(gw_c, gw_e, torch.float32, 40, msg=f"RSK weight grad at keep_prob={p}")
        assert_close(g0_c, g0_e, torch.float32, 40, msg=f"first conv weight grad at keep_prob={p}")
    assert counts[0] >= 1 and counts == [counts[0]] * len(counts), f"train: graphs compiled so far {counts}"

    model.eval()
    with torch.no_grad():
        for p in KEEP_SEQUENCE:
            model[2].keep_prob = p
            assert_close(compiled(x), model(x), torch.float32, 24, msg=f"eval output at keep_prob={p}")
            counts.append(counter.frame_count)
    eval_counts = counts[len(KEEP_SEQUENCE):]
    assert eval_counts[0] > counts[0] and eval_counts == [eval_counts[0]] * len(eval_counts), (
        f"eval: graphs compiled so far {eval_counts} (train ended at {counts[0]})")


def test_keep_prob_one_compiled_equals_conv2d():
    """Traced code runs the masked path at keep_prob=1 (all-true mask, scale 1): same values as nn.Conv2d."""
    rsk = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=1.0, backend="reference")
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    conv.load_state_dict(rsk.state_dict())
    compiled = torch.compile(rsk, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 4, 6, 5)
    for mode in (True, False):
        rsk.train(mode)
        torch.testing.assert_close(compiled(x), conv(x), rtol=0, atol=0)


def test_eager_keep_prob_one_takes_the_conv2d_shortcut(monkeypatch):
    """Eager keep_prob=1 must stay as cheap as nn.Conv2d: no mask is drawn, no rskcnn op runs."""
    rsk = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=1.0).train()
    calls = []
    monkeypatch.setattr(rskcnn.modules, "rsk_conv2d", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(rsk, "sample_mask", lambda: calls.append(2))
    y = rsk(torch.randn(1, 4, 5, 5))
    assert y.shape == (1, 6, 5, 5) and calls == []


def test_mask_seed_compiles_and_matches_eager_under_inductor():
    """Seeded masks are integer tensor ops inside the graph: inductor's code must draw exactly
    eager's masks (no int64 overflow differences), advance the counter, and not recompile."""
    eager = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=0.5, granularity="tap", mask_seed=12345)
    twin = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=0.5, granularity="tap", mask_seed=12345)
    twin.load_state_dict(eager.state_dict())
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(twin, backend=counter, fullgraph=True)
    x = torch.randn(2, 4, 6, 5)
    outputs, counts = [], []
    for p in (0.5, 0.3, 1.0, 0.8):
        eager.keep_prob = twin.keep_prob = p
        y_e, y_c = eager(x), compiled(x)
        assert_close(y_c, y_e, torch.float32, 36, msg=f"keep_prob={p}")
        outputs.append(y_c)
        counts.append(counter.frame_count)
    assert int(twin.mask_step) == int(eager.mask_step) == 4
    assert not torch.equal(outputs[0], outputs[1]), "the seeded mask must change every step"
    assert counts == [counts[0]] * 4, f"graphs compiled so far {counts}"


def test_generator_under_fullgraph_raises_naming_mask_seed():
    """Dynamo cannot trace torch.rand(generator=...). Under fullgraph the module says so and
    names the alternative; without fullgraph the forward falls back to eager and works."""
    m = rskcnn.RSKConv2d(4, 6, 3, padding=1, keep_prob=0.5, generator=torch.Generator().manual_seed(3))
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(RuntimeError, match=r"mask_seed"):
        torch.compile(m, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()
    expected_mask = rskcnn.sample_mask(m.weight.shape, 0.5, m.block, generator=torch.Generator().manual_seed(3))
    y = torch.compile(m, backend="eager")(x)
    expected = torch.nn.functional.conv2d(x, m.weight * expected_mask, m.bias, padding=1)
    assert_close(y, expected, torch.float32, 36)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mode='reduce-overhead' (CUDA graphs) needs a CUDA device")
@pytest.mark.parametrize("seeded", [False, True], ids=["global_rng", "mask_seed"])
def test_reduce_overhead_draws_a_fresh_mask_every_step(seeded):
    """Under CUDA graphs the mask must not be baked into the graph: replays draw new masks."""
    options = dict(mask_seed=5) if seeded else {}
    m = rskcnn.RSKConv2d(8, 8, 3, padding=1, keep_prob=0.5, device="cuda", **options).train()
    compiled = torch.compile(m, mode="reduce-overhead", fullgraph=True)
    x = torch.randn(2, 8, 6, 6, device="cuda")
    outs = []
    for _ in range(4):
        y = compiled(x)
        outs.append(y.detach().clone())
    assert all(not torch.equal(a, b) for a, b in zip(outs, outs[1:])), "a mask repeated between replays"
    m.keep_prob = 1.0
    dense = torch.nn.functional.conv2d(x, m.weight, m.bias, padding=1)
    assert_close(compiled(x).detach(), dense, torch.float32, 72)
