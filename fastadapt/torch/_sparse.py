"""Sparse gradients in fastadapt.torch (``nn.Embedding(sparse=True)`` ...).

torch.optim takes a sparse COO gradient in SGD, Adagrad and SparseAdam (which
takes nothing else). fastadapt.torch does the same: the flat-buffer step
leaves a parameter with a sparse gradient out of its runs, and
:func:`apply` then updates only the rows the gradient holds, in place in the
flat parameter and state buffers, with the row kernels of
``fastadapt.kernels.sparse``: one read and write of each present row, nothing
for the others (torch's sparse path, and what large embedding tables need).

What torch refuses with a sparse gradient is refused with its exception type
(``RuntimeError``): every other rule, ``weight_decay != 0``, ``fused=True``,
and a dense gradient given to SparseAdam. Refused as not implemented
(``NotImplementedError``, a ``RuntimeError``): SGD with momentum (torch keeps
a sparse momentum buffer there, which flat dense state cannot mirror),
storage options, complex, 16-bit or CUDA parameters, ``max_grad_norm`` and
``ZeroRedundancyOptimizer``. Everything is checked by :func:`prepare`,
before the step writes anything. GradScaler's unscale (in the kernel) and
skip work as for dense gradients.
"""
import numpy as np
import torch

from ..kernels import cpu
from ..kernels.sparse import DRIVERS

#: torch.optim classes that take sparse gradients, and the one that takes only them.
TAKES_SPARSE = {"SGD", "Adagrad", "SparseAdam"}
#: Rules whose update is non-linear in the gradient: torch coalesces it first.
_COALESCED = {"Adagrad", "SparseAdam"}


class _Rows:
    """One parameter's sparse gradient as the kernels take it: the flat row
    of each entry, and the values as ``(entries, row_size)``."""

    __slots__ = ("j", "rows", "values", "order", "starts")

    def __init__(self, j, rows, values, order=None, starts=None):
        self.j, self.rows, self.values, self.order, self.starts = j, rows, values, order, starts


def prepare(owner, plans):
    """Check this step's sparse gradients (and that SparseAdam has no dense
    one) before anything is written; returns the work for :func:`apply`.

    ``plans`` are the step's ``(group, options, bucket, scan)``; a parameter
    whose gradient is sparse is absent from ``scan``'s ``present``."""
    name = owner.rule.torch_name
    work = []
    for group, options, bucket, scan in plans:
        present = scan[0]
        if owner.rule.torch_sparse_grad and (present is None or any(present)):
            raise RuntimeError("SparseAdam does not support dense gradients, please consider "
                               "Adam instead")
        if present is None:
            continue
        sparse = [j for j, (p, has) in enumerate(zip(bucket.params, present))
                  if not has and p.grad is not None]
        if not sparse:
            continue
        where = f"param group {bucket.group_index}, parameter {bucket.indices[sparse[0]]}"
        _check_options(owner, name, group, options, bucket, where)
        entries = [_rows(bucket, j, name) for j in sparse]
        work.append((group, options, bucket, entries))
    if work and owner.max_grad_norm is not None:
        raise NotImplementedError("max_grad_norm with sparse gradients is not supported "
                                  "(their norm is not in the flat gradient buffer); clip "
                                  "the coalesced values yourself or leave it None")
    return work


def _check_options(owner, name, group, options, bucket, where):
    cls = type(owner).__name__
    if name not in TAKES_SPARSE:
        raise RuntimeError(f"{where} has a sparse gradient: {name} does not support sparse "
                           "gradients (torch.optim neither); SGD, Adagrad and SparseAdam do")
    if not bucket.span.whole:
        raise NotImplementedError(f"{where} has a sparse gradient: {cls} shards dense flat "
                                  "buffers and does not take sparse gradients")
    if group.get("fused"):
        raise RuntimeError(f"{where}: fused=True does not support sparse gradients (as in "
                           "torch.optim)")
    if options.get("weight_decay", 0) != 0:
        raise RuntimeError(f"{where}: the weight_decay option is not compatible with sparse "
                           "gradients (as in torch.optim)")
    if options.get("momentum", 0) != 0:
        raise NotImplementedError(f"{where}: SGD with momentum and sparse gradients is not "
                                  "supported (torch.optim keeps a sparse momentum buffer; "
                                  "fastadapt's state is dense)")
    if (bucket.device.type != "cpu" or bucket.complex or bucket.eight_bit
            or bucket.dtype not in (torch.float32, torch.float64)
            or bucket.state_dtype != bucket.dtype or bucket.k_master is not None
            or owner.stochastic_rounding):
        raise NotImplementedError(
            f"{where} has a sparse gradient: sparse gradients are supported for float32 and "
            f"float64 CPU parameters without storage options (this one: {bucket.device}, "
            f"{bucket.param_dtype}, state {bucket.state_dtype})")


def _rows(bucket, j, name):
    """Parameter ``j``'s sparse gradient, checked, as a :class:`_Rows`."""
    p, grad = bucket.params[j], bucket.params[j].grad
    where = f"param group {bucket.group_index}, parameter {bucket.indices[j]}"
    if grad.layout != torch.sparse_coo:
        raise ValueError(f"{where}: a gradient of layout {grad.layout} is not supported (sparse "
                         "gradients must be torch.sparse_coo)")
    if grad.shape != p.shape or grad.dtype != p.dtype or grad.device != p.device:
        raise ValueError(f"{where}: sparse gradient of shape {tuple(grad.shape)}, {grad.dtype} "
                         f"on {grad.device} for a parameter of shape {tuple(p.shape)}, "
                         f"{p.dtype} on {p.device}")
    if grad.requires_grad:
        grad = grad.detach()
    if name in _COALESCED:
        grad = grad.coalesce()        # torch's own summation of repeated indices
    sparse_dim = grad.sparse_dim()
    row_shape = tuple(p.shape[:sparse_dim])
    width = int(np.prod(p.shape[sparse_dim:], dtype=np.int64))
    indices = grad._indices().numpy()
    values = grad._values().contiguous().numpy().reshape(indices.shape[1], width)
    if sparse_dim == 0:
        rows = np.zeros(indices.shape[1], np.int64)
    else:
        if indices.size and (indices.min() < 0 or np.any(
                indices.max(axis=1) >= np.asarray(row_shape))):
            raise ValueError(f"{where}: sparse gradient indices out of range for shape "
                             f"{tuple(p.shape)}")
        rows = np.ravel_multi_index(tuple(indices), row_shape) if sparse_dim > 1 \
            else indices[0]
    rows = np.ascontiguousarray(rows, np.int64)
    if name in _COALESCED:
        return _Rows(j, rows, values)
    # entries grouped by row, each row's in the gradient's order (torch adds them one by one)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.diff(ordered, prepend=-1, append=-1)).astype(np.int64)
    return _Rows(j, rows, values, order, starts)


def apply(owner, work, grad_scale):
    """Update the rows of every sparse gradient :func:`prepare` checked, and
    count the step of each of those parameters (torch counts a step with an
    empty gradient too)."""
    for group, options, bucket, entries in work:
        rule = owner._group_rule(group)
        bucket.ensure_state(rule.state_for(**options), group)
        sign = (-1.0 if options.get("maximize") else 1.0) / (
            1.0 if grad_scale is None else grad_scale)
        for e in entries:
            j = e.j
            if bucket.steps_np[j] == 0:      # torch creates state at a parameter's first step
                bucket.reset(j, j, group)
            _update(bucket, rule, options, e, int(bucket.steps_np[j]) + 1, sign)
            bucket.steps_np[j] += 1
            if not bucket.published[j]:
                bucket.publish(j)
        bucket.update_uniform()


def _update(bucket, rule, options, e, step, sign):
    o, n = bucket.offsets[e.j], bucket.sizes[e.j]
    width = e.values.shape[1]
    if not len(e.rows) or width == 0:
        return
    shape = (n // width, width)
    param = bucket.k_param[o:o + n].reshape(shape)
    state = {name: bucket.k_state[name][o:o + n].reshape(shape) for name in bucket.k_state}
    scalars = rule.scalars(options, float(step))
    kind = param.dtype.type
    driver = DRIVERS[rule.kernel]
    run = driver.serial if e.values.size < cpu.SERIAL_BELOW else driver.parallel
    if rule.kernel == "sgd":
        run(param, e.rows, e.order, e.starts, e.values, kind(scalars["neg_lr"]), kind(sign))
    elif rule.kernel == "adagrad":
        run(param, state["state_sum"], e.rows, e.values, kind(scalars["neg_clr"]),
            kind(scalars["eps"]), kind(sign))
    else:
        run(param, state["exp_avg"], state["exp_avg_sq"], e.rows, e.values, kind(sign),
            *(kind(scalars[k]) for k in ("one_minus_beta1", "one_minus_beta2", "eps",
                                         "neg_step_size")))
