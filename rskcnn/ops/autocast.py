"""Autocast rules for rskcnn's custom ops (registered per trio by :mod:`rskcnn.ops.cpp` and
:mod:`rskcnn.ops.triton`).

Under ``torch.autocast`` a custom op runs in whatever dtypes it is given unless it has a rule.
``nn.Conv2d`` returns autocast's dtype there, so rskcnn's convolution ops must too. torch's
own ``torch.library.register_autocast`` casts the inputs to one fixed dtype, which does not
fit kernels that support only some dtypes (the C++ CPU kernels take float32/float64, while
CPU autocast defaults to bfloat16). :func:`register_autocast_rule` takes the dtypes the
kernels run in instead:

* autocast's dtype (``torch.get_autocast_dtype(device_type)``) among ``run_dtypes``: the
  float16/bfloat16/float32 tensor arguments are cast to it and the op runs in it;
* otherwise they are cast to float32, the op runs in float32 (accumulating in float32), and
  its floating-point outputs are cast to autocast's dtype.

Either way the output has autocast's dtype. float64 arguments switch the rule off, as
autocast leaves float64 alone. The casts are ordinary autograd ops, so gradients flow back
in each argument's own dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_LOW_OR_SINGLE = (torch.float16, torch.bfloat16, torch.float32)
_libraries: dict[str, torch.library.Library] = {}


def unify_floating_dtypes(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Casts float16/bfloat16/float32 tensors to the widest dtype among them (``None`` passes)."""
    dtypes = [t.dtype for t in tensors if t is not None and t.dtype in _LOW_OR_SINGLE]
    if len(set(dtypes)) <= 1:
        return tensors
    target = dtypes[0]
    for d in dtypes[1:]:
        target = torch.promote_types(target, d)
    return tuple(t.to(target) if t is not None and t.dtype in _LOW_OR_SINGLE else t for t in tensors)


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.dtype in _LOW_OR_SINGLE and value.dtype != dtype else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _has_float64(values) -> bool:
    for v in values:
        if isinstance(v, torch.Tensor) and v.dtype == torch.float64:
            return True
        if isinstance(v, (list, tuple)) and _has_float64(v):
            return True
    return False


def register_autocast_rule(op: str, device_type: str, run_dtypes: Sequence[torch.dtype] = ()) -> None:
    """Registers the rule above for ``op`` (``"namespace::name"``, an existing operator) on
    ``device_type`` (``"cpu"``, ``"cuda"``, ...). ``run_dtypes``: the low-precision dtypes the
    op's kernels on that device compute in (e.g. ``(torch.float16, torch.bfloat16)``); empty
    means float32 only. Calling it again for the same op and device replaces the rule."""
    if not torch._C._is_autocast_available(device_type):
        raise ValueError(f"device_type {device_type!r} does not support autocast")
    run_dtypes = tuple(run_dtypes)
    if not all(isinstance(d, torch.dtype) and d.is_floating_point for d in run_dtypes):
        raise TypeError(f"run_dtypes must be floating-point torch dtypes, got {run_dtypes!r}")
    namespace, _, name = op.partition("::")
    overload = getattr(getattr(torch.ops, namespace), name).default
    key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    key = getattr(torch._C.DispatchKey, key_name)

    def rule(*args):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            if _has_float64(args):
                return overload(*args)
            dtype = torch.get_autocast_dtype(device_type)
            run = dtype if dtype in run_dtypes else torch.float32
            out = overload(*_cast(args, run))
            return out if run == dtype else _cast(out, dtype)

    # The Python dispatcher (used while torch.compile and torch.export trace) reads
    # py_kernels; eager calls go through the C++ dispatcher and the library registration.
    if overload.has_kernel_for_dispatch_key(key):
        overload.py_kernels.pop(key, None)
    overload.py_impl(key)(rule)
    lib_key = f"{op}/{key_name}"
    _libraries.pop(lib_key, None)  # dropping the old Library deregisters its kernel
    lib = torch.library.Library(namespace, "IMPL")
    lib.impl(name, lambda _keyset, *args: rule(*args), key_name, with_keyset=True)
    _libraries[lib_key] = lib

