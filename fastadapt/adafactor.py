"""Adafactor: torch.optim.Adafactor's single-tensor step, one tensor per call.

Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with
Sublinear Memory Cost"; torch.optim.Adafactor since torch 2.5) is not a
:class:`~fastadapt.rules.Rule`. A rule is an elementwise update over flat
buffers: state arrays of the parameter's shape, host scalars per step, one
pass per element, so many tensors can share one buffer and one call. Adafactor
is none of those: the second moment of a tensor of dim >= 2 is kept factored,
as ``row_var`` (shape ``(..., rows, 1)``) and ``col_var`` (``(..., 1, cols)``),
and every step needs reductions over that one tensor (row and column means of
``grad**2``, the RMS of the parameter for ``alpha`` and of the update for
the clipping denominator ``d``). Packing tensors into one buffer would mix
those reductions, so Adafactor stays out of :data:`fastadapt.RULES` (and out
of everything derived from it: the flat-buffer classes, the benchmark's rule
matrix, the tests that iterate over the registry); its kernels are in
``fastadapt.kernels.adafactor`` and its torch class updates parameter by
parameter (``fastadapt.torch.Adafactor``).
"""
import math
import numbers

import numpy as np

from . import _args
from ._arrays import is_device_array
from ._dispatch import _check_host_array

__all__ = ["adafactor_step"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_array(name, a, writes):
    if is_device_array(a):
        raise NotImplementedError(f"adafactor_step runs on the CPU only; {name} is a GPU array")
    _check_host_array(name, a, writes)
    if a.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; adafactor_step takes float32 or float64")


def state_shapes(shape):
    """torch's state shapes of a parameter of ``shape``: ``{name: shape}``."""
    if len(shape) < 2:
        return {"variance": shape}
    return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1,) + shape[-1:]}


def _check_eps(eps):
    eps1, eps2 = _args.pair("eps", eps)
    if eps1 is not None:
        eps1 = _args.real("eps[0]", eps1)
    return eps1, _args.real("eps[1]", eps2)


def _check_lr(lr):
    if not isinstance(lr, numbers.Real) and hasattr(lr, "numel") and hasattr(lr, "item"):
        if lr.numel() != 1:             # a torch tensor, as torch.optim takes it
            raise ValueError("Tensor lr must be 1-element")
        lr = lr.item()
    return _args.real("lr", lr)


def check_hyper(lr, beta2_decay, eps, d, weight_decay, maximize):
    """The hyper-parameters, checked: ``(lr, beta2_decay, (eps1, eps2), d,
    weight_decay, maximize)`` as floats (eps1 may be None) and a bool."""
    return (_check_lr(lr), _args.real("beta2_decay", beta2_decay, -math.inf, 0.0),
            _check_eps(eps), _args.real("d", d, 1.0),
            _args.real("weight_decay", weight_decay), _args.flag("maximize", maximize))


def _plan(param, grad, row_var, col_var, variance, step, lr, beta2_decay, eps, d,
          weight_decay, maximize):
    """Every check of :func:`adafactor_step`; returns the kernel's arguments,
    or None when ``param`` is empty (nothing to update)."""
    _check_array("param", param, True)
    _check_array("grad", grad, False)
    if grad.shape != param.shape or grad.dtype != param.dtype:
        raise ValueError(f"grad is {grad.dtype} {grad.shape} but param is {param.dtype} "
                         f"{param.shape}")
    given = {"row_var": row_var, "col_var": col_var, "variance": variance}
    shapes = state_shapes(param.shape)
    for name, a in given.items():
        if isinstance(a, (numbers.Number, str, bytes)):
            raise TypeError(f"adafactor_step: {name} must be an array or None, got {a!r}; "
                            "hyper-parameters are keyword-only (adafactor_step(param, grad, "
                            "..., step=1, lr=0.01))")
        if name not in shapes:
            if a is not None:
                raise ValueError(
                    f"adafactor_step: a parameter of dim {param.ndim} keeps "
                    f"{' and '.join(shapes)}, not {name} (pass {name}=None)")
            continue
        if a is None:
            raise TypeError(f"adafactor_step: a parameter of dim {param.ndim} needs {name}, "
                            f"an array of shape {shapes[name]}")
        _check_array(name, a, True)
        if a.shape != shapes[name] or a.dtype != param.dtype:
            raise ValueError(f"{name} is {a.dtype} {a.shape} but a {param.dtype} param of "
                             f"shape {param.shape} needs {param.dtype} {shapes[name]}")
    arrays = [("param", param), ("grad", grad)] + [(n, given[n]) for n in shapes]
    for i, (name, a) in enumerate(arrays):
        for other, b in arrays[i + 1:]:
            if np.shares_memory(a, b):
                raise ValueError(f"{name} and {other} share memory; each must be its own array")
    step = _args.step(step)
    lr, beta2_decay, (eps1, eps2), d, weight_decay, maximize = check_hyper(
        lr, beta2_decay, eps, d, weight_decay, maximize)
    if param.size == 0:
        return None
    kind = param.dtype.type
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    # torch's per-step scalars, as its Python floats (past 2**64 steps they
    # have reached their limits: step ** beta2_decay and 1 / sqrt(step) ~ 0)
    t = float(min(step, 2 ** 64))
    weight = t ** beta2_decay
    rho = min(lr, 1 / (t ** 0.5))
    root_numel = param.size ** 0.5
    w = kind(weight)
    rows, cols = (param.shape[-2], param.shape[-1]) if param.ndim >= 2 else (1, param.size)
    # w - 1 in the arrays' dtype, as torch's lerp computes it
    f = np.array([-1.0 if maximize else 1.0, w, w - kind(1), eps1, eps1 * eps1,
                  1 - lr * weight_decay, rows, cols, 1.0], param.dtype)
    h = np.array([eps2, rho, root_numel, d, float(abs(w) < 0.5),
                  float(weight_decay != 0), 32 // param.itemsize], np.float64)
    if param.ndim < 2:
        return "vector", (param.reshape(-1), grad.reshape(-1), variance.reshape(-1),
                          np.empty(3, param.dtype), f, h)
    batch = param.size // (rows * cols)
    return "factored", (param.reshape(batch, rows, cols), grad.reshape(batch, rows, cols),
                        row_var.reshape(batch, rows), col_var.reshape(batch, cols),
                        np.empty(batch + 3, param.dtype), f, h)


#: The update as pseudo-code (indented for a docstring), in both faces' docstrings.
PSEUDOCODE = """\
        g = -grad if maximize else grad
        beta2_t = step ** beta2_decay        # the weight of the new moment
        rho = min(lr, 1 / sqrt(step))
        alpha = max(eps2, rms(param)) * rho  # rms(x) = norm(x) / sqrt(numel)
        param *= 1 - lr * weight_decay       # when weight_decay != 0
        dim >= 2 (the last two dims are rows, cols):
            row_var = lerp(row_var, mean(g**2, over cols), beta2_t)
            col_var = lerp(col_var, mean(g**2, over rows), beta2_t)
            var = row_var * col_var / max(mean(row_var, over rows), eps1)
        dim < 2:
            variance = lerp(variance, g**2, beta2_t); var = variance
        update = g / sqrt(max(var, eps1**2))
        param -= alpha / max(1, rms(update) / d) * update
"""


def adafactor_step(param, grad, row_var=None, col_var=None, variance=None, *, step,
                   lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                   maximize=False):
    """One Adafactor step of one tensor, in place; torch.optim.Adafactor's
    single-tensor semantics.

    .. code-block:: text

{pseudocode}
    Parameters
    ----------
    param, grad : arrays of one shape and dtype (float32 or float64), C-contiguous
        ``param`` is updated in place; ``grad`` is read.
    row_var, col_var : arrays, for ``param.ndim >= 2``
        The factored second moment, torch's shapes: ``param.shape[:-1] + (1,)``
        and ``param.shape[:-2] + (1, param.shape[-1])``; start at zeros.
    variance : array, for ``param.ndim < 2``
        The second moment, ``param``'s shape; starts at zeros.
    step : int
        The 1-based number of the step being taken.
    lr : float, default 0.01 (>= 0)
        The learning rate: the relative step size is ``min(lr, 1 / sqrt(step))``.
    beta2_decay : float, default -0.8 (<= 0)
        The second moment's weight is ``step ** beta2_decay``.
    eps : (float or None, float), default (None, 1e-3) (each >= 0)
        ``eps1`` floors the second moment (None: the dtype's machine epsilon,
        as torch); ``eps2`` floors the parameter's RMS in ``alpha``.
    d : float, default 1.0 (>= 1)
        The clipping threshold of the update's RMS.
    weight_decay : float, default 0.0 (>= 0)
        Decoupled decay: ``param *= 1 - lr * weight_decay``.
    maximize : bool, default False
        Ascend ``grad`` instead of descending it.

    Notes
    -----
    Reductions run in the arrays' dtype, as torch's CPU kernels do (float32
    sums for float32), in the order of torch's AVX2 kernels. An empty
    ``param`` is left as it is (torch's step divides by its size and raises
    ZeroDivisionError). A call that raises has changed nothing.
    """
    plan = _plan(param, grad, row_var, col_var, variance, step, lr, beta2_decay, eps, d,
                 weight_decay, maximize)
    if plan is None:
        return
    from .kernels import adafactor as kernels
    kind, args = plan
    driver = kernels.FACTORED if kind == "factored" else kernels.VECTOR
    run = driver.serial if param.size < kernels.SERIAL_BELOW else driver.parallel
    run(*args)


adafactor_step.__doc__ = adafactor_step.__doc__.format(pseudocode=PSEUDOCODE)
