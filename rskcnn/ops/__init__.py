"""The op contract of rskcnn: open this package first.

rskcnn's convolutions run as registered torch ops, in *trios* of a forward op and its two
gradient ops, all with the schemas of :mod:`rskcnn.ops.schemas` (which also says what they
compute and the tensor shapes):

=================================  =====================================  ==========================
trio                               kernels                                defined in
=================================  =====================================  ==========================
``rskcnn::masked_conv2d*``         C++ (``csrc/cpu``, ``csrc/cuda``)       :mod:`rskcnn.ops.cpp`
``rskcnn::triton_conv2d*``         Triton (:mod:`rskcnn.triton_kernels`)   :mod:`rskcnn.ops.triton`
``rskcnn::filter_compact_conv2d``  ATen (oneDNN/cuDNN ``conv2d``)          :mod:`rskcnn.ops.compact`
=================================  =====================================  ==========================

Each trio gets the same fake kernels and autograd (:mod:`rskcnn.ops.rules`) and an autocast
rule (:mod:`rskcnn.ops.autocast`). ``rskcnn`` imports :mod:`rskcnn.ops.cpp` when the
extension ``rskcnn._C`` is built; the ``triton`` backend imports :mod:`rskcnn.ops.triton` on
first use (it imports Triton). ``filter_compact_conv2d`` (the ``compact`` backend's, for
``filter`` masks) is a single op, not a trio: it takes the kept filters as an index list
(schema :data:`~rskcnn.ops.schemas.FILTER_COMPACT`) and is ``CompositeImplicitAutograd``, so its
plain ATen body gives fake tensors, autograd, double backward and autocast without rules of
its own. Masks are drawn outside the ops, so every op is a
deterministic function of its inputs (gradcheck, opcheck, activation recompute and CUDA
graphs rely on it).

Adding an argument to the contract: the strings of :mod:`rskcnn.ops.schemas`, the kernels
of each trio (C++ signatures in ``csrc/op_kernels.h``), the rules, and the backends that
call the ops (:mod:`rskcnn.backends`).
"""

from .schemas import CPP_OPS, PASSES, TRITON_OPS, OpTrio

__all__ = ["CPP_OPS", "PASSES", "TRITON_OPS", "OpTrio"]
