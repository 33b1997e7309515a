"""Random geometries (hypothesis, derandomized) for every backend against the float64 oracle."""

from __future__ import annotations

import pytest
import torch

from conftest import ConvConfig
from test_parity import check_parity

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e .[test])")
st = hypothesis.strategies


@st.composite
def configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    same = draw(st.booleans()) and draw(st.booleans())
    stride = (1, 1) if same else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = "same" if same else (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    if not same:
        for d in (0, 1):
            size = (h, w)[d] + 2 * padding[d]
            hypothesis.assume(size >= dilation[d] * (kernel[d] - 1) + 1)
    granularity = draw(st.sampled_from(["element", "tap", "filter", "block"]))
    block_size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return ConvConfig(n=draw(st.integers(0, 3)), cin=cin, cout=cout, h=h, w=w, kernel=kernel, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                      granularity=granularity, block_size=block_size,
                      keep_prob=draw(st.sampled_from([0.1, 0.5, 1.0])),
                      scale=draw(st.sampled_from([1.0, 1.0, 0.5, 3.0])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_parity_random_geometry(backend, dtype):
    @hypothesis.settings(max_examples=60, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(cfg=configs())
    def check(cfg):
        check_parity(backend, cfg, dtype)

    check()
