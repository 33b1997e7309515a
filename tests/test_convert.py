"""convert (nn.Conv2d -> RSKConv2d) and revert (RSKConv2d -> nn.Conv2d with eval scaling folded in)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rskcnn

from conftest import assert_close


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 0)), nn.ReLU())
        self.out = nn.Conv2d(8, 5, 1, bias=False)
        self.linear = nn.Linear(5, 2)

    def forward(self, x):
        y = self.out(self.head(self.body(self.stem(x))))
        return self.linear(y.mean((2, 3)))


CONV_NAMES = ["stem", "body.1", "head.0", "out"]


def conv_names(model, cls):
    return [name for name, m in model.named_modules() if type(m) is cls]


def test_convert_last_replaces_only_the_last_conv():
    model = Net()
    converted = rskcnn.convert(model, 0.5)
    assert conv_names(converted, rskcnn.RSKConv2d) == ["out"]
    assert conv_names(converted, nn.Conv2d) == ["stem", "body.1", "head.0"]
    assert converted.out.keep_prob == 0.5
    # the default is a copy: the original is untouched and shares nothing
    assert conv_names(model, nn.Conv2d) == CONV_NAMES
    assert converted.out.weight is not model.out.weight
    assert torch.equal(converted.out.weight, model.out.weight)
    with torch.no_grad():
        converted.out.weight.add_(1.0)
    assert not torch.equal(converted.out.weight, model.out.weight)


def test_convert_all():
    converted = rskcnn.convert(Net(), 0.25, "all", granularity="filter", scale_mode="inverted")
    assert conv_names(converted, rskcnn.RSKConv2d) == CONV_NAMES
    assert conv_names(converted, nn.Conv2d) == []
    for name in CONV_NAMES:
        m = converted.get_submodule(name)
        assert m.keep_prob == 0.25 and m.granularity == "filter" and m.scale_mode == "inverted"
    body = converted.get_submodule("body.1")
    assert body.groups == 2 and body.padding == (1, 1)
    head = converted.get_submodule("head.0")
    assert head.stride == (2, 1) and head.kernel_size == (3, 2) and head.padding == (1, 0)
    assert converted.out.bias is None


def test_convert_list_of_names():
    converted = rskcnn.convert(Net(), 0.5, ["stem", "head.0"])
    assert conv_names(converted, rskcnn.RSKConv2d) == ["stem", "head.0"]
    assert conv_names(converted, nn.Conv2d) == ["body.1", "out"]


def test_convert_inplace_shares_parameters():
    model = Net()
    weight, bias = model.head[0].weight, model.head[0].bias
    converted = rskcnn.convert(model, 0.5, ["head.0"], inplace=True)
    assert converted is model
    assert isinstance(model.head[0], rskcnn.RSKConv2d)
    assert model.head[0].weight is weight and model.head[0].bias is bias


def test_convert_keeps_the_state_dict_and_training_flag():
    model = Net().eval()
    before = model.state_dict()
    converted = rskcnn.convert(model, 0.5, "all")
    after = converted.state_dict()
    assert list(after) == list(before)
    for key in before:
        assert torch.equal(after[key], before[key])
    assert not any(m.training for m in converted.modules())


def test_convert_passes_options():
    gen = torch.Generator().manual_seed(0)
    converted = rskcnn.convert(Net(), 0.5, ["body.1"], granularity="block", block_size=(2, 1), generator=gen)
    m = converted.get_submodule("body.1")
    assert m.block == (2, 1, 1, 1)
    assert m.generator is gen


@pytest.mark.parametrize("which", [["stem", "nope"], ["linear"], ["body"]])
def test_convert_unknown_names(which):
    with pytest.raises(ValueError, match="which|nn.Conv2d"):
        rskcnn.convert(Net(), 0.5, which)


def test_convert_bad_which_and_bad_options():
    with pytest.raises(ValueError, match="which"):
        rskcnn.convert(Net(), 0.5, "first")
    with pytest.raises(ValueError, match="keep_prob"):
        rskcnn.convert(Net(), 1.5)
    with pytest.raises(ValueError, match="granularity"):
        rskcnn.convert(Net(), 0.5, granularity="nope")


def test_convert_model_without_conv():
    with pytest.raises(ValueError, match="Conv2d"):
        rskcnn.convert(nn.Sequential(nn.Linear(2, 2)), 0.5)


@pytest.mark.parametrize("scale_mode", ["paper", "inverted"])
@pytest.mark.parametrize("granularity", ["element", "filter"])
def test_revert_gives_plain_conv_with_equal_eval_outputs(scale_mode, granularity):
    model = Net()
    rsk_model = rskcnn.convert(model, 0.3, "all", scale_mode=scale_mode, granularity=granularity).eval()
    plain = rskcnn.revert(rsk_model)
    assert conv_names(plain, rskcnn.RSKConv2d) == []
    assert not any(isinstance(m, rskcnn.RSKConv2d) for m in plain.modules())
    assert conv_names(plain, nn.Conv2d) == CONV_NAMES
    # not in place by default
    assert conv_names(rsk_model, rskcnn.RSKConv2d) == CONV_NAMES
    assert list(plain.state_dict()) == list(Net().state_dict())
    x = torch.randn(3, 3, 9, 7)
    with torch.no_grad():
        assert_close(plain.eval()(x), rsk_model(x), torch.float32, 8 * 9)
    factor = 0.3 if scale_mode == "paper" else 1.0
    for name in CONV_NAMES:
        assert_close(plain.get_submodule(name).weight, model.get_submodule(name).weight * factor, torch.float32, 1)


def test_revert_folds_scaling_into_weight():
    rsk_model = rskcnn.convert(Net(), 0.3, "last")
    plain = rskcnn.revert(rsk_model)
    assert_close(plain.out.weight, rsk_model.out.weight * 0.3, torch.float32, 1)
    inverted = rskcnn.revert(rskcnn.convert(Net(), 0.3, "last", scale_mode="inverted"))
    assert type(inverted.out) is nn.Conv2d


def test_revert_inplace():
    model = rskcnn.convert(Net(), 0.5, "all")
    out = rskcnn.revert(model, inplace=True)
    assert out is model
    assert conv_names(model, nn.Conv2d) == CONV_NAMES


def test_convert_then_revert_keep_prob_one_is_identity():
    model = Net().eval()
    back = rskcnn.revert(rskcnn.convert(model, 1.0, "all"))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_revert_keeps_padding_mode_and_geometry():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", dilation=1, stride=2))
    rsk_model = rskcnn.convert(model, 0.5).eval()
    plain = rskcnn.revert(rsk_model)
    assert plain[0].padding_mode == "reflect" and plain[0].stride == (2, 2)
    x = torch.randn(1, 2, 7, 7)
    with torch.no_grad():
        assert_close(plain(x), rsk_model(x), torch.float32, 18)
