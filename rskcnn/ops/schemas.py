"""The schemas of rskcnn's ops: the one place where their arguments are written down.

A *trio* is a forward op and its two gradient ops. Every trio computes, with
``expand(mask, block)`` the elementwise mask a block mask stands for (:mod:`rskcnn.masks`):

* ``forward``:     ``y = F.conv2d(input, weight * expand(mask, block) * scale, bias, stride, padding, dilation, groups)``
* ``grad_input``:  ``d(loss)/d(input)`` given ``grad_output = d(loss)/d(y)``; weights outside the mask are never read
* ``grad_weight``: ``d(loss)/d(weight)``; exactly 0 outside the mask, where nothing is computed

Shapes: input ``(N, Cin, H, W)``, weight ``(Cout, Cin/groups, KH, KW)``, mask bool
``ceil(weight.shape / block)``, bias ``(Cout,)``, output/grad_output ``(N, Cout, OH, OW)``.
``padding`` is a symmetric pair of ints here; :func:`rskcnn.rsk_conv2d` resolves
``'same'``/``'valid'`` before calling an op.

Two trios share these schemas: ``masked_conv2d*`` (C++ kernels of ``csrc/``, CPU and CUDA
dispatch keys) and ``triton_conv2d*`` (:mod:`rskcnn.triton_kernels`). Adding an argument
to the contract means editing the strings below, the kernels of each trio, and the rules
of :mod:`rskcnn.ops.rules`; ``tests/test_op_contract.py`` checks that every registered
op carries exactly these schemas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NAMESPACE = "rskcnn"

_CONV_ARGS = "int[2] stride, int[2] padding, int[2] dilation, int groups, int[4] block, float scale"

# The argument lists (name excluded), in the form torch.library.custom_op/triton_op take.
FORWARD = f"(Tensor input, Tensor weight, Tensor mask, Tensor? bias, {_CONV_ARGS}) -> Tensor"
GRAD_INPUT = f"(Tensor grad_output, Tensor weight, Tensor mask, SymInt[4] input_size, {_CONV_ARGS}) -> Tensor"
GRAD_WEIGHT = f"(Tensor grad_output, Tensor input, Tensor mask, int[4] weight_size, {_CONV_ARGS}) -> Tensor"

# The CUDA kernels' tile plans (csrc/), exposed so that tests can check them on any device:
# (order, out_entries, out_counts, in_entries, in_counts). Not differentiable.
PLAN_TILES = ("(Tensor mask, int[4] weight_size, int groups, int[4] block, int[4] tile_shape, bool reorder) -> "
              "(Tensor, Tensor, Tensor, Tensor, Tensor)")

# The compact op (rskcnn/ops/compact.py, the ``compact`` backend): a ``filter`` mask's kept
# filters as one dense convolution,
#   y = F.conv2d(input, weight * expand(mask) * scale, bias, ...)  with mask[o] = o in kept_filters,
# where kept_filters is int64 (groups * k,): k sorted global output-channel indices per conv
# group, group-major, each inside its group. Dropped channels get the bias (0 without one).
# A CompositeImplicitAutograd op: autograd differentiates its ATen body (double backward too).
FILTER_COMPACT_OP = "filter_compact_conv2d"
FILTER_COMPACT = ("(Tensor input, Tensor weight, Tensor kept_filters, Tensor? bias, int[2] stride, int[2] padding, "
                  "int[2] dilation, int groups, float scale) -> Tensor")


@dataclass(frozen=True)
class OpTrio:
    """The names (without namespace) of a forward op and its two gradient ops."""

    forward: str
    grad_input: str
    grad_weight: str

    def qualified(self, which: str) -> str:
        """``"rskcnn::<name>"`` of ``which`` (``"forward"``, ``"grad_input"`` or ``"grad_weight"``)."""
        return f"{NAMESPACE}::{getattr(self, which)}"

    def op(self, which: str) -> torch._ops.OpOverload:
        """The registered overload of ``which``; raises AttributeError before registration."""
        return getattr(getattr(torch.ops, NAMESPACE), getattr(self, which)).default

    def schemas(self) -> dict[str, str]:
        """``{which: argument list}`` of the trio's three ops."""
        return {"forward": FORWARD, "grad_input": GRAD_INPUT, "grad_weight": GRAD_WEIGHT}


PASSES = ("forward", "grad_input", "grad_weight")

CPP_OPS = OpTrio("masked_conv2d", "masked_conv2d_grad_input", "masked_conv2d_grad_weight")
TRITON_OPS = OpTrio("triton_conv2d", "triton_conv2d_grad_input", "triton_conv2d_grad_weight")
