"""``RSKConv2d``: an ``nn.Conv2d`` whose training forward drops random kernel weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backends import BACKEND_NAMES, get_backend
from .functional import rsk_conv2d
from .masks import (GRANULARITIES, block_shape, check_law, check_seed, exact_keep_count, keep_fraction, mask_rows,
                    sample_mask)

SCALE_MODES = ("paper", "inverted")


def check_keep_prob(keep_prob) -> float:
    if isinstance(keep_prob, bool) or not isinstance(keep_prob, (int, float)):
        raise TypeError(f"keep_prob must be a float in (0, 1], got {keep_prob!r}")
    if not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    return float(keep_prob)


class RSKConv2d(nn.Conv2d):
    """A randomly-sparse-kernel convolution (Feng, He, Li, CVIT 2024).

    Training: every forward draws a fresh block mask ``M`` and computes ``conv(x, W * M) + b``
    (``scale_mode='paper'``) or ``conv(x, W * M / q) + b`` (``'inverted'``). Eval: a dense
    ``conv(x, W * q) + b`` (``'paper'``) or ``conv(x, W) + b`` (``'inverted'``). ``q`` is the
    fraction of mask entries kept in expectation (:meth:`keep_fraction`): ``keep_prob`` under
    the default ``law='bernoulli'`` (each entry kept independently with probability
    ``keep_prob``, the paper's), ``k / n`` under ``law='exact'``, where every mask row of ``n``
    units (the attribute ``mask_rows = (rows, n)``, from :func:`rskcnn.masks.mask_rows`: a row
    is one output block-row's entries ``M[o]``, or for ``filter`` granularity the filters of one
    conv group) keeps exactly ``k = max(1, round(keep_prob * n))`` of them, drawn uniformly
    without replacement, fresh every step. ``keep_prob=1`` is exactly ``nn.Conv2d``.

    The constructor is ``nn.Conv2d``'s plus ``keep_prob``, ``granularity`` (one of
    ``element``, ``tap``, ``filter``, ``block``), ``block_size`` (``(bo, bi)`` for ``block``),
    ``scale_mode``, ``law`` (``bernoulli`` or ``exact``), ``backend`` and one of two sources of
    reproducible masks:

    * ``generator``: a ``torch.Generator`` the masks are drawn from (eager only: torch.compile
      cannot trace ``torch.rand(generator=...)``, and raises naming ``mask_seed``).
    * ``mask_seed``: an int. The mask of the ``k``-th training forward is a pure function of
      ``(mask_seed, k)`` (:func:`rskcnn.masks.counter_uniform`), so it traces under
      ``torch.compile(fullgraph=True)``, is the same on every device, and every DDP rank with
      the same ``mask_seed`` draws the same masks (pass ``seed + rank`` for different ones).
      ``k`` is the int64 buffer ``mask_step``, which is then in the state_dict, so a
      checkpoint resumes the mask sequence.

    Without either, masks come from torch's global RNG, so each DDP rank draws its own masks
    as long as the ranks' RNGs are seeded differently.

    Under ``law='exact'`` the layer passes the static kept count ``k`` to
    :func:`rskcnn.rsk_conv2d` as ``kept_per_row`` (in eager mode always; under torch.compile
    only to a named backend that uses it, such as ``compact``, which then recompiles when a new
    ``keep_prob`` changes ``k``).

    The state_dict is exactly ``nn.Conv2d``'s (plus ``mask_step`` with ``mask_seed``; a
    plain ``nn.Conv2d`` state_dict still loads strictly).
    Input ``(N, Cin, H, W)`` or ``(Cin, H, W)``, output ``(N, Cout, OH, OW)`` or ``(Cout, OH, OW)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        keep_prob: float = 0.5,
        granularity: str = "element",
        block_size: tuple[int, int] = (32, 32),
        scale_mode: str = "paper",
        law: str = "bernoulli",
        generator: torch.Generator | None = None,
        mask_seed: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device, dtype,
        )
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        check_law(law)
        if backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if mask_seed is not None:
            check_seed(mask_seed, "mask_seed")
            if generator is not None:
                raise ValueError("RSKConv2d: pass generator or mask_seed, not both")
        self.granularity = granularity
        self.block_size = tuple(block_size)
        self.block = block_shape(granularity, self.weight.shape, self.block_size)
        self.scale_mode = scale_mode
        self.law = law
        # (rows, n) of the exact law: static, so the kept count per row is known without the mask.
        self.mask_rows = mask_rows(self.weight.shape, self.block, groups)
        self.generator = generator
        self._mask_seed = mask_seed
        self.backend = backend
        # A tensor, so that a schedule changing keep_prob changes data, not code that
        # torch.compile would have to guard on. float64 so that a float64 layer scales by
        # exactly keep_prob. Not persistent: the state_dict stays nn.Conv2d's.
        self.register_buffer("keep_prob_tensor", torch.empty((), dtype=torch.float64, device=device),
                             persistent=False)
        # Training forwards so far: the counter of seeded masks (persistent only then).
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.int64, device=device),
                             persistent=mask_seed is not None)
        self.keep_prob = keep_prob

    @property
    def mask_seed(self) -> int | None:
        return self._mask_seed

    @property
    def keep_prob(self) -> float:
        return self._keep_prob

    @keep_prob.setter
    def keep_prob(self, value: float) -> None:
        self._keep_prob = check_keep_prob(value)
        self.keep_prob_tensor.fill_(self._keep_prob)
        # A plain int (what torch.compile guards on, when it is passed to a backend at all).
        self._exact_keep_count = exact_keep_count(self._keep_prob, self.mask_rows[1])

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.keep_prob_tensor.dtype != torch.float64:  # .half() and co. must not round keep_prob
            self.keep_prob_tensor = torch.full((), self._keep_prob, dtype=torch.float64,
                                               device=self.keep_prob_tensor.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # A plain nn.Conv2d state_dict has no mask_step; keep the current counter.
        if prefix + "mask_step" in missing_keys:
            missing_keys.remove(prefix + "mask_step")

    def sample_mask(self) -> torch.Tensor:
        """A fresh bool mask of shape ``ceil(weight.shape / block)``; with ``mask_seed`` the
        mask of step ``mask_step``, which it then advances."""
        if self._mask_seed is not None:
            step = self.mask_step.clone()
            self.mask_step.add_(1)
            return sample_mask(self.weight.shape, self.keep_prob_tensor, self.block, seed=self._mask_seed,
                               step=step, device=self.weight.device, law=self.law, groups=self.groups)
        if self.generator is not None and torch.compiler.is_compiling():
            raise RuntimeError(
                "RSKConv2d(generator=...) cannot be traced by torch.compile (Dynamo does not support "
                "torch.rand(generator=...)); use RSKConv2d(mask_seed=<int>) for reproducible masks under "
                "torch.compile, or leave the generator out"
            )
        return sample_mask(self.weight.shape, self.keep_prob_tensor, self.block,
                           generator=self.generator, device=self.weight.device, law=self.law, groups=self.groups)

    def _kept_per_row(self) -> int | None:
        """Under ``law='exact'``, the units every mask row keeps, k, for ``rsk_conv2d``'s
        ``kept_per_row`` (a backend may then build static-shape index lists without a sync).
        Eager: always. Under torch.compile, k becomes a constant of the graph, so a keep_prob
        change that changes k recompiles; it is then passed only to a backend the layer names
        that uses it (``compact``), so auto and the other backends never recompile on a schedule."""
        if self.law != "exact":
            return None
        if torch.compiler.is_compiling() and (self.backend == "auto"
                                              or not get_backend(self.backend).uses_kept_per_row):
            return None
        return self._exact_keep_count

    def keep_fraction(self) -> torch.Tensor:
        """The expected kept fraction of the mask, as a float64 0-dim tensor on the module's
        device: ``keep_prob`` (``bernoulli``) or the realised ``k / n`` of a row (``exact``).
        Both scale modes scale by it, so they stay unbiased under either law; computed from
        the buffer, so a new keep_prob neither syncs nor recompiles."""
        return keep_fraction(self.keep_prob_tensor, self.mask_rows[1], self.law)

    def _scaled_weight(self, divide: bool) -> torch.Tensor:
        """``weight * keep_fraction()`` (or ``/``), computed in float32 or wider and cast back,
        so a float16 layer does not round the fraction to float16 first."""
        w = self.weight
        compute = torch.promote_types(w.dtype, torch.float32)
        p = self.keep_fraction().to(compute)
        scaled = w.to(compute) / p if divide else w.to(compute) * p
        return scaled.to(w.dtype)

    def eval_weight(self) -> torch.Tensor:
        """The weight of the dense eval-time convolution."""
        if self.scale_mode == "paper":
            return self._scaled_weight(divide=False)
        return self.weight

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # keep_prob == 1 is nn.Conv2d; eager takes that shortcut. Traced code never reads the
        # Python float: it runs the general path (an all-true mask, a scale of 1, the same
        # values), so setting keep_prob, to or from 1 included, never recompiles.
        if not torch.compiler.is_compiling() and self._keep_prob == 1.0:
            if self.training and self._mask_seed is not None:
                self.mask_step.add_(1)  # the seeded sequence stays aligned with compiled runs
            return super().forward(input)
        if not self.training:
            return self._conv_forward(input, self.eval_weight(), self.bias)
        weight = self._scaled_weight(divide=True) if self.scale_mode == "inverted" else self.weight
        bias = self.bias
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        # The keep probability guides auto on a GPU; under torch.compile it is left out, so
        # that changing it never recompiles.
        expected_keep = None if torch.compiler.is_compiling() else keep_fraction(
            self._keep_prob, self.mask_rows[1], self.law)
        return rsk_conv2d(input, weight, self.sample_mask(), bias, self.stride, padding, self.dilation,
                          self.groups, block=self.block, backend=self.backend, expected_keep=expected_keep,
                          kept_per_row=self._kept_per_row())

    def extra_repr(self) -> str:
        parts = [super().extra_repr(), f"keep_prob={self.keep_prob}", f"granularity={self.granularity!r}"]
        if self.granularity == "block":
            parts.append(f"block_size={self.block_size}")
        if self.scale_mode != "paper":
            parts.append(f"scale_mode={self.scale_mode!r}")
        if self.law != "bernoulli":
            parts.append(f"law={self.law!r}")
        if self._mask_seed is not None:
            parts.append(f"mask_seed={self._mask_seed}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)
